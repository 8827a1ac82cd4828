//! SQLite's sign-up writer: one OS thread that owns one connection and runs
//! each batch of sign-ups as one transaction, start to commit, without
//! returning to the async runtime between statements.
//!
//! Why: through sqlx every statement is a round trip between the runtime and
//! the connection's worker thread, and under a launch-day load each of those
//! trips waits behind thousands of HTTP tasks; a batch of a dozen statements
//! spent most of its time queued, not writing. Here a batch costs one trip
//! there and one back. The statements are the same SQL the PostgreSQL path
//! runs (`REGISTRANT_COLUMNS` and the rest below), one row at a time with
//! prepared statements instead of multi-row statements.
//!
//! The thread takes this process's SQLite writer slot (the same one every
//! other write transaction takes, see `dialect`), so it never meets another
//! writer of this process on the database lock; writers of other processes
//! are waited for by SQLite's busy timeout.

use crate::records::{InsertOutcome, NewRegistrant};
use crate::sql::today_ymd;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Columns of a new registrant, in the order both paths bind them.
pub(crate) const REGISTRANT_COLUMNS: &str = "nid_hash, country, birth_ymd, title, first_name, last_name, email, phone, language, status, created_at, status_changed_at, confirmed_at, band, any_center, any_time";
pub(crate) const CENTER_COLUMNS: &str = "registrant_id, center_id";
pub(crate) const SLOT_COLUMNS: &str = "registrant_id, day, from_min, to_min";
pub(crate) const TOKEN_COLUMNS: &str = "hash, purpose, subject_id, created_at, expires_at";
pub(crate) const OUTBOX_COLUMNS: &str = "reference, channel, kind, registrant_id, recipient, subject, body, status, next_attempt_at, created_at";
pub(crate) const AUDIT_COLUMNS: &str = "at, actor, action, subject_type, subject_id, detail";

/// The derived values both paths store with a new registrant.
pub(crate) fn registrant_status(r: &NewRegistrant) -> &'static str {
    if r.confirmed_at.is_some() {
        "waiting"
    } else {
        "unconfirmed"
    }
}

/// The ten-year age band the queue is ordered by.
pub(crate) fn band(today_ymd: i64, birth_ymd: i64) -> i64 {
    ((today_ymd - birth_ymd) / 10_000).max(0) / 10
}

/// The audit detail of a new registrant: never personal data.
pub(crate) fn created_detail(r: &NewRegistrant) -> String {
    format!("{{\"country\":\"{}\"}}", r.country)
}

type Reply = oneshot::Sender<Result<Vec<InsertOutcome>, String>>;

struct Job {
    batch: Vec<NewRegistrant>,
    now: i64,
    reply: Reply,
}

/// Handle to the writer thread; the thread ends when the last handle is
/// dropped.
pub(crate) struct SqliteWriter {
    jobs: std::sync::Mutex<mpsc::Sender<Job>>,
}

impl SqliteWriter {
    pub(crate) fn open(path: &Path) -> Result<Self, String> {
        let conn = connect(path).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-signups".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| format!("cannot start the sign-up writer: {e}"))?;
        Ok(SqliteWriter {
            jobs: std::sync::Mutex::new(tx),
        })
    }

    pub(crate) async fn insert(
        &self,
        batch: Vec<NewRegistrant>,
        now: i64,
    ) -> Result<Vec<InsertOutcome>, String> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .lock()
            .map_err(|_| "sign-up writer poisoned".to_string())?
            .send(Job { batch, now, reply })
            .map_err(|_| "sign-up writer stopped".to_string())?;
        answer
            .await
            .map_err(|_| "sign-up writer dropped the batch".to_string())?
    }
}

/// A connection with the same settings as the pool's (see `SqlStore::connect`).
fn connect(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", "full")?;
    conn.pragma_update(None, "foreign_keys", "on")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "cache_size", -16384)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

fn run(mut conn: rusqlite::Connection, jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        let started = std::time::Instant::now();
        let result = {
            let _slot = crate::dialect::sqlite_writer_slot_blocking();
            let slot_us = started.elapsed().as_micros() as u64;
            let r = insert(&mut conn, &job.batch, job.now).map_err(|e| e.to_string());
            tracing::debug!(
                size = job.batch.len(),
                slot_us,
                total_us = started.elapsed().as_micros() as u64,
                "sign-up batch"
            );
            r
        };
        let _ = job.reply.send(result);
    }
}

/// One transaction for the batch. A national ID already stored, or earlier
/// in the batch, creates nothing.
fn insert(
    conn: &mut rusqlite::Connection,
    batch: &[NewRegistrant],
    now: i64,
) -> rusqlite::Result<Vec<InsertOutcome>> {
    let today = today_ymd(now);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut registrant = tx.prepare_cached(&format!(
            "INSERT INTO registrants ({REGISTRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15) \
             ON CONFLICT (nid_hash) DO NOTHING RETURNING id"
        ))?;
        let mut center = tx.prepare_cached(&format!(
            "INSERT INTO registrant_centers ({CENTER_COLUMNS}) VALUES ($1, $2)"
        ))?;
        let mut slot = tx.prepare_cached(&format!(
            "INSERT INTO registrant_availability ({SLOT_COLUMNS}) VALUES ($1, $2, $3, $4)"
        ))?;
        let mut token = tx.prepare_cached(&format!(
            "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
        ))?;
        let mut message = tx.prepare_cached(&format!(
            "INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $8)"
        ))?;
        let mut audit = tx.prepare_cached(&format!(
            "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES ($1, 'public', 'registrant.created', 'registrant', $2, $3)"
        ))?;
        for r in batch {
            let id: Option<i64> = registrant
                .query_row(
                    params![
                        r.nid_hash,
                        r.country,
                        r.birth_ymd,
                        r.title,
                        r.first_name,
                        r.last_name,
                        r.email,
                        r.phone,
                        r.language,
                        registrant_status(r),
                        now,
                        r.confirmed_at,
                        band(today, r.birth_ymd),
                        i64::from(r.centers.is_empty()),
                        i64::from(r.availability.is_empty()),
                    ],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(id) = id else {
                outcomes.push(InsertOutcome::Duplicate);
                continue;
            };
            for c in &r.centers {
                center.execute(params![id, c])?;
            }
            for (day, from, to) in &r.availability {
                slot.execute(params![id, day, from, to])?;
            }
            token.execute(params![
                r.confirm_hash,
                "confirm",
                id,
                now,
                r.confirm_expires_at
            ])?;
            token.execute(params![r.me_hash, "me", id, now, r.me_expires_at])?;
            if let Some(m) = &r.message {
                message.execute(params![
                    m.reference,
                    m.channel,
                    m.kind,
                    id,
                    m.recipient,
                    m.subject,
                    m.body,
                    now
                ])?;
            }
            audit.execute(params![now, id.to_string(), created_detail(r)])?;
            outcomes.push(InsertOutcome::Created(id));
        }
    }
    tx.commit()?;
    Ok(outcomes)
}
