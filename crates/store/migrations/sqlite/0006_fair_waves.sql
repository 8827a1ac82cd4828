-- The second-generation invitation engine (issue 23): a centre's own quiet
-- hours (NULL: STANDBY_QUIET_HOURS), how often a person was invited (the
-- order within an age band: the least invited first), when their last
-- counted silence was (consecutive silences are forgotten after 14 days),
-- whether an expired invitation counted against its person, and outbox
-- priorities (booking confirmations and invitations before sign-up
-- confirmations), and the short code an invitation SMS carries, which a
-- reply from the person's phone quotes to accept. Kept in step with the other dialect's 0006_fair_waves.sql.

ALTER TABLE centers ADD COLUMN quiet_hours TEXT;
ALTER TABLE registrants ADD COLUMN invited_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE registrants ADD COLUMN last_silence_at BIGINT;
ALTER TABLE invitations ADD COLUMN strike BIGINT;
ALTER TABLE invitations ADD COLUMN short_code TEXT;
ALTER TABLE outbox ADD COLUMN priority BIGINT NOT NULL DEFAULT 1;

DROP INDEX registrants_queue;
CREATE INDEX registrants_queue ON registrants (status, band DESC, invited_count, confirmed_at, id);
CREATE INDEX invitations_registrant ON invitations (registrant_id, created_at);
DROP INDEX outbox_due;
CREATE INDEX outbox_due ON outbox (status, channel, priority, next_attempt_at, id);
CREATE INDEX invitations_short_code ON invitations (short_code);
