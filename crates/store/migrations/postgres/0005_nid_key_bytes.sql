-- The national ID's key as its 16 bytes instead of 32 hex digits (see
-- BENCHMARKS.md, issue 3). Every sign-up inserts this key at a random place
-- in its unique index; at half the length, a batch of sign-ups dirties
-- fewer of the index's pages. The same 128 bits: lookups with the keys made
-- now find the people stored before. A key that is not hex (none was ever
-- made) keeps its text's bytes.
-- Kept in step with ../sqlite/0005_nid_key_bytes.sql.

ALTER TABLE registrants ALTER COLUMN nid_hash TYPE bytea
    USING CASE WHEN nid_hash ~ '^([0-9a-fA-F]{2})*$' THEN decode(nid_hash, 'hex')
               ELSE convert_to(nid_hash, 'UTF8') END;
