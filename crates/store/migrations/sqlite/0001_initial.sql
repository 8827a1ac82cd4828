-- Standby's first schema. Timestamps are milliseconds since the Unix epoch.
-- Kept in step with ../postgres/0001_initial.sql: same tables, same columns.

CREATE TABLE centers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    postal_code TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE vaccines (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    min_age BIGINT NOT NULL,
    max_age BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE stock (
    center_id BIGINT NOT NULL REFERENCES centers(id),
    vaccine TEXT NOT NULL REFERENCES vaccines(code),
    on_hand BIGINT NOT NULL DEFAULT 0,
    reserved BIGINT NOT NULL DEFAULT 0,
    administered BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (center_id, vaccine),
    CHECK (on_hand >= 0 AND reserved >= 0 AND reserved <= on_hand AND administered >= 0)
);

CREATE TABLE stock_ledger (
    id INTEGER PRIMARY KEY,
    center_id BIGINT NOT NULL REFERENCES centers(id),
    vaccine TEXT NOT NULL REFERENCES vaccines(code),
    kind TEXT NOT NULL,
    doses BIGINT NOT NULL,
    actor TEXT NOT NULL,
    at BIGINT NOT NULL
);

CREATE TABLE staff_users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    center_id BIGINT REFERENCES centers(id),
    created_at BIGINT NOT NULL
);

CREATE TABLE registrants (
    id INTEGER PRIMARY KEY,
    nid_hash TEXT UNIQUE,
    country TEXT NOT NULL,
    birth_ymd BIGINT,
    title TEXT,
    first_name TEXT,
    last_name TEXT,
    email TEXT,
    phone TEXT,
    language TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    confirmed_at BIGINT,
    status_changed_at BIGINT NOT NULL,
    ignored_invitations BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX registrants_status ON registrants (status, confirmed_at);

CREATE TABLE registrant_centers (
    registrant_id BIGINT NOT NULL REFERENCES registrants(id) ON DELETE CASCADE,
    center_id BIGINT NOT NULL,
    PRIMARY KEY (registrant_id, center_id)
);

CREATE TABLE registrant_availability (
    registrant_id BIGINT NOT NULL REFERENCES registrants(id) ON DELETE CASCADE,
    day BIGINT NOT NULL,
    from_min BIGINT NOT NULL,
    to_min BIGINT NOT NULL
);
CREATE INDEX registrant_availability_registrant ON registrant_availability (registrant_id);

-- Bearer secrets of every kind (confirmation, self-service, staff sessions):
-- only their SHA-256 is kept.
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    subject_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    csrf TEXT
);
CREATE INDEX tokens_subject ON tokens (purpose, subject_id);

-- Every message to a person goes through here. The body is dropped once the
-- message has been handed over.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    reference TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    registrant_id BIGINT,
    recipient TEXT,
    subject TEXT,
    body TEXT,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_by TEXT,
    claimed_until BIGINT,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (status, channel, next_attempt_at);
CREATE INDEX outbox_registrant ON outbox (registrant_id);

-- Who did what, when. Never personal data in detail.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
