//! The few places where SQLite and PostgreSQL must differ.

use sqlx::{PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction};
use std::sync::LazyLock;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// SQLite has one writer at a time. Writers of this process queue here, in
/// order, instead of meeting on the database lock, whose busy handler polls
/// with sleeps of up to 100 ms.
static SQLITE_WRITERS: LazyLock<std::sync::Arc<Mutex<()>>> =
    LazyLock::new(|| std::sync::Arc::new(Mutex::new(())));

/// The writer slot for a thread outside the async runtime (the sign-up
/// writer thread).
pub(crate) fn sqlite_writer_slot_blocking() -> OwnedMutexGuard<()> {
    SQLITE_WRITERS.clone().blocking_lock_owned()
}

/// A SQLite write transaction holding this process's writer slot.
pub(crate) struct SqliteWrite {
    tx: Transaction<'static, Sqlite>,
    _slot: OwnedMutexGuard<()>,
}

impl SqliteWrite {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for SqliteWrite {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for SqliteWrite {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

pub(crate) trait Dialect {
    type Db: sqlx::Database;
    type Write;
    /// Claims due messages of one channel for one worker: first those
    /// whose earlier claim lapsed, then queued ones (see [`claim_sql!`]).
    const CLAIM_MESSAGES: [&'static str; 3];
    /// Reads an offer and keeps other processes off it until commit.
    const LOCK_OFFER: &'static str;
    fn lock_offer_sql(&self) -> &'static str {
        Self::LOCK_OFFER
    }
    fn claim_sql(&self) -> [&'static str; 3] {
        Self::CLAIM_MESSAGES
    }
    /// Begins a transaction that will write. SQLite takes the write lock at
    /// once (`BEGIN IMMEDIATE`) so two writers never deadlock on upgrade.
    async fn begin_write(&self) -> Result<Self::Write, sqlx::Error>;
    /// For a write that is one statement, run on the pool without a
    /// transaction of its own: SQLite's writer slot, held until dropped.
    async fn write_slot(&self) -> Option<OwnedMutexGuard<()>>;
}

/// Three statements (lapsed leases, then queued messages of priority 0 and
/// of priority 1: see [`crate::records::NewMessage::priority`]), each claiming
/// in the order of an index, so a claim reads
/// only the rows it takes: one `OR` over both kinds made SQLite (and
/// PostgreSQL) read and sort every due message for each claim, which with a
/// launch-day backlog of 95,000 queued e-mails took ~23 ms on SQLite's
/// writer thread (and ~90 ms on PostgreSQL) at every claim. `$5` is how many
/// are still wanted.
macro_rules! claim_sql {
    ($lock:literal) => {
        [
            claim_sql!("status = 'sending' AND claimed_until < $4", $lock),
            claim_sql!("status = 'queued' AND priority = 0 AND next_attempt_at <= $4", $lock),
            claim_sql!("status = 'queued' AND priority = 1 AND next_attempt_at <= $4", $lock),
        ]
    };
    ($which:literal, $lock:literal) => {
        concat!(
            "UPDATE outbox SET status = 'sending', claimed_by = $1, claimed_until = $2, attempts = attempts + 1 ",
            "WHERE id IN (SELECT id FROM outbox WHERE channel = $3 AND ",
            $which,
            " ORDER BY next_attempt_at, id LIMIT $5 ",
            $lock,
            ") RETURNING id, reference, channel, kind, recipient, subject, body, attempts"
        )
    };
}

impl Dialect for SqlitePool {
    type Db = Sqlite;
    type Write = SqliteWrite;
    const CLAIM_MESSAGES: [&'static str; 3] = claim_sql!("");
    // BEGIN IMMEDIATE already holds the database's one write lock.
    const LOCK_OFFER: &'static str =
        "SELECT status, doses, booked, center_id, response_ms FROM offers WHERE id = $1";
    async fn begin_write(&self) -> Result<SqliteWrite, sqlx::Error> {
        let slot = SQLITE_WRITERS.clone().lock_owned().await;
        let tx = self.begin_with("BEGIN IMMEDIATE").await?;
        Ok(SqliteWrite { tx, _slot: slot })
    }
    async fn write_slot(&self) -> Option<OwnedMutexGuard<()>> {
        Some(SQLITE_WRITERS.clone().lock_owned().await)
    }
}

impl Dialect for PgPool {
    type Db = Postgres;
    type Write = Transaction<'static, Postgres>;
    const CLAIM_MESSAGES: [&'static str; 3] = claim_sql!("FOR UPDATE SKIP LOCKED");
    const LOCK_OFFER: &'static str =
        "SELECT status, doses, booked, center_id, response_ms FROM offers WHERE id = $1 FOR UPDATE";
    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.begin().await
    }
    async fn write_slot(&self) -> Option<OwnedMutexGuard<()>> {
        None
    }
}
