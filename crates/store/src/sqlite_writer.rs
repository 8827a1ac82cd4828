//! SQLite's hot writer: one OS thread that owns one connection and runs each
//! batch of sign-ups as one transaction, start to commit, without returning
//! to the async runtime between statements; the dispatcher's claims and
//! hand-over records run there too (`SqliteWriter::call`). A second thread,
//! the syncer, syncs the write-ahead log for what the writer committed and
//! only then answers it (`sync_loop`); a third runs the checkpoints at a
//! lower priority (`Checkpointer`).
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
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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

/// For each parameter position of `stmt`, which of the `$1…$N` values it
/// takes. SQLite numbers named parameters in the order they first appear,
/// so in the shared SQL `$3` written before `$1` would otherwise take the
/// first value. Read once per statement: a batch binds the same statement
/// thousands of times.
fn slots(stmt: &Statement<'_>) -> rusqlite::Result<Vec<usize>> {
    (1..=stmt.parameter_count())
        .map(|index| {
            let name = stmt.parameter_name(index);
            name.and_then(|n| n.strip_prefix('$'))
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1))
                .ok_or_else(|| {
                    rusqlite::Error::InvalidParameterName(name.unwrap_or("?").to_string())
                })
        })
        .collect()
}

/// Binds `values` by the positions [`slots`] read.
fn bind_slots(
    stmt: &mut Statement<'_>,
    slots: &[usize],
    values: &[&dyn ToSql],
) -> rusqlite::Result<()> {
    for (index, slot) in slots.iter().enumerate() {
        let value = values
            .get(*slot)
            .ok_or_else(|| rusqlite::Error::InvalidParameterName(format!("${}", slot + 1)))?;
        stmt.raw_bind_parameter(index + 1, value)?;
    }
    Ok(())
}

/// Binds `values` to `$1…$N` by number (see [`slots`]).
fn bind(stmt: &mut Statement<'_>, values: &[&dyn ToSql]) -> rusqlite::Result<()> {
    let slots = slots(stmt)?;
    bind_slots(stmt, &slots, values)
}

/// A statement run many times in one batch, its parameter positions read
/// once.
struct Repeated<'c> {
    stmt: rusqlite::CachedStatement<'c>,
    slots: Vec<usize>,
}

impl<'c> Repeated<'c> {
    fn prepare(tx: &'c rusqlite::Transaction<'_>, sql: &str) -> rusqlite::Result<Self> {
        let stmt = tx.prepare_cached(sql)?;
        let slots = slots(&stmt)?;
        Ok(Repeated { stmt, slots })
    }

    /// `INSERT INTO table (columns) VALUES (values)`.
    fn insert(
        tx: &'c rusqlite::Transaction<'_>,
        table: &str,
        columns: &str,
        values: &str,
    ) -> rusqlite::Result<Self> {
        Self::prepare(
            tx,
            &format!("INSERT INTO {table} ({columns}) VALUES ({values})"),
        )
    }

    /// Runs it once; the number of rows changed.
    fn execute(&mut self, values: &[&dyn ToSql]) -> rusqlite::Result<usize> {
        bind_slots(&mut self.stmt, &self.slots, values)?;
        self.stmt.raw_execute()
    }
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

/// Work run on the writer's connection; what it returns tells its caller
/// the result once the syncer has put the log on disk (or, given why it
/// could not, tells the caller it failed).
type Call = Box<dyn FnOnce(&mut rusqlite::Connection) -> Answer + Send>;
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

/// Most sign-ups one batch commits in one transaction (the PostgreSQL
/// write loops' batches).
pub const MAX_BATCH: usize = 2048;

/// Most sign-ups the SQLite writer thread commits in one transaction. Under
/// a closed loop of 1,000 clients, batches of up to 2,048 came in pulses (a
/// batch of 600, then the writer idle while its answers went out and the
/// next requests came in); at 512 the work flows more evenly, and the p99
/// fell (BENCHMARKS.md, thirteenth session) for a few more commits.
pub const WRITER_BATCH: usize = 512;

/// What the writer thread has done, read by the upkeep to tell a surge of
/// sign-ups from a quiet time (`defer_checkpoint`).
#[derive(Debug, Default)]
pub(crate) struct WriterLoad {
    /// Sign-ups the thread has taken into batches since it started
    /// (stored, found to repeat an ID, or failed with their batch).
    committed: AtomicU64,
    /// The batches they came in.
    batches: AtomicU64,
    /// The log's length in frames after the writer's last commit, as
    /// SQLite's WAL hook reports it; small again once the log starts over.
    log_frames: AtomicI64,
}

impl WriterLoad {
    pub(crate) fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    pub(crate) fn log_frames(&self) -> i64 {
        self.log_frames.load(Ordering::Relaxed)
    }

    /// One batch of `signups`.
    fn add(&self, signups: usize) {
        self.committed.fetch_add(signups as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }
}

/// The writer's connection with SQLite's WAL hook recording the log's
/// length in `load` after every commit (the hook replaces SQLite's
/// automatic checkpoints, which are off on this connection anyway). On drop
/// the hook is removed first; the fields, `load` among them, drop after.
struct Hooked {
    conn: rusqlite::Connection,
    load: std::sync::Arc<WriterLoad>,
}

impl Hooked {
    fn new(conn: rusqlite::Connection, load: std::sync::Arc<WriterLoad>) -> Self {
        // SAFETY: `conn` is open and used by this thread only; the pointer
        // is to `load`, which this value keeps alive until `drop`, which
        // removes the hook before the fields are dropped.
        unsafe {
            rusqlite::ffi::sqlite3_wal_hook(
                conn.handle(),
                Some(record_log_length),
                std::sync::Arc::as_ptr(&load).cast_mut().cast(),
            );
        }
        Hooked { conn, load }
    }
}

impl Drop for Hooked {
    fn drop(&mut self) {
        // SAFETY: as in `new`; after this call SQLite holds no pointer to
        // `load`.
        unsafe {
            rusqlite::ffi::sqlite3_wal_hook(self.conn.handle(), None, std::ptr::null_mut());
        }
    }
}

/// SQLite's WAL hook: called after each commit of the writer's connection
/// with the number of frames now in the log.
unsafe extern "C" fn record_log_length(
    load: *mut std::ffi::c_void,
    _db: *mut rusqlite::ffi::sqlite3,
    _name: *const std::ffi::c_char,
    frames: std::ffi::c_int,
) -> std::ffi::c_int {
    // SAFETY: `load` is the pointer `Hooked::new` registered, alive until
    // `Hooked` drops, which removes this hook first.
    let load = unsafe { &*load.cast_const().cast::<WriterLoad>() };
    load.log_frames.store(i64::from(frames), Ordering::Relaxed);
    rusqlite::ffi::SQLITE_OK
}

/// Work for the writer thread.
// Sign-ups are nearly all of it: not boxed, no allocation each.
#[allow(clippy::large_enum_variant)]
enum Job {
    /// A closure run on its connection while it holds the writer slot.
    Call(Call),
    /// One sign-up: the thread drains every sign-up waiting behind it into
    /// the same transaction, then answers each after the commit.
    Signup(NewRegistrant, crate::Reply),
}

/// What the writer thread needs to take sign-ups directly.
struct Direct {
    now: crate::NowMs,
    observer: crate::BatchObserver,
}

/// Handle to the writer thread; the thread ends when the last handle is
/// dropped.
pub(crate) struct SqliteWriter {
    jobs: mpsc::Sender<Job>,
    direct: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<Direct>>>>,
    load: std::sync::Arc<WriterLoad>,
}

impl SqliteWriter {
    pub(crate) fn open(path: &Path) -> Result<Self, String> {
        let conn = connect(path).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel::<Job>();
        let (synced, to_sync) = mpsc::channel::<Durable>();
        let direct = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = direct.clone();
        let wal = crate::sqlite_log::log_path(path);
        std::thread::Builder::new()
            .name("sqlite-sync".into())
            .spawn(move || {
                let mut log = None;
                sync_loop(to_sync, || sync_log(&wal, &mut log))
            })
            .map_err(|e| format!("cannot start the sign-up syncer: {e}"))?;
        let load = std::sync::Arc::new(WriterLoad::default());
        let counted = load.clone();
        std::thread::Builder::new()
            .name("sqlite-signups".into())
            .spawn(move || run(Hooked::new(conn, counted), rx, seen, synced))
            .map_err(|e| format!("cannot start the sign-up writer: {e}"))?;
        Ok(SqliteWriter {
            jobs: tx,
            direct,
            load,
        })
    }

    /// What the thread has done so far (sign-ups, the log's length).
    pub(crate) fn load(&self) -> &WriterLoad {
        &self.load
    }

    /// Lets callers hand sign-ups straight to the thread (`push`). `now`
    /// dates each batch; `observer` hears of each batch after its answers.
    pub(crate) fn accept_direct(&self, now: crate::NowMs, observer: crate::BatchObserver) {
        *self.direct.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::sync::Arc::new(Direct { now, observer }));
    }

    pub(crate) async fn insert(
        &self,
        batch: Vec<NewRegistrant>,
        now: i64,
    ) -> Result<Vec<InsertOutcome>, String> {
        let load = self.load.clone();
        self.call(move |conn| {
            let started = std::time::Instant::now();
            let r = insert(conn, &batch, now);
            load.add(batch.len());
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
        let job = Job::Call(Box::new(move |conn| {
            let result = f(conn).map_err(|e| e.to_string());
            Box::new(move |unsynced: Option<&str>| {
                let result = match (result, unsynced) {
                    (Ok(_), Some(why)) => Err(format!("the write-ahead log was not synced: {why}")),
                    (result, _) => result,
                };
                let _ = reply.send(result);
            })
        }));
        self.jobs
            .send(job)
            .map_err(|_| "SQLite writer stopped".to_string())?;
        answer
            .await
            .map_err(|_| "SQLite writer dropped the work".to_string())?
    }
}

impl crate::RegistrationQueue for SqliteWriter {
    fn push(&self, reg: NewRegistrant, reply: crate::Reply) {
        if let Err(mpsc::SendError(Job::Signup(_, reply))) = self.jobs.send(Job::Signup(reg, reply))
        {
            reply(Err("SQLite writer stopped".into()));
        }
    }
}

/// SQLite's checkpoints, on a thread of their own at a lower CPU priority
/// (`nice` +10, which needs no privilege): copying the log back into the
/// database is upkeep, and under a surge it must take the CPU the sign-ups
/// leave, not compete with the writer and the web workers for it.
pub(crate) struct Checkpointer {
    jobs: mpsc::Sender<Work>,
}

/// The log's length and copied part after the checkpointer's last pass:
/// while they stay the same there is nothing new to sync. Kept by its thread.
type Seen = (i64, i64);

/// A piece of work for the checkpointer's thread, on its connection.
type Work = Box<dyn FnOnce(&mut rusqlite::Connection, &mut Seen) + Send>;

impl Checkpointer {
    pub(crate) fn open(path: &Path) -> Result<Self, String> {
        let mut conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        conn.pragma_update(None, "synchronous", "full")
            .map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name("sqlite-ckpt".into())
            .spawn(move || {
                lower_priority();
                let mut seen = Seen::default();
                while let Ok(job) = rx.recv() {
                    job(&mut conn, &mut seen);
                }
            })
            .map_err(|e| format!("cannot start the checkpointer: {e}"))?;
        Ok(Checkpointer { jobs: tx })
    }

    /// Passive checkpoints, repeated while each still finds much new in the
    /// log (up to 8) once the log holds `restart_frames` or more; then, if
    /// it is close behind, one last pass holding this process's writer slot
    /// so it reaches the end and the next commit starts the log over.
    pub(crate) async fn checkpoint(&self, restart_frames: i64, tail: i64) -> Result<(), String> {
        self.run(move |conn, seen| {
            checkpoint_round(conn, restart_frames, tail, seen, &mut sync_database_file)
        })
        .await
    }

    /// Runs `work` on the checkpointer's thread and connection; its answer.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection, &mut Seen) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(move |conn: &mut rusqlite::Connection, seen: &mut Seen| {
            let _ = reply.send(work(conn, seen));
        });
        self.jobs
            .send(job)
            .map_err(|_| "SQLite checkpointer stopped".to_string())?;
        answer
            .await
            .map_err(|_| "SQLite checkpointer dropped the work".to_string())?
            .map_err(|e| e.to_string())
    }
}

impl Checkpointer {
    /// Copies the whole log into the database and truncates it to nothing,
    /// holding this process's writer slot: after personal data was erased,
    /// the log's older frames still hold the pages as they were. `Ok(false)`
    /// when a reader of another process kept it from finishing (try again).
    pub(crate) async fn empty_log(&self) -> Result<bool, String> {
        self.run(|conn, seen| {
            let _slot = crate::dialect::sqlite_writer_slot_blocking();
            let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })?;
            *seen = Seen::default();
            Ok(busy == 0)
        })
        .await
    }
}

fn checkpoint_round(
    conn: &mut rusqlite::Connection,
    restart_frames: i64,
    tail: i64,
    seen: &mut Seen,
    sync_database: &mut dyn FnMut(&rusqlite::Connection) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let started = std::time::Instant::now();
    // A pass: the log's length and how much of it is now copied.
    let pass = |conn: &rusqlite::Connection| -> rusqlite::Result<(i64, i64)> {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
    };
    let mut passes = 0;
    let mut last = 0;
    let (frames, behind) = loop {
        // A pass copies the log as long as it was when the pass began.
        let (frames, copied) = pass(conn)?;
        passes += 1;
        // Each pass copies what was written during the one before, less
        // each time: a few bring it close behind the writer.
        let new = frames - last;
        last = frames;
        // A pass syncs the database file only when it reaches the end of
        // the log, which a steady stream of sign-ups never lets it do: the
        // copied pages wait in memory until the log is started over, whose
        // last pass then syncs them all while every sign-up is held back
        // (21-83 ms at 20,000 sign-ups a second). So each pass's pages are
        // synced right after it, an upkeep round's worth at a time, on this
        // low-priority thread, and that last pass syncs only its own.
        if copied > 0 && (frames, copied) != *seen {
            sync_database(conn)?;
        }
        *seen = (frames, copied);
        if frames < restart_frames || (passes > 1 && new <= tail) || passes == 8 {
            break (frames, new);
        }
    };
    tracing::debug!(
        frames,
        passes,
        duration_us = started.elapsed().as_micros() as u64,
        "write-ahead log checkpoint"
    );
    if frames >= restart_frames && behind <= tail {
        // Under a steady stream of sign-ups the checkpoint never quite
        // catches up, so the log would only grow (and a crash would leave
        // all of it to read back). Holding this process's writer slot for a
        // last short pass lets it finish, and the next commit starts the
        // log over at its beginning.
        let waited = std::time::Instant::now();
        let _slot = crate::dialect::sqlite_writer_slot_blocking();
        let held = std::time::Instant::now();
        *seen = pass(conn)?;
        tracing::debug!(
            frames,
            behind,
            passes,
            passes_us = waited.duration_since(started).as_micros() as u64,
            slot_wait_us = held.duration_since(waited).as_micros() as u64,
            held_us = held.elapsed().as_micros() as u64,
            "write-ahead log checkpointed to its end"
        );
    }
    Ok(())
}

/// Syncs the database file (not its log) through SQLite's own handle on it:
/// a second descriptor of ours would, once closed, drop the POSIX locks
/// SQLite holds on the file for this whole process.
fn sync_database_file(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::ffi;
    let failed = |rc: i32, what: &str| {
        rusqlite::Error::SqliteFailure(ffi::Error::new(rc), Some(what.to_string()))
    };
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `handle` is this connection's open database, used by this
    // thread only; FILE_POINTER writes one pointer, SQLite's own
    // `sqlite3_file` for the main database, into `file`.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        )
    };
    if rc != ffi::SQLITE_OK {
        return Err(failed(rc, "cannot reach the database file to sync it"));
    }
    // SAFETY: a non-null `file` is owned by the connection, open while the
    // connection is (its methods are null until it is opened).
    let sync = unsafe { file.as_ref().and_then(|f| f.pMethods.as_ref()) }.and_then(|m| m.xSync);
    let Some(sync) = sync else {
        return Err(failed(ffi::SQLITE_MISUSE, "the database file is not open"));
    };
    // SAFETY: SQLite's own sync of its own file, on the thread that owns
    // the connection.
    let rc = unsafe { sync(file, ffi::SQLITE_SYNC_NORMAL) };
    if rc != ffi::SQLITE_OK {
        return Err(failed(rc, "the database file could not be synced"));
    }
    Ok(())
}

/// Lowers the calling thread's CPU priority (Linux: `nice` is per thread).
pub(crate) fn lower_priority() {
    // SAFETY: setpriority only reads its integer arguments; `who` 0 is the
    // calling thread on Linux.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if rc != 0 {
        tracing::debug!("could not lower the checkpointer's priority");
    }
}

/// A connection with the same settings as the pool's (see `SqlStore::connect`).
pub(crate) fn connect(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    // A commit here only writes the log; the syncer thread syncs it before
    // anyone is answered (`sync_loop`), so the writer never waits for the
    // disk. The pool's connections stay FULL.
    conn.pragma_update(None, "synchronous", "normal")?;
    conn.pragma_update(None, "foreign_keys", "on")?;
    // Erased personal data is overwritten with zeros, not left in freed
    // space of a page (see `SqlStore::connect`).
    conn.pragma_update(None, "secure_delete", "on")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "cache_size", -16384)?;
    conn.set_prepared_statement_cache_capacity(16);
    // Keep each statement's plan: otherwise SQLite compiles a statement
    // again whenever a value bound to a range in it changes (every claim of
    // due messages did, at ~180,000 instructions each). There are no
    // statistics here for a bound value to refine a plan with.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

fn run(
    mut hooked: Hooked,
    jobs: mpsc::Receiver<Job>,
    direct: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<Direct>>>>,
    synced: mpsc::Sender<Durable>,
) {
    let Hooked { conn, load } = &mut hooked;
    let mut later: std::collections::VecDeque<Call> = std::collections::VecDeque::new();
    let mut batch: Vec<(NewRegistrant, crate::Reply)> = Vec::with_capacity(WRITER_BATCH);
    loop {
        let job = match later.pop_front() {
            Some(call) => Job::Call(call),
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            Job::Call(call) => {
                if let Some(answer) = run_call(conn, call) {
                    to_syncer(&synced, Durable::Call(answer));
                }
            }
            Job::Signup(reg, reply) => {
                // Everything already waiting joins this transaction; other
                // work met on the way runs right after it.
                batch.push((reg, reply));
                while batch.len() < WRITER_BATCH {
                    match jobs.try_recv() {
                        Ok(Job::Signup(reg, reply)) => batch.push((reg, reply)),
                        Ok(Job::Call(call)) => later.push_back(call),
                        Err(_) => break,
                    }
                }
                let current = direct.lock().unwrap_or_else(|e| e.into_inner()).clone();
                load.add(batch.len());
                let done = run_batch(conn, &mut batch, current);
                to_syncer(&synced, Durable::Batch(done));
            }
        }
    }
}

/// Hands what the writer did to the syncer, which answers it once the log
/// is on disk.
fn to_syncer(synced: &mpsc::Sender<Durable>, done: Durable) {
    if let Err(mpsc::SendError(done)) = synced.send(done) {
        // The syncer is gone (it never stops before this thread): nobody
        // may be told their write is done without a synced log.
        done.answer(Some("the log syncer stopped"));
    }
}

/// Runs one closure while holding this process's writer slot; its answer,
/// unless it panicked (then its caller was told it failed).
fn run_call(conn: &mut rusqlite::Connection, call: Call) -> Option<Answer> {
    let _slot = writer_slot();
    // A panic in one piece of work must not stop every later sign-up:
    // its caller gets an error (its reply is dropped), the thread goes on.
    let conn_ref = &mut *conn;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || call(conn_ref))) {
        Ok(answer) => Some(answer),
        Err(_) => {
            tracing::error!(
                "SQLite writer: a piece of work panicked; its caller was told it failed"
            );
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            None
        }
    }
}

/// What the writer did, waiting for the syncer to put the log on disk
/// before anyone hears of it.
enum Durable {
    Batch(Committed),
    Call(Answer),
}

impl Durable {
    fn answer(self, unsynced: Option<&str>) {
        match self {
            Durable::Batch(c) => c.answer(unsynced),
            Durable::Call(answer) => answer(unsynced),
        }
    }
}

/// A committed (or failed) batch on its way to the syncer, which answers it
/// once the log holding it is on disk.
struct Committed {
    replies: Vec<crate::Reply>,
    result: Result<Vec<InsertOutcome>, String>,
    report: crate::BatchReport,
    started: std::time::Instant,
    direct: Option<std::sync::Arc<Direct>>,
}

impl Committed {
    /// Answers every sign-up of the batch; `unsynced` says why the log could
    /// not be made durable, and then nobody is told "received".
    fn answer(self, unsynced: Option<&str>) {
        let Committed {
            replies,
            result,
            mut report,
            started,
            direct,
        } = self;
        let result = match (result, unsynced) {
            (Ok(_), Some(why)) => Err(format!("the write-ahead log was not synced: {why}")),
            (result, _) => result,
        };
        report.duration = started.elapsed();
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    reply(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, size = report.size, "sign-up batch failed; nobody in it was told it was received");
                report.error = Some(e.clone());
                report.created = 0;
                for reply in replies {
                    reply(Err(e.clone()));
                }
            }
        }
        if let Some(d) = direct {
            (d.observer)(&report);
        }
    }
}

/// The syncer: takes everything the writer did since its last pass, syncs
/// the write-ahead log once for all of it (group commit of the fsync), and
/// answers it. Meanwhile the writer is already filling the next batch, so
/// the disk's sync and the next batch's inserts overlap, and the writer
/// never waits for the disk.
///
/// A failed sync fails every later one too, until the process restarts:
/// after a failed `fsync` the kernel may have dropped the log's unsynced
/// pages, so a later sync that succeeds would not make those frames (nor
/// anything after them in the log) durable.
fn sync_loop(done: mpsc::Receiver<Durable>, mut sync: impl FnMut() -> std::io::Result<()>) {
    let mut failed: Option<String> = None;
    while let Ok(first) = done.recv() {
        let mut pass = vec![first];
        while let Ok(more) = done.try_recv() {
            pass.push(more);
        }
        let synced = match &failed {
            Some(e) => Err(e.clone()),
            None => {
                let started = std::time::Instant::now();
                let synced = sync();
                tracing::debug!(
                    items = pass.len(),
                    duration_us = started.elapsed().as_micros() as u64,
                    "write-ahead log synced"
                );
                synced.map_err(|e| {
                    tracing::error!(
                        error = %e,
                        "cannot sync the SQLite write-ahead log; every sign-up is refused until a restart"
                    );
                    failed = Some(format!(
                        "an earlier sync of the log failed ({e}); restart the server"
                    ));
                    e.to_string()
                })
            }
        };
        for d in pass {
            d.answer(synced.as_ref().err().map(String::as_str));
        }
    }
}

/// Syncs the write-ahead log's data to disk. The log is opened once, and
/// again if the file at its path is no longer the one open (with the
/// directory synced, so a new log's name is durable too). Only the log is
/// ever opened here, never the database file: closing a second descriptor
/// of the database would drop SQLite's POSIX locks on it.
fn sync_log(wal: &Path, log: &mut Option<std::fs::File>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // While the writer's connection is open the log is never deleted, so a
    // missing log is an error, not "nothing to sync".
    let on_disk = std::fs::metadata(wal)?.ino();
    let current = match log {
        Some(f) if f.metadata()?.ino() == on_disk => f,
        _ => {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(wal)?;
            if let Some(dir) = wal.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            log.insert(f)
        }
    };
    current.sync_data()
}

/// Commits the sign-ups in `batch` in one transaction (the log written, not
/// yet synced) and returns them for the syncer to answer.
fn run_batch(
    conn: &mut rusqlite::Connection,
    batch: &mut Vec<(NewRegistrant, crate::Reply)>,
    direct: Option<std::sync::Arc<Direct>>,
) -> Committed {
    let started = std::time::Instant::now();
    let size = batch.len();
    let result = {
        let _slot = writer_slot();
        let now = direct
            .as_deref()
            .map(|d| (d.now)())
            .unwrap_or_else(crate::sql::now_ms);
        let regs: Vec<&NewRegistrant> = batch.iter().map(|(r, _)| r).collect();
        let conn_ref = &mut *conn;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            insert_refs(conn_ref, &regs, now)
        })) {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                Err("the sign-up batch panicked".to_string())
            }
        }
    };
    let duration = started.elapsed();
    tracing::debug!(
        size,
        duration_us = duration.as_micros() as u64,
        "sign-up batch"
    );
    let report = crate::BatchReport {
        size,
        created: match &result {
            Ok(outcomes) => outcomes
                .iter()
                .filter(|o| matches!(o, InsertOutcome::Created(_)))
                .count(),
            Err(_) => 0,
        },
        duration,
        error: None,
    };
    Committed {
        replies: batch.drain(..).map(|(_, reply)| reply).collect(),
        result,
        report,
        started,
        direct,
    }
}

/// This process's SQLite writer slot, logging a wait of a millisecond or more.
fn writer_slot() -> tokio::sync::OwnedMutexGuard<()> {
    let started = std::time::Instant::now();
    let slot = crate::dialect::sqlite_writer_slot_blocking();
    let waited = started.elapsed();
    if waited.as_millis() >= 1 {
        tracing::debug!(
            duration_us = waited.as_micros() as u64,
            "SQLite writer waited for the writer slot"
        );
    }
    slot
}

/// Claims due messages of one channel (see `Store::claim_messages`).
pub(crate) fn claim_messages(
    conn: &mut rusqlite::Connection,
    sqls: [&str; 3],
    channel: &str,
    worker: &str,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> rusqlite::Result<Vec<crate::records::OutboxMessage>> {
    let mut out = Vec::new();
    for sql in sqls {
        let wanted = limit - out.len() as i64;
        if wanted <= 0 {
            break;
        }
        let mut stmt = conn.prepare_cached(sql)?;
        bind(
            &mut stmt,
            &[&worker, &(now + lease_ms), &channel, &now, &wanted],
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
        // Each statement's in the order they were queued; the statements in
        // their order (lapsed leases, then by priority).
        let start = out.len();
        for message in rows {
            out.push(message?);
        }
        out[start..].sort_by_key(|m| m.id);
    }
    Ok(out)
}

/// Records that a message was handed over (see `Store::message_sent`).
pub(crate) fn message_sent(
    conn: &mut rusqlite::Connection,
    id: i64,
    worker: &str,
    now: i64,
) -> rusqlite::Result<()> {
    use crate::macros::{AUDIT, COUNT_INVITED, MESSAGE_SENT, START_INVITATION};
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
                execute(&mut *tx.prepare_cached(COUNT_INVITED)?, &[&inv])?;
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
    insert_refs(conn, &batch.iter().collect::<Vec<_>>(), now)
}

fn insert_refs(
    conn: &mut rusqlite::Connection,
    batch: &[&NewRegistrant],
    now: i64,
) -> rusqlite::Result<Vec<InsertOutcome>> {
    let today = today_ymd(now);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        // No RETURNING: SQLite runs RETURNING as a trigger, which opens a
        // statement journal copying every page the insert touches. Whether
        // a row was added is the number of rows changed; its id the last
        // rowid inserted.
        let mut registrant = Repeated::prepare(
            &tx,
            &format!(
                "INSERT INTO registrants ({REGISTRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15) \
                 ON CONFLICT (nid_hash) DO NOTHING"
            ),
        )?;
        let mut center = Repeated::insert(&tx, "registrant_centers", CENTER_COLUMNS, "$1, $2")?;
        let mut slot = Repeated::insert(
            &tx,
            "registrant_availability",
            SLOT_COLUMNS,
            "$1, $2, $3, $4",
        )?;
        let mut token = Repeated::insert(&tx, "tokens", TOKEN_COLUMNS, "$1, $2, $3, $4, $5")?;
        let mut message = Repeated::insert(
            &tx,
            "outbox",
            OUTBOX_COLUMNS,
            "$1, $2, $3, $4, $5, $6, $7, 'queued', $8, $8",
        )?;
        let mut audit = Repeated::insert(
            &tx,
            "audit_log",
            AUDIT_COLUMNS,
            "$1, 'public', 'registrant.created', 'registrant', $2, $3",
        )?;
        for r in batch {
            let added = registrant.execute(&[
                &r.nid_hash.0,
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
            ])?;
            if added == 0 {
                outcomes.push(InsertOutcome::Duplicate);
                continue;
            }
            let id = tx.last_insert_rowid();
            for c in &r.centers {
                center.execute(&[&id, &c])?;
            }
            for (day, from, to) in &r.availability {
                slot.execute(&[&id, &day, &from, &to])?;
            }
            token.execute(&[
                &r.confirm_hash,
                &"confirm",
                &id,
                &now,
                &r.confirm_expires_at,
            ])?;
            token.execute(&[&r.me_hash, &"me", &id, &now, &r.me_expires_at])?;
            if let Some(m) = &r.message {
                message.execute(&[
                    &m.reference,
                    &m.channel,
                    &m.kind,
                    &id,
                    &m.recipient,
                    &m.subject,
                    &m.body,
                    &now,
                ])?;
            }
            audit.execute(&[&now, &id.to_string(), &created_detail(r)])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::{Arc, Mutex};

    /// Migrated with the migrations the pool applies, in order.
    fn migrated(dir: &Path) -> rusqlite::Connection {
        let conn = connect(&dir.join("db")).unwrap();
        for m in sqlx::migrate!("./migrations/sqlite").migrations.iter() {
            conn.execute_batch(m.sql.as_str()).unwrap();
        }
        conn
    }

    #[test]
    fn a_claim_runs_without_being_compiled_again() {
        // SQLite may mark a statement to be compiled again whenever a value
        // bound to it changes (as `now` does at every claim); with the
        // planner's stability guarantee it keeps the plan it made.
        let dir = tempfile::tempdir().unwrap();
        let mut conn = migrated(dir.path());
        for i in 0..6 {
            conn.execute(
                "INSERT INTO outbox (reference, channel, kind, recipient, body, status, attempts, next_attempt_at, created_at) \
                 VALUES (?1, 'email', 'confirmation', 'a@example.org', 'b', 'queued', 0, ?2, 0)",
                rusqlite::params![format!("r{i}"), i * 10],
            )
            .unwrap();
        }
        let sqls = <sqlx::SqlitePool as crate::dialect::Dialect>::CLAIM_MESSAGES;
        let mut claimed = 0;
        for now in [5, 15, 25, 35] {
            claimed += claim_messages(&mut conn, sqls, "email", "w", now, 1_000, 1)
                .unwrap()
                .len();
        }
        assert_eq!(claimed, 4, "one due message claimed each time");
        for sql in sqls {
            let stmt = conn.prepare_cached(sql).unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
        }
    }

    /// A sign-up whose national-ID key and tokens are told apart by `i`.
    fn signup(i: usize) -> NewRegistrant {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&(i as u64).to_be_bytes());
        NewRegistrant {
            nid_hash: crate::records::NidKey(key),
            country: "BE".into(),
            birth_ymd: 19_850_730,
            title: None,
            first_name: "A".into(),
            last_name: "B".into(),
            email: "a@b.be".into(),
            phone: None,
            language: "fr".into(),
            centers: vec![],
            availability: vec![(0, 540, 720)],
            confirm_hash: format!("c{i}"),
            confirm_expires_at: 10_000,
            me_hash: format!("m{i}"),
            me_expires_at: 10_000,
            message: None,
            confirmed_at: None,
        }
    }

    #[test]
    fn a_surge_is_committed_in_batches_of_at_most_writer_batch() {
        let dir = tempfile::tempdir().unwrap();
        drop(migrated(dir.path()));
        let writer = SqliteWriter::open(&dir.path().join("db")).unwrap();
        let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
        let seen = sizes.clone();
        writer.accept_direct(
            Arc::new(|| 1),
            Arc::new(move |r: &crate::BatchReport| seen.lock().unwrap().push(r.size)),
        );
        // The thread is held until the whole surge waits behind it.
        let (release, held) = mpsc::channel::<()>();
        writer
            .jobs
            .send(Job::Call(Box::new(move |_| {
                held.recv().unwrap();
                Box::new(|_| {})
            })))
            .unwrap();
        let n = 2 * WRITER_BATCH + 100;
        let (answered, answers) = mpsc::channel();
        for i in 0..n {
            let answered = answered.clone();
            crate::RegistrationQueue::push(
                &writer,
                signup(i),
                Box::new(move |outcome| answered.send(outcome).unwrap()),
            );
        }
        release.send(()).unwrap();
        for _ in 0..n {
            let outcome = answers.recv().unwrap().unwrap();
            assert!(matches!(outcome, InsertOutcome::Created(_)), "{outcome:?}");
        }
        // Each batch is reported right after its answers.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while sizes.lock().unwrap().iter().sum::<usize>() < n {
            assert!(std::time::Instant::now() < deadline, "{sizes:?}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(*sizes.lock().unwrap(), [WRITER_BATCH, WRITER_BATCH, 100]);
        assert_eq!(writer.load().committed(), n as u64);
        assert_eq!(writer.load().batches(), 3);
    }

    #[test]
    fn the_writer_knows_the_logs_length_after_each_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let load = Arc::new(WriterLoad::default());
        let hooked = Hooked::new(connect(&path).unwrap(), load.clone());
        let other = connect(&path).unwrap();
        // The log's length as a passive checkpoint of another connection
        // finds it (its second column).
        let frames = || {
            other
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
                .unwrap()
        };
        assert_eq!(load.log_frames(), 0, "nothing committed yet");
        hooked
            .conn
            .execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        let first = load.log_frames();
        assert!(first > 0);
        assert_eq!(first, frames());
        for x in 0..50 {
            hooked
                .conn
                .execute("INSERT INTO t (v) VALUES (?1)", [format!("{x:0>500}")])
                .unwrap();
        }
        assert!(load.log_frames() > first);
        assert_eq!(load.log_frames(), frames());
        // Dropped, the connection gives back the hook's hold on `load`.
        assert_eq!(Arc::strong_count(&load), 2);
        drop(hooked);
        assert_eq!(Arc::strong_count(&load), 1);
    }

    #[test]
    fn a_missing_log_is_an_error_not_nothing_to_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = None;
        let err = sync_log(&dir.path().join("db-wal"), &mut log).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(log.is_none());
    }

    #[test]
    fn the_log_is_opened_once_and_again_when_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("db-wal");
        std::fs::write(&wal, b"frames").unwrap();
        let mut log = None;
        sync_log(&wal, &mut log).unwrap();
        let first = log.as_ref().unwrap().metadata().unwrap().ino();
        assert_eq!(first, std::fs::metadata(&wal).unwrap().ino());
        sync_log(&wal, &mut log).unwrap();
        assert_eq!(log.as_ref().unwrap().metadata().unwrap().ino(), first);
        // A new file under the same name (the old one still open here).
        let next = dir.path().join("next");
        std::fs::write(&next, b"other frames").unwrap();
        std::fs::rename(&next, &wal).unwrap();
        sync_log(&wal, &mut log).unwrap();
        let now = log.as_ref().unwrap().metadata().unwrap().ino();
        assert_ne!(now, first);
        assert_eq!(now, std::fs::metadata(&wal).unwrap().ino());
    }

    #[test]
    fn the_writer_leaves_the_sync_to_the_syncer() {
        let dir = tempfile::tempdir().unwrap();
        let conn = connect(&dir.path().join("db")).unwrap();
        let level: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            level, 1,
            "NORMAL: a commit writes the log, the syncer syncs it"
        );
    }

    /// Runs the syncer over `work` with a sync that logs itself in `events`
    /// (and fails when `fails`), and returns the events in order.
    fn sync_pass(work: Vec<Durable>, events: Arc<Mutex<Vec<String>>>, fails: bool) {
        let (tx, rx) = mpsc::channel();
        for w in work {
            tx.send(w).unwrap();
        }
        drop(tx);
        sync_loop(rx, || {
            events.lock().unwrap().push("sync".into());
            if fails {
                Err(std::io::Error::other("disk full"))
            } else {
                Ok(())
            }
        });
    }

    fn logged_call(events: &Arc<Mutex<Vec<String>>>) -> Durable {
        let events = events.clone();
        Durable::Call(Box::new(move |unsynced| {
            events
                .lock()
                .unwrap()
                .push(format!("call answered, unsynced: {unsynced:?}"));
        }))
    }

    #[test]
    fn the_syncer_answers_calls_and_batches_only_after_one_sync() {
        let events: Arc<Mutex<Vec<String>>> = Arc::default();
        let reports = Arc::default();
        let (batch, answers) = committed(
            Ok(vec![InsertOutcome::Created(7), InsertOutcome::Duplicate]),
            reports,
        );
        sync_pass(
            vec![
                logged_call(&events),
                Durable::Batch(batch),
                logged_call(&events),
            ],
            events.clone(),
            false,
        );
        assert_eq!(
            *events.lock().unwrap(),
            [
                "sync",
                "call answered, unsynced: None",
                "call answered, unsynced: None"
            ]
        );
        assert_eq!(answers.lock().unwrap().len(), 2);
        assert!(answers.lock().unwrap().iter().all(|a| a.is_ok()));
    }

    #[test]
    fn a_failed_sync_fails_every_call_and_batch_of_its_pass() {
        let events: Arc<Mutex<Vec<String>>> = Arc::default();
        let reports = Arc::default();
        let (batch, answers) = committed(
            Ok(vec![InsertOutcome::Created(7), InsertOutcome::Duplicate]),
            reports,
        );
        sync_pass(
            vec![Durable::Batch(batch), logged_call(&events)],
            events.clone(),
            true,
        );
        assert_eq!(
            *events.lock().unwrap(),
            ["sync", "call answered, unsynced: Some(\"disk full\")"]
        );
        let answers = answers.lock().unwrap();
        assert_eq!(answers.len(), 2);
        assert!(
            answers
                .iter()
                .all(|a| a.as_ref().is_err_and(|e| e.contains("disk full")))
        );
    }

    /// A database in write-ahead-log mode whose log holds `rows` inserts not
    /// yet checkpointed, and a second connection to checkpoint it with.
    fn logged_database(
        dir: &tempfile::TempDir,
        rows: i64,
    ) -> (rusqlite::Connection, rusqlite::Connection) {
        let path = dir.path().join("db");
        let writer = connect(&path).unwrap();
        writer
            .execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        for x in 0..rows {
            writer
                .execute("INSERT INTO t (v) VALUES (?1)", [format!("{x:0>500}")])
                .unwrap();
        }
        (writer, connect(&path).unwrap())
    }

    #[test]
    fn each_pass_that_copied_pages_syncs_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut ckpt) = logged_database(&dir, 200);
        let mut seen = (0, 0);
        let syncs = std::cell::Cell::new(0);
        let mut count = |_: &rusqlite::Connection| -> rusqlite::Result<()> {
            syncs.set(syncs.get() + 1);
            Ok(())
        };
        checkpoint_round(&mut ckpt, i64::MAX, 1024, &mut seen, &mut count).unwrap();
        assert_eq!(syncs.get(), 1, "one pass copied the log: one sync after it");
        // Nothing new in the log: nothing copied, nothing to sync.
        checkpoint_round(&mut ckpt, i64::MAX, 1024, &mut seen, &mut count).unwrap();
        assert_eq!(syncs.get(), 1);
        writer
            .execute("INSERT INTO t (v) VALUES ('more')", [])
            .unwrap();
        checkpoint_round(&mut ckpt, i64::MAX, 1024, &mut seen, &mut count).unwrap();
        assert_eq!(syncs.get(), 2);
    }

    #[test]
    fn a_failed_sync_of_the_database_file_fails_the_round() {
        let dir = tempfile::tempdir().unwrap();
        let (_writer, mut ckpt) = logged_database(&dir, 10);
        let mut failing = |_: &rusqlite::Connection| -> rusqlite::Result<()> {
            Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
                Some("disk gone".into()),
            ))
        };
        let err =
            checkpoint_round(&mut ckpt, i64::MAX, 1024, &mut (0, 0), &mut failing).unwrap_err();
        assert!(err.to_string().contains("disk gone"), "{err}");
    }

    #[test]
    fn the_database_file_can_be_synced_through_sqlites_own_handle() {
        let dir = tempfile::tempdir().unwrap();
        let (_writer, ckpt) = logged_database(&dir, 10);
        ckpt.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
            .unwrap();
        sync_database_file(&ckpt).unwrap();
    }

    #[test]
    fn the_checkpointer_runs_at_a_lower_priority() {
        let dir = tempfile::tempdir().unwrap();
        let _c = Checkpointer::open(&dir.path().join("db")).unwrap();
        // The nice value of this process's thread named sqlite-ckpt
        // (field 19 of its stat), once it has started.
        let nice = || {
            std::fs::read_dir("/proc/self/task").unwrap().find_map(|t| {
                let t = t.unwrap().path();
                let comm = std::fs::read_to_string(t.join("comm")).unwrap();
                (comm.trim() == "sqlite-ckpt").then(|| {
                    let stat = std::fs::read_to_string(t.join("stat")).unwrap();
                    let after = stat.rsplit_once(')').unwrap().1;
                    after
                        .split_whitespace()
                        .nth(16)
                        .unwrap()
                        .parse::<i32>()
                        .unwrap()
                })
            })
        };
        let mut seen = None;
        for _ in 0..100 {
            seen = nice();
            if seen == Some(10) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(seen, Some(10));
    }

    #[test]
    fn after_a_failed_sync_every_later_pass_fails_too() {
        let (tx, rx) = mpsc::channel();
        let calls = Arc::new(Mutex::new(0));
        let counted = calls.clone();
        let syncer = std::thread::spawn(move || {
            sync_loop(rx, || {
                *counted.lock().unwrap() += 1;
                // The disk fails once, then "works" again.
                if *counted.lock().unwrap() == 1 {
                    Err(std::io::Error::other("EIO"))
                } else {
                    Ok(())
                }
            })
        });
        let (answers, heard) = mpsc::channel();
        for _ in 0..2 {
            let answers = answers.clone();
            tx.send(Durable::Call(Box::new(move |unsynced| {
                answers.send(unsynced.map(str::to_string)).unwrap();
            })))
            .unwrap();
            // One pass each: the next is sent once this one is answered.
            let unsynced = heard.recv().unwrap();
            assert!(
                unsynced.as_deref().is_some_and(|e| e.contains("EIO")),
                "{unsynced:?}"
            );
        }
        drop(tx);
        syncer.join().unwrap();
        assert_eq!(
            *calls.lock().unwrap(),
            1,
            "no sync is tried after a failure"
        );
    }

    type Answers = Arc<Mutex<Vec<Result<InsertOutcome, String>>>>;

    fn committed(
        result: Result<Vec<InsertOutcome>, String>,
        reports: Arc<Mutex<Vec<crate::BatchReport>>>,
    ) -> (Committed, Answers) {
        let answers: Answers = Arc::default();
        let replies = (0..2)
            .map(|_| {
                let answers = answers.clone();
                Box::new(move |o| answers.lock().unwrap().push(o)) as crate::Reply
            })
            .collect();
        let observer: crate::BatchObserver =
            Arc::new(move |r: &crate::BatchReport| reports.lock().unwrap().push(r.clone()));
        let c = Committed {
            replies,
            result,
            report: crate::BatchReport {
                size: 2,
                created: 1,
                duration: std::time::Duration::ZERO,
                error: None,
            },
            started: std::time::Instant::now(),
            direct: Some(Arc::new(Direct {
                now: Arc::new(|| 0),
                observer,
            })),
        };
        (c, answers)
    }

    #[test]
    fn a_synced_batch_answers_each_outcome_in_order() {
        let reports = Arc::default();
        let (c, answers) = committed(
            Ok(vec![InsertOutcome::Created(7), InsertOutcome::Duplicate]),
            Arc::clone(&reports),
        );
        c.answer(None);
        let answers = answers.lock().unwrap();
        assert!(matches!(
            answers[..],
            [Ok(InsertOutcome::Created(7)), Ok(InsertOutcome::Duplicate)]
        ));
        let reports = reports.lock().unwrap();
        assert_eq!((reports.len(), reports[0].created), (1, 1));
        assert!(reports[0].error.is_none());
    }

    #[test]
    fn a_batch_whose_log_was_not_synced_tells_nobody_it_was_received() {
        let reports = Arc::default();
        let (c, answers) = committed(
            Ok(vec![InsertOutcome::Created(7), InsertOutcome::Duplicate]),
            Arc::clone(&reports),
        );
        c.answer(Some("disk full"));
        let answers = answers.lock().unwrap();
        assert_eq!(answers.len(), 2);
        for a in answers.iter() {
            let e = a.as_ref().unwrap_err();
            assert!(e.contains("not synced") && e.contains("disk full"), "{e}");
        }
        let reports = reports.lock().unwrap();
        assert_eq!(reports[0].created, 0);
        assert!(reports[0].error.as_deref().unwrap().contains("disk full"));
    }
}
