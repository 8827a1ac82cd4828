-- Fewer B-trees touched by each sign-up (see BENCHMARKS.md, issue 3).
-- Kept in step with ../postgres/0003_leaner_sign_up_writes.sql.

-- The audit trail is read newest first by id; nothing looks it up by time.
DROP INDEX audit_log_at;
-- registrants_queue (status, band, confirmed_at, id) serves every lookup by status.
DROP INDEX registrants_status;
-- Only invitation messages have an invitation; the others need no entry.
DROP INDEX outbox_invitation;
CREATE INDEX outbox_invitation ON outbox (invitation_id) WHERE invitation_id IS NOT NULL;

-- Tokens are found by their hash only: keep the rows in the hash's B-tree
-- instead of a rowid table plus a separate index on the hash.
CREATE TABLE tokens_by_hash (
    hash TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    subject_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    csrf TEXT
) WITHOUT ROWID;
INSERT INTO tokens_by_hash (hash, purpose, subject_id, created_at, expires_at, csrf)
    SELECT hash, purpose, subject_id, created_at, expires_at, csrf FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_by_hash RENAME TO tokens;
CREATE INDEX tokens_subject ON tokens (purpose, subject_id);
