-- Fewer index entries written by each sign-up (see BENCHMARKS.md, issue 3).
-- Kept in step with ../sqlite/0003_leaner_sign_up_writes.sql (there, tokens
-- also move to a WITHOUT ROWID table; PostgreSQL has no such distinction).

-- The audit trail is read newest first by id; nothing looks it up by time.
DROP INDEX audit_log_at;
-- registrants_queue (status, band, confirmed_at, id) serves every lookup by status.
DROP INDEX registrants_status;
-- Only invitation messages have an invitation; the others need no entry.
DROP INDEX outbox_invitation;
CREATE INDEX outbox_invitation ON outbox (invitation_id) WHERE invitation_id IS NOT NULL;
