-- Staff sign-in throttling, offers, invitations and appointments.
-- Kept in step with ../postgres/0002_staff_offers_invitations.sql.

-- Fixed-window counters shared by every process (log-in throttling).
CREATE TABLE throttle (
    key TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    hits BIGINT NOT NULL
);

CREATE TABLE offers (
    id INTEGER PRIMARY KEY,
    center_id BIGINT NOT NULL REFERENCES centers(id),
    vaccine TEXT NOT NULL REFERENCES vaccines(code),
    doses BIGINT NOT NULL CHECK (doses > 0),
    booked BIGINT NOT NULL DEFAULT 0,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    response_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    closed_at BIGINT,
    CHECK (booked >= 0 AND booked <= doses)
);
CREATE INDEX offers_status ON offers (status);

CREATE TABLE invitations (
    id INTEGER PRIMARY KEY,
    offer_id BIGINT NOT NULL REFERENCES offers(id),
    registrant_id BIGINT NOT NULL REFERENCES registrants(id),
    token_hash TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    expires_at BIGINT,
    answered_at BIGINT
);
CREATE INDEX invitations_offer ON invitations (offer_id, status);
CREATE INDEX invitations_expiry ON invitations (status, expires_at);
CREATE UNIQUE INDEX invitations_once_per_offer ON invitations (offer_id, registrant_id);
-- At most one open invitation per person, across all centres and offers.
CREATE UNIQUE INDEX invitations_one_open ON invitations (registrant_id) WHERE status IN ('queued', 'sent');

CREATE TABLE appointments (
    id INTEGER PRIMARY KEY,
    offer_id BIGINT NOT NULL REFERENCES offers(id),
    invitation_id BIGINT NOT NULL UNIQUE REFERENCES invitations(id),
    registrant_id BIGINT NOT NULL REFERENCES registrants(id),
    center_id BIGINT NOT NULL REFERENCES centers(id),
    vaccine TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX appointments_center_day ON appointments (center_id, starts_at);

ALTER TABLE outbox ADD COLUMN invitation_id BIGINT;
CREATE INDEX outbox_invitation ON outbox (invitation_id);

-- Delivery receipts from the SMS gateway: delivered or failed, and when.
ALTER TABLE outbox ADD COLUMN delivery TEXT;
ALTER TABLE outbox ADD COLUMN delivery_at BIGINT;

-- The invitation queue in index order: ten-year age band (oldest first, kept
-- current by a daily refresh), then confirmation time. any_center / any_time
-- spare the lookups for people who accept every centre or any time.
ALTER TABLE registrants ADD COLUMN band BIGINT NOT NULL DEFAULT 0;
ALTER TABLE registrants ADD COLUMN any_center BIGINT NOT NULL DEFAULT 1;
ALTER TABLE registrants ADD COLUMN any_time BIGINT NOT NULL DEFAULT 1;
CREATE INDEX registrants_queue ON registrants (status, band DESC, confirmed_at, id);
