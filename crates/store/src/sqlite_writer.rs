//! SQLite's hot writer: one OS thread that owns one connection and runs each
//! batch of sign-ups as one transaction, start to commit, without returning
//! to the async runtime between statements; the dispatcher's claims and
//! hand-over records run there too (`SqliteWriter::call`).
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
use rusqlite::{Statement, ToSql, TransactionBehavior};
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

const NAMES: [&str; 16] = [
    "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15",
    "$16",
];

/// Binds `values` to `$1…$N` by number. SQLite numbers named parameters in
/// the order they first appear, so in the shared SQL `$3` written before `$1`
/// would otherwise take the first value.
fn bind(stmt: &mut Statement<'_>, values: &[&dyn ToSql]) -> rusqlite::Result<()> {
    for (name, value) in NAMES.iter().zip(values) {
        let index = stmt
            .parameter_index(name)?
            .ok_or_else(|| rusqlite::Error::InvalidParameterName((*name).to_string()))?;
        stmt.raw_bind_parameter(index, value)?;
    }
    Ok(())
}

fn execute(stmt: &mut Statement<'_>, values: &[&dyn ToSql]) -> rusqlite::Result<usize> {
    bind(stmt, values)?;
    stmt.raw_execute()
}

/// The first row's answer, if any.
fn query_one<T>(
    stmt: &mut Statement<'_>,
    values: &[&dyn ToSql],
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    bind(stmt, values)?;
    let mut rows = stmt.raw_query();
    match rows.next()? {
        Some(row) => f(row).map(Some),
        None => Ok(None),
    }
}

type Call = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

/// Work for the writer thread: a closure run on its connection while it
/// holds the writer slot.
struct Job(Call);

/// Handle to the writer thread; the thread ends when the last handle is
/// dropped.
pub(crate) struct SqliteWriter {
    jobs: mpsc::Sender<Job>,
}

impl SqliteWriter {
    pub(crate) fn open(path: &Path) -> Result<Self, String> {
        let conn = connect(path).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-signups".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| format!("cannot start the sign-up writer: {e}"))?;
        Ok(SqliteWriter { jobs: tx })
    }

    pub(crate) async fn insert(
        &self,
        batch: Vec<NewRegistrant>,
        now: i64,
    ) -> Result<Vec<InsertOutcome>, String> {
        self.call(move |conn| {
            let started = std::time::Instant::now();
            let r = insert(conn, &batch, now);
            tracing::debug!(
                size = batch.len(),
                duration_us = started.elapsed().as_micros() as u64,
                "sign-up batch"
            );
            r
        })
        .await
    }

    /// Runs `f` on the writer thread's connection, after whatever was sent
    /// before it. For small hot writes that would otherwise hold the writer
    /// slot across several round trips to a pool connection.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R, String>
    where
        R: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job(Box::new(move |conn| {
            let _ = reply.send(f(conn).map_err(|e| e.to_string()));
        }));
        self.jobs
            .send(job)
            .map_err(|_| "SQLite writer stopped".to_string())?;
        answer
            .await
            .map_err(|_| "SQLite writer dropped the work".to_string())?
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
    for Job(call) in jobs {
        let started = std::time::Instant::now();
        let _slot = crate::dialect::sqlite_writer_slot_blocking();
        let waited = started.elapsed();
        if waited.as_millis() >= 1 {
            tracing::debug!(
                duration_us = waited.as_micros() as u64,
                "SQLite writer waited for the writer slot"
            );
        }
        // A panic in one piece of work must not stop every later sign-up:
        // its caller gets an error (its reply is dropped), the thread goes on.
        let conn_ref = &mut conn;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || call(conn_ref))).is_err() {
            tracing::error!(
                "SQLite writer: a piece of work panicked; its caller was told it failed"
            );
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }
}

/// Claims due messages of one channel (see `Store::claim_messages`).
pub(crate) fn claim_messages(
    conn: &mut rusqlite::Connection,
    sql: &str,
    channel: &str,
    worker: &str,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> rusqlite::Result<Vec<crate::records::OutboxMessage>> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(
        &mut stmt,
        &[&worker, &(now + lease_ms), &channel, &now, &limit],
    )?;
    let rows = stmt.raw_query().mapped(|row| {
        Ok(crate::records::OutboxMessage {
            id: row.get("id")?,
            reference: row.get("reference")?,
            channel: row.get("channel")?,
            kind: row.get("kind")?,
            recipient: row
                .get::<_, Option<String>>("recipient")?
                .unwrap_or_default(),
            subject: row.get("subject")?,
            body: row.get::<_, Option<String>>("body")?.unwrap_or_default(),
            attempts: row.get("attempts")?,
        })
    });
    let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    out.sort_by_key(|m| m.id);
    Ok(out)
}

/// Records that a message was handed over (see `Store::message_sent`).
pub(crate) fn message_sent(
    conn: &mut rusqlite::Connection,
    id: i64,
    worker: &str,
    now: i64,
) -> rusqlite::Result<()> {
    use crate::macros::{AUDIT, MESSAGE_SENT, START_INVITATION};
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let invitation: Option<Option<i64>> = query_one(
        &mut *tx.prepare_cached(MESSAGE_SENT)?,
        &[&id, &worker, &now],
        |row| row.get(0),
    )?;
    if let Some(invitation) = invitation {
        let mut audit = tx.prepare_cached(AUDIT)?;
        execute(
            &mut audit,
            &[
                &now,
                &"dispatcher",
                &"message.sent",
                &"message",
                &id.to_string(),
                &"{}",
            ],
        )?;
        if let Some(inv) = invitation {
            // The first message handed over starts the response window.
            let started = execute(&mut *tx.prepare_cached(START_INVITATION)?, &[&inv, &now])?;
            if started == 1 {
                execute(
                    &mut audit,
                    &[
                        &now,
                        &"dispatcher",
                        &"invitation.handed_over",
                        &"invitation",
                        &inv.to_string(),
                        &"{}",
                    ],
                )?;
            }
        }
    }
    tx.commit()
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
            let id: Option<i64> = query_one(
                &mut registrant,
                &[
                    &r.nid_hash,
                    &r.country,
                    &r.birth_ymd,
                    &r.title,
                    &r.first_name,
                    &r.last_name,
                    &r.email,
                    &r.phone,
                    &r.language,
                    &registrant_status(r),
                    &now,
                    &r.confirmed_at,
                    &band(today, r.birth_ymd),
                    &i64::from(r.centers.is_empty()),
                    &i64::from(r.availability.is_empty()),
                ],
                |row| row.get(0),
            )?;
            let Some(id) = id else {
                outcomes.push(InsertOutcome::Duplicate);
                continue;
            };
            for c in &r.centers {
                execute(&mut center, &[&id, &c])?;
            }
            for (day, from, to) in &r.availability {
                execute(&mut slot, &[&id, &day, &from, &to])?;
            }
            execute(
                &mut token,
                &[
                    &r.confirm_hash,
                    &"confirm",
                    &id,
                    &now,
                    &r.confirm_expires_at,
                ],
            )?;
            execute(
                &mut token,
                &[&r.me_hash, &"me", &id, &now, &r.me_expires_at],
            )?;
            if let Some(m) = &r.message {
                execute(
                    &mut message,
                    &[
                        &m.reference,
                        &m.channel,
                        &m.kind,
                        &id,
                        &m.recipient,
                        &m.subject,
                        &m.body,
                        &now,
                    ],
                )?;
            }
            execute(&mut audit, &[&now, &id.to_string(), &created_detail(r)])?;
            outcomes.push(InsertOutcome::Created(id));
        }
    }
    let commit = std::time::Instant::now();
    tx.commit()?;
    tracing::debug!(
        commit_us = commit.elapsed().as_micros() as u64,
        "sign-up batch commit"
    );
    Ok(outcomes)
}
