//! The few places where SQLite and PostgreSQL must differ.

use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

pub(crate) trait Dialect {
    type Db: sqlx::Database;
    /// Claims due messages of one channel for one worker.
    const CLAIM_MESSAGES: &'static str;
    /// Reads an offer and keeps other processes off it until commit.
    const LOCK_OFFER: &'static str;
    fn lock_offer_sql(&self) -> &'static str {
        Self::LOCK_OFFER
    }
    fn claim_sql(&self) -> &'static str {
        Self::CLAIM_MESSAGES
    }
    /// Begins a transaction that will write. SQLite takes the write lock at
    /// once (`BEGIN IMMEDIATE`) so two writers never deadlock on upgrade.
    async fn begin_write(&self) -> Result<Transaction<'static, Self::Db>, sqlx::Error>;
}

macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE outbox SET status = 'sending', claimed_by = $1, claimed_until = $2, attempts = attempts + 1 ",
            "WHERE id IN (SELECT id FROM outbox WHERE channel = $3 AND ",
            "((status = 'queued' AND next_attempt_at <= $4) OR (status = 'sending' AND claimed_until < $4)) ",
            "ORDER BY next_attempt_at, id LIMIT $5 ",
            $lock,
            ") RETURNING id, reference, channel, kind, recipient, subject, body, attempts"
        )
    };
}

impl Dialect for SqlitePool {
    type Db = Sqlite;
    const CLAIM_MESSAGES: &'static str = claim_sql!("");
    // BEGIN IMMEDIATE already holds the database's one write lock.
    const LOCK_OFFER: &'static str =
        "SELECT status, doses, booked, center_id, response_ms FROM offers WHERE id = $1";
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl Dialect for PgPool {
    type Db = Postgres;
    const CLAIM_MESSAGES: &'static str = claim_sql!("FOR UPDATE SKIP LOCKED");
    const LOCK_OFFER: &'static str =
        "SELECT status, doses, booked, center_id, response_ms FROM offers WHERE id = $1 FOR UPDATE";
    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.begin().await
    }
}
