-- Keys of 128 bits instead of 256 (see BENCHMARKS.md, issue 3): the national
-- ID's keyed hash and the tokens' hashes are now cut to their first 32 hex
-- digits (a token's 12-digit time prefix stays in front). Every sign-up
-- inserts three such keys, the national ID's at a random place in its index;
-- half as long, that index has half the pages for each batch to rewrite.
-- A key stored before is the whole digest; cutting it gives exactly the key
-- made now from the same ID or token, so links already sent keep working.
-- Kept in step with ../postgres/0004_shorter_keys.sql.

UPDATE registrants SET nid_hash = substr(nid_hash, 1, 32)
    WHERE length(nid_hash) = 64;
UPDATE tokens SET hash = substr(hash, 1, length(hash) - 32)
    WHERE length(hash) IN (64, 76);
UPDATE invitations SET token_hash = substr(token_hash, 1, length(token_hash) - 32)
    WHERE length(token_hash) IN (64, 76);
