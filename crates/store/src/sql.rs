//! The one implementation of [`Store`], over either pool.

use crate::dialect::Dialect;
use crate::records::*;
use crate::sqlite_writer::{
    AUDIT_COLUMNS, CENTER_COLUMNS, OUTBOX_COLUMNS, REGISTRANT_COLUMNS, SLOT_COLUMNS, TOKEN_COLUMNS,
    band, created_detail, registrant_status,
};
use crate::{Backend, Result, Store, StoreError};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// Standby's store over SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    pub(crate) db: Db,
    /// SQLite on a file: the thread that commits sign-up batches.
    sqlite_writer: Option<std::sync::Arc<crate::sqlite_writer::SqliteWriter>>,
    /// SQLite on a file: the low-priority thread that runs the checkpoints.
    checkpointer: Option<std::sync::Arc<crate::sqlite_writer::Checkpointer>>,
    /// SQLite: a log of this many frames is started over (`maintenance`).
    wal_restart_frames: i64,
    /// SQLite on a file: where it is.
    sqlite_path: Option<std::path::PathBuf>,
    /// SQLite: personal data was erased since the last upkeep, whose
    /// checkpoint then empties the write-ahead log (old page images).
    erased: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// SQLite: the log's length laid out at start, laid out again after it
    /// was emptied.
    laid_out: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// When `maintenance` last looked for day-old throttle windows (ms).
    throttle_swept: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// SQLite: the writer's sign-ups and batches at the last upkeep, and when.
    last_upkeep: std::sync::Arc<std::sync::Mutex<Option<(u64, u64, std::time::Instant)>>>,
}

/// Throttle windows are dropped a day after they end: looking for them
/// once a minute is enough, however often the upkeep runs for the log.
const THROTTLE_SWEEP_EVERY_MS: i64 = 60_000;

const SELECT_REGISTRANT: &str = "SELECT id, status, language, title, first_name, last_name, email, phone, created_at, confirmed_at FROM registrants WHERE id = $1";

impl SqlStore {
    /// SQLite: start the write-ahead log over once it holds `frames`
    /// pages (default 262,144, 1 GiB), even under a steady stream of
    /// writes. Smaller only to watch it happen in tests.
    pub fn with_wal_restart_frames(mut self, frames: i64) -> Self {
        self.wal_restart_frames = frames.max(1);
        self
    }

    /// Whether this round of upkeep leaves the log to a quieter time: the
    /// writer's sign-ups since the last round, over the time since, and the
    /// log's length decide (`defer_checkpoint`).
    fn surge_defers_checkpoint(&self) -> bool {
        let Some(writer) = &self.sqlite_writer else {
            return false;
        };
        let load = writer.load();
        let (committed, batches, frames, now) = (
            load.committed(),
            load.batches(),
            load.log_frames(),
            std::time::Instant::now(),
        );
        let mut last = self.last_upkeep.lock().unwrap_or_else(|e| e.into_inner());
        let defer = last.is_some_and(|(signups_then, batches_then, at)| {
            defer_checkpoint(
                Since {
                    signups: committed.saturating_sub(signups_then),
                    batches: batches.saturating_sub(batches_then),
                    elapsed: now.duration_since(at),
                },
                frames,
                self.wal_restart_frames,
            )
        });
        *last = Some((committed, batches, now));
        if defer {
            tracing::debug!(frames, "checkpoint deferred: a surge of sign-ups");
        }
        defer
    }

    pub async fn connect(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // Durable: every acknowledged commit is on disk. Throughput
                // comes from group commit, never from weaker syncing.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
                // Checkpoints run from a background task (`maintenance`), not
                // in the commit path of a sign-up batch.
                .pragma("wal_autocheckpoint", "0")
                // Erased personal data (a withdrawal, the retention purge,
                // an erased message) is overwritten with zeros instead of
                // staying readable in freed space of the file.
                .pragma("secure_delete", "on")
                .pragma("cache_size", "-16384")
                .pragma("temp_store", "memory");
            let pool = SqlitePoolOptions::new()
                // A local file does not go stale: no ping before each use.
                .test_before_acquire(false)
                .max_connections(8)
                .min_connections(1)
                .connect_with(opts)
                .await?;
            let (sqlite_writer, checkpointer) = match sqlite_file(url) {
                Some(path) => (
                    Some(std::sync::Arc::new(
                        crate::sqlite_writer::SqliteWriter::open(&path)
                            .map_err(|e| StoreError::Writer(e.to_string()))?,
                    )),
                    Some(std::sync::Arc::new(
                        crate::sqlite_writer::Checkpointer::open(&path)
                            .map_err(|e| StoreError::Writer(e.to_string()))?,
                    )),
                ),
                None => (None, None),
            };
            Ok(Self {
                db: Db::Sqlite(pool),
                sqlite_writer,
                checkpointer,
                wal_restart_frames: WAL_RESTART_FRAMES,
                sqlite_path: sqlite_file(url),
                erased: Default::default(),
                laid_out: Default::default(),
                throttle_swept: Default::default(),
                last_upkeep: Default::default(),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            // Short OLTP queries only: JIT compilation costs more than it saves.
            let opts = PgConnectOptions::from_str(url)?.options([("jit", "off")]);
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Ok(Self {
                db: Db::Pg(pool),
                sqlite_writer: None,
                checkpointer: None,
                wal_restart_frames: WAL_RESTART_FRAMES,
                sqlite_path: None,
                erased: Default::default(),
                laid_out: Default::default(),
                throttle_swept: Default::default(),
                last_upkeep: Default::default(),
            })
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// Personal data was erased: the next upkeep empties SQLite's log.
    fn note_erasure(&self) {
        if self.checkpointer.is_some() {
            self.erased
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    pub async fn close(&self) {
        on_db!(self, |p| p.close().await)
    }
}

/// A time in an export: RFC 3339 in UTC, or null.
fn export_time(ms: Option<i64>) -> serde_json::Value {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| serde_json::Value::String(t.to_string()))
        .unwrap_or(serde_json::Value::Null)
}

/// A national ID's key as read back from `registrants.nid_hash` (16 bytes).
fn nid_key(bytes: Vec<u8>) -> Result<NidKey, sqlx::Error> {
    NidKey::try_from(&bytes[..]).map_err(|_| {
        sqlx::Error::Decode(
            format!("registrants.nid_hash holds {} bytes, not 16", bytes.len()).into(),
        )
    })
}

fn registrant_from_row<R: Row>(row: &R) -> Result<RegistrantRecord>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(RegistrantRecord {
        id: row.try_get("id")?,
        status: row.try_get("status")?,
        language: row.try_get("language")?,
        title: row.try_get("title")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        email: row.try_get("email")?,
        phone: row.try_get("phone")?,
        centers: Vec::new(),
        availability: Vec::new(),
        created_at: row.try_get("created_at")?,
        confirmed_at: row.try_get("confirmed_at")?,
    })
}

/// Loads one registrant with centres and availability, on any executor.
macro_rules! load_registrant {
    ($conn:expr, $id:expr) => {{
        let row = sqlx::query(SELECT_REGISTRANT).bind($id).fetch_optional(&mut *$conn).await?;
        match row {
            None => None,
            Some(row) => {
                let mut r = registrant_from_row(&row)?;
                r.centers = sqlx::query_scalar("SELECT center_id FROM registrant_centers WHERE registrant_id = $1 ORDER BY center_id")
                    .bind($id)
                    .fetch_all(&mut *$conn)
                    .await?;
                let slots = sqlx::query("SELECT day, from_min, to_min FROM registrant_availability WHERE registrant_id = $1 ORDER BY day, from_min")
                    .bind($id)
                    .fetch_all(&mut *$conn)
                    .await?;
                r.availability = slots
                    .iter()
                    .map(|s| Ok((s.try_get(0)?, s.try_get(1)?, s.try_get(2)?)))
                    .collect::<Result<Vec<_>, sqlx::Error>>()?;
                Some(r)
            }
        }
    }};
}

macro_rules! replace_centers {
    ($tx:expr, $id:expr, $centers:expr) => {
        sqlx::query("DELETE FROM registrant_centers WHERE registrant_id = $1")
            .bind($id)
            .execute(&mut *$tx)
            .await?;
        for c in $centers {
            sqlx::query(
                "INSERT INTO registrant_centers (registrant_id, center_id) VALUES ($1, $2)",
            )
            .bind($id)
            .bind(*c)
            .execute(&mut *$tx)
            .await?;
        }
    };
}

macro_rules! replace_availability {
    ($tx:expr, $id:expr, $slots:expr) => {
        sqlx::query("DELETE FROM registrant_availability WHERE registrant_id = $1").bind($id).execute(&mut *$tx).await?;
        sqlx::query("UPDATE registrants SET any_time = $2 WHERE id = $1").bind($id).bind(i64::from($slots.is_empty())).execute(&mut *$tx).await?;
        for (d, f, t) in $slots {
            sqlx::query("INSERT INTO registrant_availability (registrant_id, day, from_min, to_min) VALUES ($1, $2, $3, $4)")
                .bind($id)
                .bind(*d)
                .bind(*f)
                .bind(*t)
                .execute(&mut *$tx)
                .await?;
        }
    };
}

/// No message of an invitation reached the person (none waiting to leave,
/// none handed over without a failed delivery): the invitation becomes
/// undeliverable and the person goes back to the list with no penalty.
macro_rules! undeliverable_if_unreached {
    ($tx:expr, $inv:expr, $actor:expr, $now:expr) => {
        // Lock the invitation first: two channels failing at once must not each
        // see the other still under way and both leave it queued.
        sqlx::query("UPDATE invitations SET status = status WHERE id = $1").bind($inv).execute(&mut *$tx).await?;
        let reached: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE invitation_id = $1 AND (status IN ('queued', 'sending') \
             OR (status = 'sent' AND (delivery IS NULL OR delivery <> 'failed')))",
        )
        .bind($inv)
        .fetch_one(&mut *$tx)
        .await?;
        if reached == 0 {
            let reg: Option<i64> = sqlx::query_scalar(
                "UPDATE invitations SET status = 'undeliverable', answered_at = $2 WHERE id = $1 AND status IN ('queued', 'sent') RETURNING registrant_id",
            )
            .bind($inv)
            .bind($now)
            .fetch_optional(&mut *$tx)
            .await?;
            if let Some(reg) = reg {
                sqlx::query("UPDATE registrants SET status = 'waiting', status_changed_at = $2 WHERE id = $1 AND status = 'invited'")
                    .bind(reg)
                    .bind($now)
                    .execute(&mut *$tx)
                    .await?;
                audit!($tx, $now, $actor, "invitation.undeliverable", "invitation", $inv, "{}");
            }
        }
    };
}

fn outbox_from_row<R: Row>(row: &R) -> Result<OutboxMessage>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(OutboxMessage {
        id: row.try_get("id")?,
        reference: row.try_get("reference")?,
        channel: row.try_get("channel")?,
        kind: row.try_get("kind")?,
        recipient: row
            .try_get::<Option<String>, _>("recipient")?
            .unwrap_or_default(),
        subject: row.try_get("subject")?,
        body: row
            .try_get::<Option<String>, _>("body")?
            .unwrap_or_default(),
        attempts: row.try_get("attempts")?,
    })
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Pg(_) => Backend::Postgres,
        }
    }

    async fn migrate(&self) -> Result<()> {
        match &self.db {
            Db::Sqlite(p) => {
                let _lock = match &self.sqlite_path {
                    Some(path) => Some(migration_lock(path).await?),
                    None => None,
                };
                sqlx::migrate!("./migrations/sqlite").run(p).await?
            }
            Db::Pg(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    async fn refresh_bands(&self, today_ymd: i64) -> Result<i64> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query(
                "UPDATE registrants SET band = (($1 - birth_ymd) / 10000) / 10 WHERE birth_ymd IS NOT NULL AND band <> (($1 - birth_ymd) / 10000) / 10",
            )
            .bind(today_ymd)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(n as i64)
        })
    }

    async fn maintenance(&self, now: i64) -> Result<()> {
        // Throttle windows older than a day are of no use to anyone. Looked
        // for with a read, which never waits on the writer; deleted, when
        // there are some, in turn with this process's other writers (SQLite:
        // a write outside the writer slot meets the sign-up writer on the
        // database lock, and SQLite's busy handler then sleeps). `now` is
        // the clock the windows were counted by: with the system's time a
        // test clock days behind it saw its current windows swept away.
        let swept = self
            .throttle_swept
            .load(std::sync::atomic::Ordering::Relaxed);
        let sweep = now - swept >= THROTTLE_SWEEP_EVERY_MS
            && self
                .throttle_swept
                .compare_exchange(
                    swept,
                    now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok();
        if sweep {
            on_db!(self, |p| {
                let cutoff = now - 24 * 3600 * 1000;
                // (A key, not `SELECT 1`: PostgreSQL answers that as INT4.)
                let stale: Option<String> =
                    sqlx::query_scalar("SELECT key FROM throttle WHERE window_start < $1 LIMIT 1")
                        .bind(cutoff)
                        .fetch_optional(p)
                        .await?;
                if stale.is_some() {
                    let _slot = p.write_slot().await;
                    sqlx::query("DELETE FROM throttle WHERE window_start < $1")
                        .bind(cutoff)
                        .execute(p)
                        .await?;
                }
            });
        }
        // SQLite, after an erasure: the log's older frames hold the erased
        // values as they were; copy it all back and truncate it, then lay
        // it out again if the operator asked for that.
        if let Some(checkpointer) = &self.checkpointer
            && self.erased.swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            let emptied = checkpointer.empty_log().await.map_err(StoreError::Writer)?;
            if !emptied {
                self.note_erasure();
            } else if let Some(path) = &self.sqlite_path {
                let bytes = self.laid_out.load(std::sync::atomic::Ordering::Relaxed);
                if bytes > 0 {
                    crate::sqlite_log::lay_out_in_background(path.clone(), bytes)
                        .await
                        .map_err(StoreError::Writer)?;
                }
            }
            return Ok(());
        }
        // SQLite: folds the write-ahead log back into the database without
        // blocking writers, on the checkpointer's low-priority thread;
        // during a surge, once it is over (`defer_checkpoint`).
        if let Some(checkpointer) = self
            .checkpointer
            .as_ref()
            .filter(|_| !self.surge_defers_checkpoint())
        {
            checkpointer
                .checkpoint(self.wal_restart_frames, WAL_RESTART_TAIL)
                .await
                .map_err(StoreError::Writer)?;
        }
        Ok(())
    }

    async fn lay_out_log(&self, bytes: u64) -> Result<u64> {
        self.laid_out
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
        match &self.sqlite_path {
            Some(path) => crate::sqlite_log::lay_out_in_background(path.clone(), bytes)
                .await
                .map_err(StoreError::Writer),
            None => Ok(0),
        }
    }

    async fn ping(&self) -> Result<()> {
        on_db!(self, |p| {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }

    fn registration_queue(
        &self,
        now: crate::NowMs,
        observer: crate::BatchObserver,
    ) -> Option<std::sync::Arc<dyn crate::RegistrationQueue>> {
        let writer = self.sqlite_writer.as_ref()?;
        writer.accept_direct(now, observer);
        Some(writer.clone())
    }

    async fn insert_registrations(
        &self,
        batch: Vec<NewRegistrant>,
        now: i64,
    ) -> Result<Vec<InsertOutcome>> {
        if let Some(writer) = &self.sqlite_writer {
            return writer.insert(batch, now).await.map_err(StoreError::Writer);
        }
        let batch = &batch[..];
        // Multi-row statements: a handful of statements per batch, not per person.
        const CHUNK: usize = 400;
        let today = today_ymd(now);
        let mut first: std::collections::HashMap<NidKey, usize> =
            std::collections::HashMap::with_capacity(batch.len());
        let mut unique: Vec<usize> = Vec::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            if let std::collections::hash_map::Entry::Vacant(e) = first.entry(r.nid_hash) {
                e.insert(i);
                unique.push(i);
            }
        }
        // Stored in the order of the unique key, so that batches committed
        // side by side (PostgreSQL's writers) take their index entries in one
        // order and never wait for each other in a circle (a deadlock) when
        // they hold the same national IDs.
        unique.sort_unstable_by(|&a, &b| batch[a].nid_hash.cmp(&batch[b].nid_hash));
        on_db!(self, |p| {
            let t0 = std::time::Instant::now();
            let mut tx = p.begin_write().await?;
            let t_begin = t0.elapsed();
            let mut ids: std::collections::HashMap<NidKey, i64> =
                std::collections::HashMap::with_capacity(unique.len());
            for chunk in unique.chunks(CHUNK) {
                let mut qb = sqlx::QueryBuilder::new(format!(
                    "INSERT INTO registrants ({REGISTRANT_COLUMNS}) "
                ));
                qb.push_values(chunk, |mut b, &i| {
                    let r = &batch[i];
                    b.push_bind(r.nid_hash.0.to_vec())
                        .push_bind(r.country.clone())
                        .push_bind(r.birth_ymd)
                        .push_bind(r.title.clone())
                        .push_bind(r.first_name.clone())
                        .push_bind(r.last_name.clone())
                        .push_bind(r.email.clone())
                        .push_bind(r.phone.clone())
                        .push_bind(r.language.clone())
                        .push_bind(registrant_status(r))
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(r.confirmed_at)
                        .push_bind(band(today, r.birth_ymd))
                        .push_bind(i64::from(r.centers.is_empty()))
                        .push_bind(i64::from(r.availability.is_empty()));
                });
                qb.push(" ON CONFLICT (nid_hash) DO NOTHING RETURNING id, nid_hash");
                for row in qb.build().fetch_all(&mut *tx).await? {
                    ids.insert(nid_key(row.try_get(1)?)?, row.try_get(0)?);
                }
            }
            let t_reg = t0.elapsed();
            let created: Vec<(i64, &NewRegistrant)> = unique
                .iter()
                .filter_map(|&i| ids.get(&batch[i].nid_hash).map(|id| (*id, &batch[i])))
                .collect();
            let centers: Vec<(i64, i64)> = created
                .iter()
                .flat_map(|(id, r)| r.centers.iter().map(move |c| (*id, *c)))
                .collect();
            for chunk in centers.chunks(CHUNK * 2) {
                let mut qb = sqlx::QueryBuilder::new(format!(
                    "INSERT INTO registrant_centers ({CENTER_COLUMNS}) "
                ));
                qb.push_values(chunk, |mut b, (id, c)| {
                    b.push_bind(*id).push_bind(*c);
                });
                qb.build().execute(&mut *tx).await?;
            }
            let slots: Vec<(i64, (i64, i64, i64))> = created
                .iter()
                .flat_map(|(id, r)| r.availability.iter().map(move |s| (*id, *s)))
                .collect();
            for chunk in slots.chunks(CHUNK * 2) {
                let mut qb = sqlx::QueryBuilder::new(format!(
                    "INSERT INTO registrant_availability ({SLOT_COLUMNS}) "
                ));
                qb.push_values(chunk, |mut b, (id, (d, f, t))| {
                    b.push_bind(*id).push_bind(*d).push_bind(*f).push_bind(*t);
                });
                qb.build().execute(&mut *tx).await?;
            }
            for chunk in created.chunks(CHUNK) {
                let mut qb =
                    sqlx::QueryBuilder::new(format!("INSERT INTO tokens ({TOKEN_COLUMNS}) "));
                let tokens = chunk.iter().flat_map(|(id, r)| {
                    [
                        (r.confirm_hash.clone(), "confirm", *id, r.confirm_expires_at),
                        (r.me_hash.clone(), "me", *id, r.me_expires_at),
                    ]
                });
                qb.push_values(tokens, |mut b, (hash, purpose, id, expires)| {
                    b.push_bind(hash)
                        .push_bind(purpose)
                        .push_bind(id)
                        .push_bind(now)
                        .push_bind(expires);
                });
                qb.build().execute(&mut *tx).await?;
                let messages: Vec<(i64, &NewMessage)> = chunk
                    .iter()
                    .filter_map(|(id, r)| r.message.as_ref().map(|m| (*id, m)))
                    .collect();
                if !messages.is_empty() {
                    let mut qb =
                        sqlx::QueryBuilder::new(format!("INSERT INTO outbox ({OUTBOX_COLUMNS}) "));
                    qb.push_values(messages, |mut b, (id, m)| {
                        b.push_bind(m.reference.clone())
                            .push_bind(m.channel.clone())
                            .push_bind(m.kind.clone())
                            .push_bind(id)
                            .push_bind(m.recipient.clone())
                            .push_bind(m.subject.clone())
                            .push_bind(m.body.clone())
                            .push_bind("queued")
                            .push_bind(now)
                            .push_bind(now);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                let mut qb =
                    sqlx::QueryBuilder::new(format!("INSERT INTO audit_log ({AUDIT_COLUMNS}) "));
                qb.push_values(chunk, |mut b, (id, r)| {
                    b.push_bind(now)
                        .push_bind("public")
                        .push_bind("registrant.created")
                        .push_bind("registrant")
                        .push_bind(id.to_string())
                        .push_bind(created_detail(r));
                });
                qb.build().execute(&mut *tx).await?;
            }
            let t_rest = t0.elapsed();
            tx.commit().await?;
            tracing::debug!(
                begin_us = t_begin.as_micros() as u64,
                registrants_us = t_reg.as_micros() as u64,
                rest_us = t_rest.as_micros() as u64,
                commit_us = t0.elapsed().as_micros() as u64,
                "batch timing"
            );
            // The first occurrence of a hash that got an id was created; everything else is a duplicate.
            Ok((0..batch.len())
                .map(
                    |i| match (first.get(&batch[i].nid_hash), ids.get(&batch[i].nid_hash)) {
                        (Some(&f), Some(id)) if f == i => InsertOutcome::Created(*id),
                        _ => InsertOutcome::Duplicate,
                    },
                )
                .collect())
        })
    }

    async fn confirm_registrant(
        &self,
        confirm_hash: &str,
        me_hash: &str,
        now: i64,
    ) -> Result<ConfirmOutcome> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let row = sqlx::query(
                "SELECT subject_id, expires_at FROM tokens WHERE hash = $1 AND purpose = 'confirm'",
            )
            .bind(confirm_hash)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(ConfirmOutcome::Unknown);
            };
            let id: i64 = row.try_get(0)?;
            let expires_at: i64 = row.try_get(1)?;
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM registrants WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            match status.as_deref() {
                None => Ok(ConfirmOutcome::Unknown),
                Some("unconfirmed") if expires_at <= now => Ok(ConfirmOutcome::Expired),
                Some("unconfirmed") => {
                    sqlx::query("UPDATE registrants SET status = 'waiting', confirmed_at = $2, status_changed_at = $2 WHERE id = $1 AND status = 'unconfirmed'")
                        .bind(id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("INSERT INTO tokens (hash, purpose, subject_id, created_at, expires_at) VALUES ($1, 'me', $2, $3, $4)")
                        .bind(me_hash)
                        .bind(id)
                        .bind(now)
                        .bind(now + ME_TOKEN_LIFETIME_MS)
                        .execute(&mut *tx)
                        .await?;
                    audit!(
                        tx,
                        now,
                        "registrant",
                        "registrant.confirmed",
                        "registrant",
                        id,
                        "{}"
                    );
                    tx.commit().await?;
                    Ok(ConfirmOutcome::Confirmed(id))
                }
                Some(_) => Ok(ConfirmOutcome::AlreadyConfirmed(id)),
            }
        })
    }

    async fn registrant_by_token(
        &self,
        purpose: TokenPurpose,
        hash: &str,
        now: i64,
    ) -> Result<Option<RegistrantRecord>> {
        on_db!(self, |p| {
            let mut conn = p.acquire().await?;
            let id: Option<i64> = sqlx::query_scalar("SELECT subject_id FROM tokens WHERE hash = $1 AND purpose = $2 AND expires_at > $3")
                .bind(hash)
                .bind(purpose.as_str())
                .bind(now)
                .fetch_optional(&mut *conn)
                .await?;
            match id {
                None => Ok(None),
                Some(id) => Ok(load_registrant!(conn, id)),
            }
        })
    }

    async fn update_registrant(
        &self,
        id: i64,
        change: &RegistrantChange,
        now: i64,
    ) -> Result<RegistrantRecord> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            if change.paused == Some(true) {
                // Pausing ends an open invitation: its offers first, in the
                // lock order of every change to an invitation.
                lock_offers_of_registrant!(p, tx, id);
            }
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM registrants WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let mut status = status.ok_or(StoreError::NotFound)?;
            if status == "withdrawn" {
                return Err(StoreError::Conflict("withdrawn"));
            }
            if change.paused == Some(true) && status == "invited" {
                // The open invitation is withdrawn with no penalty and its
                // offer invites someone else; the person is then paused.
                withdraw_open_invitations!(tx, id, now);
                status = "waiting".into();
            }
            let mut changed: Vec<&str> = Vec::new();
            if let Some(lang) = &change.language {
                sqlx::query("UPDATE registrants SET language = $2 WHERE id = $1")
                    .bind(id)
                    .bind(lang)
                    .execute(&mut *tx)
                    .await?;
                changed.push("language");
            }
            if let Some(phone) = &change.phone {
                sqlx::query("UPDATE registrants SET phone = $2 WHERE id = $1")
                    .bind(id)
                    .bind(phone)
                    .execute(&mut *tx)
                    .await?;
                changed.push("phone");
            }
            if let Some(centers) = &change.centers {
                replace_centers!(tx, id, centers);
                changed.push("centers");
            }
            if let Some(slots) = &change.availability {
                replace_availability!(tx, id, slots);
                changed.push("availability");
            }
            if let Some(paused) = change.paused {
                let (from, to) = if paused {
                    ("waiting", "paused")
                } else {
                    ("paused", "waiting")
                };
                if status != from && status != to {
                    return Err(StoreError::Conflict(if paused {
                        "cannot_pause"
                    } else {
                        "cannot_resume"
                    }));
                }
                if status == from {
                    sqlx::query("UPDATE registrants SET status = $2, status_changed_at = $3, ignored_invitations = 0 WHERE id = $1")
                        .bind(id)
                        .bind(to)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    changed.push(if paused { "paused" } else { "resumed" });
                }
            }
            if !changed.is_empty() {
                let detail = format!("{{\"fields\":{:?}}}", changed);
                audit!(
                    tx,
                    now,
                    "registrant",
                    "registrant.updated",
                    "registrant",
                    id,
                    detail
                );
            }
            let record = load_registrant!(tx, id).ok_or(StoreError::NotFound)?;
            tx.commit().await?;
            Ok(record)
        })
    }

    async fn withdraw_registrant(&self, id: i64, now: i64) -> Result<()> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            // Lock order everywhere: offer, outbox, invitation, registrant.
            lock_offers_of_registrant!(p, tx, id);
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM registrants WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if status.is_none_or(|s| s == "withdrawn") {
                return Ok(());
            }
            // What is under way ends with the withdrawal: open invitations
            // are withdrawn (their offers invite someone else), and a booking
            // not yet attended is cancelled, its dose given back.
            let invitations = withdraw_open_invitations!(tx, id, now);
            let booked: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM appointments WHERE registrant_id = $1 AND status = 'booked' ORDER BY id",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            for appointment in &booked {
                cancel_booking!(tx, *appointment, "registrant", now);
            }
            sqlx::query(
                "UPDATE registrants SET nid_hash = NULL, birth_ymd = NULL, title = NULL, first_name = NULL, last_name = NULL, \
                 email = NULL, phone = NULL, status = 'withdrawn', status_changed_at = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            replace_centers!(tx, id, &Vec::<i64>::new());
            replace_availability!(tx, id, &Vec::<(i64, i64, i64)>::new());
            sqlx::query(
                "UPDATE outbox SET recipient = NULL, subject = NULL, body = NULL, last_error = NULL, \
                 status = CASE WHEN status IN ('queued', 'sending') THEN 'withdrawn' ELSE status END WHERE registrant_id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM tokens WHERE subject_id = $1 AND purpose = 'confirm'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let detail = format!(
                "{{\"invitations_withdrawn\":{invitations},\"bookings_cancelled\":{}}}",
                booked.len()
            );
            audit!(
                tx,
                now,
                "registrant",
                "registrant.withdrawn",
                "registrant",
                id,
                detail
            );
            tx.commit().await?;
            self.note_erasure();
            Ok(())
        })
    }

    async fn export_registrant(&self, id: i64) -> Result<serde_json::Value> {
        use serde_json::json;
        on_db!(self, |p| {
            let mut conn = p.acquire().await?;
            let r = load_registrant!(conn, id).ok_or(StoreError::NotFound)?;
            let country: String =
                sqlx::query_scalar("SELECT country FROM registrants WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *conn)
                    .await?;
            // Every invitation with its offer, centre and times; every
            // message with its times and delivery (bodies are erased once
            // handed over: the kind and subject say what each was).
            let invitations = sqlx::query(
                "SELECT i.offer_id, i.status, i.created_at, i.sent_at, i.expires_at, i.answered_at, o.center_id, c.name, o.vaccine, o.starts_at, o.ends_at \
                 FROM invitations i JOIN offers o ON o.id = i.offer_id JOIN centers c ON c.id = o.center_id WHERE i.registrant_id = $1 ORDER BY i.id",
            )
            .bind(id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|x| {
                Ok(json!({"offer": x.try_get::<i64, _>(0)?.to_string(), "status": x.try_get::<String, _>(1)?,
                    "created_at": export_time(x.try_get(2)?), "sent_at": export_time(x.try_get(3)?),
                    "expires_at": export_time(x.try_get(4)?), "answered_at": export_time(x.try_get(5)?),
                    "center": x.try_get::<i64, _>(6)?.to_string(), "center_name": x.try_get::<String, _>(7)?,
                    "vaccine": x.try_get::<String, _>(8)?,
                    "starts_at": export_time(x.try_get(9)?), "ends_at": export_time(x.try_get(10)?)}))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
            let appointments = sqlx::query("SELECT a.center_id, a.vaccine, a.starts_at, a.ends_at, a.status, a.created_at, a.updated_at, c.name FROM appointments a JOIN centers c ON c.id = a.center_id WHERE a.registrant_id = $1 ORDER BY a.id")
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|x| {
                    Ok(json!({"center": x.try_get::<i64, _>(0)?.to_string(), "center_name": x.try_get::<String, _>(7)?,
                        "vaccine": x.try_get::<String, _>(1)?, "starts_at": export_time(x.try_get(2)?),
                        "ends_at": export_time(x.try_get(3)?), "status": x.try_get::<String, _>(4)?,
                        "booked_at": export_time(x.try_get(5)?), "updated_at": export_time(x.try_get(6)?)}))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            let messages = sqlx::query("SELECT kind, channel, status, created_at, sent_at, reference, subject, attempts, delivery, delivery_at FROM outbox WHERE registrant_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|x| {
                    Ok(json!({"kind": x.try_get::<String, _>(0)?, "channel": x.try_get::<String, _>(1)?, "status": x.try_get::<String, _>(2)?,
                        "created_at": export_time(x.try_get(3)?), "sent_at": export_time(x.try_get(4)?),
                        "reference": x.try_get::<String, _>(5)?, "subject": x.try_get::<Option<String>, _>(6)?,
                        "attempts": x.try_get::<i64, _>(7)?, "delivery": x.try_get::<Option<String>, _>(8)?,
                        "delivery_at": export_time(x.try_get(9)?)}))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            Ok(json!({
                "registrant": {
                    "status": r.status, "language": r.language, "country": country, "title": r.title, "first_name": r.first_name,
                    "last_name": r.last_name, "email": r.email, "phone": r.phone,
                    "centers": r.centers.iter().map(i64::to_string).collect::<Vec<_>>(),
                    "availability": r.availability, "created_at": export_time(Some(r.created_at)), "confirmed_at": export_time(r.confirmed_at),
                    "national_id": "kept only as a keyed hash, never in clear"
                },
                "invitations": invitations, "appointments": appointments, "messages": messages,
            }))
        })
    }

    async fn purge_personal_data(&self, before: i64, now: i64) -> Result<i64> {
        on_db!(self, |p| {
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM registrants WHERE status IN ('vaccinated', 'withdrawn') AND status_changed_at < $1 \
                 AND (nid_hash IS NOT NULL OR email IS NOT NULL OR first_name IS NOT NULL OR phone IS NOT NULL OR birth_ymd IS NOT NULL) LIMIT 1000",
            )
            .bind(before)
            .fetch_all(p)
            .await?;
            for id in &ids {
                let mut tx = p.begin_write().await?;
                sqlx::query("UPDATE registrants SET nid_hash = NULL, birth_ymd = NULL, title = NULL, first_name = NULL, last_name = NULL, email = NULL, phone = NULL WHERE id = $1")
                    .bind(*id)
                    .execute(&mut *tx)
                    .await?;
                replace_centers!(tx, *id, &Vec::<i64>::new());
                replace_availability!(tx, *id, &Vec::<(i64, i64, i64)>::new());
                sqlx::query("UPDATE outbox SET recipient = NULL, subject = NULL, body = NULL, last_error = NULL WHERE registrant_id = $1").bind(*id).execute(&mut *tx).await?;
                audit!(
                    tx,
                    now,
                    "retention",
                    "registrant.purged",
                    "registrant",
                    *id,
                    "{}"
                );
                tx.commit().await?;
            }
            if !ids.is_empty() {
                self.note_erasure();
            }
            Ok(ids.len() as i64)
        })
    }

    async fn registrant_raw_row(&self, id: i64) -> Result<Option<Vec<(String, Option<String>)>>> {
        // Every personal column as text, for erasure checks and data export.
        const COLS: [&str; 9] = [
            "nid_hash",
            "birth_ymd",
            "title",
            "first_name",
            "last_name",
            "email",
            "phone",
            "status",
            "language",
        ];
        on_db!(self, |p| {
            let row = sqlx::query(
                "SELECT nid_hash, CAST(birth_ymd AS TEXT) AS birth_ymd, title, first_name, last_name, email, phone, status, language FROM registrants WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await?;
            match row {
                None => Ok(None),
                Some(row) => Ok(Some(
                    COLS.iter()
                        .map(|&c| {
                            let value = if c == "nid_hash" {
                                // Bytes (migration 0005): shown as hex.
                                row.try_get::<Option<Vec<u8>>, _>(c)?
                                    .map(|b| nid_key(b).map(|k| k.to_string()))
                                    .transpose()?
                            } else {
                                row.try_get::<Option<String>, _>(c)?
                            };
                            Ok((c.to_string(), value))
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()?,
                )),
            }
        })
    }

    async fn stats(&self) -> Result<Stats> {
        on_db!(self, |p| {
            let rows = sqlx::query("SELECT status, COUNT(*) AS n, COUNT(confirmed_at) AS c FROM registrants GROUP BY status")
                .fetch_all(p)
                .await?;
            let mut s = Stats::default();
            for row in rows {
                let status: String = row.try_get(0)?;
                let n: i64 = row.try_get(1)?;
                let c: i64 = row.try_get(2)?;
                if status == "withdrawn" {
                    continue;
                }
                s.registered += n;
                s.confirmed += c;
                match status.as_str() {
                    "waiting" => s.waiting = n,
                    "invited" => s.invited = n,
                    "booked" => s.booked = n,
                    "vaccinated" => s.vaccinated = n,
                    _ => {}
                }
            }
            s.doses_available = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(on_hand - reserved), 0) AS BIGINT) FROM stock",
            )
            .fetch_one(p)
            .await?;
            Ok(s)
        })
    }

    async fn has_registrant(&self, nid_hash: &NidKey) -> Result<bool> {
        on_db!(self, |p| {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM registrants WHERE nid_hash = $1")
                .bind(&nid_hash.0[..])
                .fetch_one(p)
                .await?;
            Ok(n > 0)
        })
    }

    async fn enqueue_message(&self, msg: &NewMessage, now: i64) -> Result<()> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            insert_message!(tx, msg, msg.registrant_id, now);
            tx.commit().await?;
            Ok(())
        })
    }

    async fn claim_messages(
        &self,
        channel: &str,
        worker: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxMessage>> {
        if let Some(writer) = &self.sqlite_writer {
            let (channel, worker) = (channel.to_string(), worker.to_string());
            let sqls = <SqlitePool as crate::dialect::Dialect>::CLAIM_MESSAGES;
            return writer
                .call(move |conn| {
                    crate::sqlite_writer::claim_messages(
                        conn, sqls, &channel, &worker, now, lease_ms, limit,
                    )
                })
                .await
                .map_err(StoreError::Writer);
        }
        on_db!(self, |p| {
            // Each statement atomic on its own: no transaction round trips
            // while holding SQLite's writer slot.
            let mut out = Vec::new();
            for sql in p.claim_sql() {
                let wanted = limit - out.len() as i64;
                if wanted <= 0 {
                    break;
                }
                let slot = p.write_slot().await;
                let rows = sqlx::query(sql)
                    .bind(worker)
                    .bind(now + lease_ms)
                    .bind(channel)
                    .bind(now)
                    .bind(wanted)
                    .fetch_all(p)
                    .await?;
                drop(slot);
                let start = out.len();
                for row in &rows {
                    out.push(outbox_from_row(row)?);
                }
                out[start..].sort_by_key(|m| m.id);
            }
            Ok(out)
        })
    }

    async fn message_sent(&self, id: i64, worker: &str, now: i64) -> Result<()> {
        if let Some(writer) = &self.sqlite_writer {
            let worker = worker.to_string();
            return writer
                .call(move |conn| crate::sqlite_writer::message_sent(conn, id, &worker, now))
                .await
                .map_err(StoreError::Writer);
        }
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let invitation: Option<Option<i64>> = sqlx::query_scalar(crate::macros::MESSAGE_SENT)
                .bind(id)
                .bind(worker)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(invitation) = invitation {
                audit!(tx, now, "dispatcher", "message.sent", "message", id, "{}");
                if let Some(inv) = invitation {
                    // The first message handed over starts the response window.
                    let started = sqlx::query(crate::macros::START_INVITATION)
                        .bind(inv)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if started == 1 {
                        sqlx::query(crate::macros::COUNT_INVITED)
                            .bind(inv)
                            .execute(&mut *tx)
                            .await?;
                        audit!(
                            tx,
                            now,
                            "dispatcher",
                            "invitation.handed_over",
                            "invitation",
                            inv,
                            "{}"
                        );
                    }
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn message_retry(
        &self,
        id: i64,
        worker: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<()> {
        on_db!(self, |p| {
            let slot = p.write_slot().await;
            sqlx::query(
                "UPDATE outbox SET status = 'queued', next_attempt_at = $3, last_error = $4, claimed_by = NULL, claimed_until = NULL \
                 WHERE id = $1 AND claimed_by = $2 AND status = 'sending'",
            )
            .bind(id)
            .bind(worker)
            .bind(next_attempt_at)
            .bind(standby_domain::redact::mask_contacts(error))
            .execute(p)
            .await?;
            drop(slot);
            Ok(())
        })
    }

    async fn message_failed(&self, id: i64, worker: &str, now: i64, error: &str) -> Result<()> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let invitation: Option<Option<i64>> = sqlx::query_scalar(
                "UPDATE outbox SET status = 'failed', last_error = $3, body = NULL, recipient = NULL, claimed_by = NULL, claimed_until = NULL \
                 WHERE id = $1 AND claimed_by = $2 AND status = 'sending' RETURNING invitation_id",
            )
            .bind(id)
            .bind(worker)
            .bind(standby_domain::redact::mask_contacts(error))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(invitation) = invitation {
                audit!(tx, now, "dispatcher", "message.failed", "message", id, "{}");
                if let Some(inv) = invitation {
                    undeliverable_if_unreached!(tx, inv, "dispatcher", now);
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn next_message_due(&self, channel: &str) -> Result<Option<i64>> {
        on_db!(self, |p| {
            // Each kind's earliest from the index: one MIN over both read
            // every queued message, and the dispatcher asks each time it
            // finds nothing due (a backlog of retries waiting out an
            // outage, woken by every sign-up batch).
            let at: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(at) FROM (\
                 SELECT MIN(next_attempt_at) AS at FROM outbox WHERE status = 'queued' AND channel = $1 \
                 UNION ALL \
                 SELECT MIN(claimed_until) AS at FROM outbox WHERE status = 'sending' AND channel = $1) AS due",
            )
            .bind(channel)
            .fetch_one(p)
            .await?;
            Ok(at)
        })
    }

    async fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>> {
        on_db!(self, |p| {
            let rows = sqlx::query("SELECT channel, status, COUNT(*) FROM outbox GROUP BY channel, status ORDER BY channel, status")
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect()
        })
    }

    async fn outbox_oldest_waiting(&self) -> Result<Vec<(String, i64)>> {
        on_db!(self, |p| {
            let rows = sqlx::query("SELECT channel, MIN(created_at) FROM outbox WHERE status IN ('queued', 'sending') GROUP BY channel ORDER BY channel")
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }

    async fn message_receipt(
        &self,
        reference: &str,
        delivered: bool,
        now: i64,
    ) -> Result<ReceiptOutcome> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            // Only an SMS that left (or is leaving: a receipt may overtake
            // the gateway's answer) and whose delivery is not known yet.
            let row = sqlx::query(
                "UPDATE outbox SET delivery = $2, delivery_at = $3 WHERE reference = $1 AND channel = 'sms' \
                 AND status IN ('sending', 'sent') AND delivery IS NULL RETURNING id, invitation_id",
            )
            .bind(reference)
            .bind(if delivered { "delivered" } else { "failed" })
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                let known: Option<String> = sqlx::query_scalar(
                    "SELECT status FROM outbox WHERE reference = $1 AND channel = 'sms'",
                )
                .bind(reference)
                .fetch_optional(&mut *tx)
                .await?;
                return Ok(if known.is_some() {
                    ReceiptOutcome::Unchanged
                } else {
                    ReceiptOutcome::Unknown
                });
            };
            let id: i64 = row.try_get(0)?;
            let invitation: Option<i64> = row.try_get(1)?;
            audit!(
                tx,
                now,
                "gateway",
                if delivered {
                    "message.delivered"
                } else {
                    "message.delivery_failed"
                },
                "message",
                id,
                "{}"
            );
            if let (false, Some(inv)) = (delivered, invitation) {
                undeliverable_if_unreached!(tx, inv, "gateway", now);
            }
            tx.commit().await?;
            Ok(ReceiptOutcome::Recorded)
        })
    }

    async fn messages_of_kind(&self, kind: &str) -> Result<Vec<(String, String, String, i64)>> {
        on_db!(self, |p| {
            let rows = sqlx::query("SELECT reference, channel, status, attempts FROM outbox WHERE kind = $1 ORDER BY id").bind(kind).fetch_all(p).await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect()
        })
    }

    async fn create_center(&self, c: &NewCenter, actor: &str, now: i64) -> Result<CenterRecord> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let id: i64 = sqlx::query_scalar("INSERT INTO centers (name, address, postal_code, time_zone, created_at, quiet_hours) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id")
                .bind(&c.name)
                .bind(&c.address)
                .bind(&c.postal_code)
                .bind(&c.time_zone)
                .bind(now)
                .bind(&c.quiet_hours)
                .fetch_one(&mut *tx)
                .await?;
            audit!(tx, now, actor, "center.created", "center", id, "{}");
            tx.commit().await?;
            Ok(CenterRecord {
                id,
                name: c.name.clone(),
                address: c.address.clone(),
                postal_code: c.postal_code.clone(),
                time_zone: c.time_zone.clone(),
                quiet_hours: c.quiet_hours.clone(),
            })
        })
    }

    async fn list_centers(&self) -> Result<Vec<CenterRecord>> {
        on_db!(self, |p| {
            let rows = sqlx::query(
                "SELECT id, name, address, postal_code, time_zone, quiet_hours FROM centers ORDER BY name, id",
            )
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(CenterRecord {
                        id: r.try_get(0)?,
                        name: r.try_get(1)?,
                        address: r.try_get(2)?,
                        postal_code: r.try_get(3)?,
                        time_zone: r.try_get(4)?,
                        quiet_hours: r.try_get(5)?,
                    })
                })
                .collect()
        })
    }

    async fn known_centers(&self, ids: &[i64]) -> Result<Vec<i64>> {
        let mut known = Vec::with_capacity(ids.len());
        on_db!(self, |p| {
            for id in ids {
                let hit: Option<i64> = sqlx::query_scalar("SELECT id FROM centers WHERE id = $1")
                    .bind(*id)
                    .fetch_optional(p)
                    .await?;
                known.extend(hit);
            }
        });
        Ok(known)
    }

    async fn create_vaccine(&self, v: &VaccineRecord, actor: &str, now: i64) -> Result<()> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query("INSERT INTO vaccines (code, name, min_age, max_age, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (code) DO NOTHING")
                .bind(&v.code)
                .bind(&v.name)
                .bind(v.min_age)
                .bind(v.max_age)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::Conflict("vaccine_exists"));
            }
            audit!(tx, now, actor, "vaccine.created", "vaccine", v.code, "{}");
            tx.commit().await?;
            Ok(())
        })
    }

    async fn list_vaccines(&self) -> Result<Vec<VaccineRecord>> {
        on_db!(self, |p| {
            let rows =
                sqlx::query("SELECT code, name, min_age, max_age FROM vaccines ORDER BY code")
                    .fetch_all(p)
                    .await?;
            rows.iter()
                .map(|r| {
                    Ok(VaccineRecord {
                        code: r.try_get(0)?,
                        name: r.try_get(1)?,
                        min_age: r.try_get(2)?,
                        max_age: r.try_get(3)?,
                    })
                })
                .collect()
        })
    }

    async fn record_delivery(
        &self,
        center_id: i64,
        vaccine: &str,
        doses: i64,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "INSERT INTO stock (center_id, vaccine, on_hand, reserved, administered) VALUES ($1, $2, $3, 0, 0) \
                 ON CONFLICT (center_id, vaccine) DO UPDATE SET on_hand = stock.on_hand + excluded.on_hand",
            )
            .bind(center_id)
            .bind(vaccine)
            .bind(doses)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO stock_ledger (center_id, vaccine, kind, doses, actor, at) VALUES ($1, $2, 'delivered', $3, $4, $5)")
                .bind(center_id)
                .bind(vaccine)
                .bind(doses)
                .bind(actor)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let detail = format!("{{\"vaccine\":{:?},\"doses\":{}}}", vaccine, doses);
            audit!(
                tx,
                now,
                actor,
                "stock.delivered",
                "center",
                center_id,
                detail
            );
            tx.commit().await?;
            Ok(())
        })
    }

    async fn stock(&self, center_id: i64) -> Result<Vec<StockRecord>> {
        on_db!(self, |p| {
            let rows = sqlx::query("SELECT vaccine, on_hand, reserved, administered FROM stock WHERE center_id = $1 ORDER BY vaccine")
                .bind(center_id)
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(StockRecord {
                        vaccine: r.try_get(0)?,
                        on_hand: r.try_get(1)?,
                        reserved: r.try_get(2)?,
                        administered: r.try_get(3)?,
                    })
                })
                .collect()
        })
    }

    async fn create_user(&self, u: &NewUser, actor: &str, now: i64) -> Result<i64> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO staff_users (email, password_hash, role, center_id, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (email) DO NOTHING RETURNING id",
            )
            .bind(&u.email)
            .bind(&u.password_hash)
            .bind(&u.role)
            .bind(u.center_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let id = id.ok_or(StoreError::Conflict("user_exists"))?;
            let detail = format!("{{\"role\":{:?}}}", u.role);
            audit!(tx, now, actor, "user.created", "user", id, detail);
            tx.commit().await?;
            Ok(id)
        })
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        on_db!(self, |p| {
            let row = sqlx::query("SELECT id, email, password_hash, role, center_id FROM staff_users WHERE email = $1")
                .bind(email)
                .fetch_optional(p)
                .await?;
            row.map(|r| {
                Ok(UserRecord {
                    id: r.try_get(0)?,
                    email: r.try_get(1)?,
                    password_hash: r.try_get(2)?,
                    role: r.try_get(3)?,
                    center_id: r.try_get(4)?,
                })
            })
            .transpose()
        })
    }

    async fn admin_exists(&self) -> Result<bool> {
        on_db!(self, |p| {
            let n: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM staff_users WHERE role = 'admin'")
                    .fetch_one(p)
                    .await?;
            Ok(n > 0)
        })
    }

    async fn audit_trail(&self, limit: i64) -> Result<Vec<AuditRecord>> {
        on_db!(self, |p| {
            let rows = sqlx::query("SELECT at, actor, action, subject_type, subject_id, detail FROM audit_log ORDER BY id DESC LIMIT $1")
                .bind(limit)
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(AuditRecord {
                        at: r.try_get(0)?,
                        actor: r.try_get(1)?,
                        action: r.try_get(2)?,
                        subject_type: r.try_get(3)?,
                        subject_id: r.try_get(4)?,
                        detail: r.try_get(5)?,
                    })
                })
                .collect()
        })
    }
}

/// A write-ahead log this long (1 GiB of 4 KiB pages, about a minute of a
/// sustained launch-day surge) is started over by `maintenance` even while
/// sign-ups keep coming. Starting over holds sign-ups back for a few
/// milliseconds, so it is kept for a log that would otherwise grow for as
/// long as the surge lasts (and be read back whole after a crash).
const WAL_RESTART_FRAMES: i64 = 262_144;
/// The most frames the last checkpoint pass may have left to copy while it
/// holds the writer slot (a few milliseconds of writing).
const WAL_RESTART_TAIL: i64 = 1024;

/// Sign-ups a second from which the upkeep may count the load as a surge.
const SURGE_SIGNUPS_PER_S: u64 = 2_000;
/// Sign-ups per batch, on average, from which the writer counts as
/// saturated: requests pile up while it commits. Keeping up, it commits
/// them a few at a time (5-15 a batch paced at 10,000-25,000 a second on
/// two cores); saturated, 100 or more.
const SURGE_BATCH: u64 = 32;

/// What the writer did between two rounds of upkeep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Since {
    pub(crate) signups: u64,
    pub(crate) batches: u64,
    pub(crate) elapsed: Duration,
}

/// Whether a round of upkeep leaves the log as it is, given what the
/// writer did since the last round and the log's length. A checkpoint pass
/// copies what the log gained since the one before into the database file
/// and syncs that file: tens of megabytes a second in a surge, whose
/// writing the log's own syncs then wait behind, on a disk and two cores
/// the sign-ups need. While the writer keeps up, the machine has room for
/// that; once it is saturated (a surge's rate, in big batches) the passes
/// wait for the surge to end, as long as the log holds less than half the
/// length at which it is started over. Past that they run every round
/// again, so that the database file is close behind when the log starts
/// over; deferring at a rate the writer keeps up with would only gather
/// that work into one pass.
pub(crate) fn defer_checkpoint(since: Since, log_frames: i64, restart_frames: i64) -> bool {
    let elapsed_ms = u64::try_from(since.elapsed.as_millis()).unwrap_or(u64::MAX);
    let fast = elapsed_ms > 0
        && since.signups.saturating_mul(1000) >= SURGE_SIGNUPS_PER_S.saturating_mul(elapsed_ms);
    let saturated = since.signups >= SURGE_BATCH.saturating_mul(since.batches.max(1));
    fast && saturated && log_frames < restart_frames / 2
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Today (UTC) as YYYYMMDD, for age arithmetic.
/// The file behind a `sqlite://PATH` URL; `None` for an in-memory database.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && !path.starts_with(":memory:") && !url.contains("mode=memory"))
        .then(|| std::path::PathBuf::from(path))
}

/// Several processes may share one SQLite file (`STANDBY_REUSE_PORT`).
/// Started together on a new file, each would apply the migrations (sqlx
/// locks nothing on SQLite, unlike PostgreSQL's advisory lock) and all but
/// the first would fail on tables that already exist. So migrations on a
/// file run while this process holds an exclusive `flock` on the file's
/// directory (its own lock, apart from SQLite's locks on the files): the
/// others wait, then find nothing left to apply. Released when dropped.
async fn migration_lock(db: &std::path::Path) -> Result<std::fs::File> {
    let dir = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let locked = tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&dir)?;
        // SAFETY: flock only reads its two integer arguments; the
        // descriptor is open for as long as `file` lives.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(file)
    })
    .await
    .map_err(|e| StoreError::Writer(format!("cannot lock the database for migrating: {e}")))?;
    locked.map_err(|e| {
        StoreError::Writer(format!(
            "cannot lock the database's directory for migrating: {e}"
        ))
    })
}

pub(crate) fn today_ymd(now_ms: i64) -> i64 {
    let ts = jiff::Timestamp::from_millisecond(now_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    standby_domain::invitation::ymd(jiff::tz::Offset::UTC.to_datetime(ts).date())
}

/// A self-service link stays valid for a year and a half.
pub const ME_TOKEN_LIFETIME_MS: i64 = 548 * 24 * 3600 * 1000;

#[cfg(test)]
mod tests {
    use super::*;

    const RESTART: i64 = WAL_RESTART_FRAMES;

    fn since(signups: u64, batches: u64, millis: u64) -> Since {
        Since {
            signups,
            batches,
            elapsed: Duration::from_millis(millis),
        }
    }

    #[test]
    fn a_surge_defers_the_checkpoint_while_the_log_is_under_half_its_restart_length() {
        // 2,000 sign-ups a second or more, 32 or more a batch: a surge.
        assert!(defer_checkpoint(since(500, 5, 250), 1_000, RESTART));
        assert!(defer_checkpoint(
            since(20_000, 100, 250),
            RESTART / 2 - 1,
            RESTART
        ));
        assert!(defer_checkpoint(since(640, 20, 250), 1_000, RESTART));
        // Fewer a second: a quiet time, the log is checkpointed as usual.
        assert!(!defer_checkpoint(since(499, 1, 250), 1_000, RESTART));
        assert!(!defer_checkpoint(since(0, 0, 250), 0, RESTART));
        // As many, in small batches: the writer keeps up, and deferring
        // would only gather the work into one pass.
        assert!(!defer_checkpoint(since(3_750, 500, 250), 1_000, RESTART));
        assert!(!defer_checkpoint(since(639, 20, 250), 1_000, RESTART));
        // Half the restart length or more: checkpointed even in a surge, so
        // the database file is close behind when the log starts over.
        assert!(!defer_checkpoint(
            since(20_000, 100, 250),
            RESTART / 2,
            RESTART
        ));
        assert!(!defer_checkpoint(
            since(20_000, 100, 250),
            RESTART + 5,
            RESTART
        ));
        // The rate is over the time since the last round, however long.
        assert!(defer_checkpoint(since(4_000, 10, 2_000), 1_000, RESTART));
        assert!(!defer_checkpoint(since(3_999, 10, 2_000), 1_000, RESTART));
        // No time measured (two rounds at once): no rate, no deferral.
        assert!(!defer_checkpoint(since(10_000, 10, 0), 1_000, RESTART));
        // No overflow however many.
        assert!(defer_checkpoint(
            since(u64::MAX, u64::MAX / 64, 1),
            1_000,
            RESTART
        ));
    }
}
