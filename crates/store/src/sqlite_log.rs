//! SQLite's write-ahead log laid out before a surge needs it.
//!
//! Every commit appends its pages to the log file, which under a surge grows
//! by hundreds of megabytes (6.5 KB per sign-up). Writing past the end of a
//! file costs the kernel more than writing over what is there: for each
//! 4 KiB it allocates and zeroes a page-cache page and reserves a block
//! (writing the log was 40 % of the sign-up writer's time, most of it there).
//! PostgreSQL avoids the same cost by preallocating its log segments. Here
//! the log is extended with zeros once, at start, on a thread of its own;
//! SQLite then writes its frames over them: 11-14 % less server CPU per
//! sign-up and 13-16 % more sign-ups a second at 1,000 connections
//! (BENCHMARKS.md, ninth session).
//!
//! Zeros after the last frame are never read as frames: recovery stops at
//! the first frame whose salt is not the log header's, and a zeroed frame's
//! is 0. The zeros are only ever appended after what SQLite has written,
//! while holding its write lock, so no frame is overwritten.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Zeros written per turn of the write lock (a few milliseconds of writing).
const CHUNK: u64 = 4 << 20;

/// How much of the log to lay out when its file system has `free` bytes
/// left: what was asked, but never more than a quarter of the free space.
pub(crate) fn log_target(requested: u64, free: u64) -> u64 {
    requested.min(free / 4)
}

/// The log file beside the database at `db`.
pub(crate) fn log_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Appends zeros to the log until it is `target` bytes long, a chunk at a
/// time. Each chunk is written while holding this process's writer slot and
/// SQLite's write lock (`BEGIN IMMEDIATE` on `conn`, which also keeps other
/// processes from appending), then synced outside the lock, so the first
/// commits of a surge never have to write the zeros out with their own.
/// Returns how many bytes were added.
pub(crate) fn lay_out(conn: &rusqlite::Connection, db: &Path, target: u64) -> std::io::Result<u64> {
    let wal = log_path(db);
    // The log exists once a connection has read the database.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .map_err(std::io::Error::other)?;
    let zeros = vec![0u8; 1 << 20];
    let mut added = 0;
    loop {
        let step = {
            let _slot = crate::dialect::sqlite_writer_slot_blocking();
            conn.execute_batch("BEGIN IMMEDIATE")
                .map_err(std::io::Error::other)?;
            // Opened again each turn: SQLite may have replaced the file.
            let step = append_zeros(&wal, target, &zeros);
            conn.execute_batch("ROLLBACK")
                .map_err(std::io::Error::other)?;
            step?
        };
        let Some((file, written)) = step else {
            return Ok(added);
        };
        file.sync_data()?;
        added += written;
    }
}

/// Under the write lock: one chunk of zeros after the log's end, or `None`
/// once it is `target` long. A failed write (a full disk) is undone.
fn append_zeros(
    wal: &Path,
    target: u64,
    zeros: &[u8],
) -> std::io::Result<Option<(std::fs::File, u64)>> {
    let file = std::fs::OpenOptions::new().write(true).open(wal)?;
    let len = file.metadata()?.len();
    if len >= target {
        return Ok(None);
    }
    let end = target.min(len + CHUNK);
    let mut at = len;
    while at < end {
        let n = (end - at).min(zeros.len() as u64) as usize;
        if let Err(e) = file.write_all_at(&zeros[..n], at) {
            let _ = file.set_len(len);
            return Err(e);
        }
        at += n as u64;
    }
    Ok(Some((file, end - len)))
}

/// Free bytes on the file system holding `path` (for an unprivileged user).
pub(crate) fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path; statvfs fills `st` on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so `st` is initialised.
    let st = unsafe { st.assume_init() };
    // Their widths differ between platforms; u64 here.
    #[allow(clippy::unnecessary_cast)]
    let (blocks, size) = (st.f_bavail as u64, st.f_frsize as u64);
    Ok(blocks.saturating_mul(size))
}

/// Lays the log out to `requested` bytes (less on a file system short of
/// space) on a thread of its own; answers with the bytes added. Not at a
/// lower priority, unlike the checkpointer: it holds the writer slot while
/// it writes a chunk, and a holder that others keep off the CPU would keep
/// every sign-up waiting with it.
pub(crate) async fn lay_out_in_background(db: PathBuf, requested: u64) -> Result<u64, String> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sqlite-log".into())
        .spawn(move || {
            let result = free_bytes(&db)
                .and_then(|free| {
                    let conn = crate::sqlite_writer::connect(&db).map_err(std::io::Error::other)?;
                    lay_out(&conn, &db, log_target(requested, free))
                })
                .map_err(|e| format!("cannot lay out the write-ahead log: {e}"));
            let _ = reply.send(result);
        })
        .map_err(|e| format!("cannot start laying out the write-ahead log: {e}"))?;
    answer
        .await
        .map_err(|_| "laying out the write-ahead log stopped".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite_writer::connect;

    fn rows(conn: &rusqlite::Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    fn insert(conn: &rusqlite::Connection, n: usize) {
        for x in 0..n {
            conn.execute("INSERT INTO t (v) VALUES (?1)", [format!("{x:0>900}")])
                .unwrap();
        }
    }

    /// A database in `dir` with a table `t` and `n` rows, all still in its
    /// log (no checkpoint): its path and the connection that wrote them.
    fn logged(dir: &tempfile::TempDir, n: usize) -> (PathBuf, rusqlite::Connection) {
        let db = dir.path().join("db");
        let conn = connect(&db).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        insert(&conn, n);
        (db, conn)
    }

    fn log_len(db: &Path) -> u64 {
        std::fs::metadata(log_path(db)).unwrap().len()
    }

    #[test]
    fn at_most_a_quarter_of_the_free_space_is_laid_out() {
        assert_eq!(log_target(1 << 30, 100 << 30), 1 << 30);
        assert_eq!(log_target(1 << 30, 1 << 30), 256 << 20);
        assert_eq!(log_target(1 << 30, 0), 0);
        assert!(free_bytes(Path::new("db")).unwrap() > 0);
    }

    #[test]
    fn zeros_are_appended_after_the_log_and_every_commit_before_and_after_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (db, writer) = logged(&dir, 50);
        let before = std::fs::read(log_path(&db)).unwrap();
        let target = before.len() as u64 + CHUNK + 12_345;

        let added = lay_out(&connect(&db).unwrap(), &db, target).unwrap();
        assert_eq!(added, target - before.len() as u64);
        let after = std::fs::read(log_path(&db)).unwrap();
        assert_eq!(after.len() as u64, target);
        assert_eq!(&after[..before.len()], &before[..], "no frame was touched");
        assert!(after[before.len()..].iter().all(|&b| b == 0));

        // New commits go over the zeros; a copy taken without closing
        // anything (as after kill -9) recovers every one of them.
        insert(&writer, 200);
        assert_eq!(log_len(&db), target, "the log grew instead of being reused");
        let copy = dir.path().join("copy");
        std::fs::copy(&db, &copy).unwrap();
        std::fs::copy(log_path(&db), log_path(&copy)).unwrap();
        assert_eq!(rows(&connect(&copy).unwrap()), 250);
        assert_eq!(rows(&writer), 250);
    }

    #[test]
    fn a_log_already_that_long_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (db, conn) = logged(&dir, 20);
        let len = log_len(&db);
        assert_eq!(lay_out(&conn, &db, len / 2).unwrap(), 0);
        assert_eq!(log_len(&db), len);
        let target = len + 3 * CHUNK;
        assert_eq!(lay_out(&conn, &db, target).unwrap(), 3 * CHUNK);
        assert_eq!(lay_out(&conn, &db, target).unwrap(), 0, "already laid out");
        assert_eq!(log_len(&db), target);
        assert_eq!(rows(&conn), 20);
    }

    #[test]
    fn nothing_is_appended_while_another_connection_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (db, other) = logged(&dir, 0);
        let len = log_len(&db);
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let conn = connect(&db).unwrap();
        conn.busy_timeout(std::time::Duration::ZERO).unwrap();
        let err = lay_out(&conn, &db, len + CHUNK).unwrap_err();
        assert!(err.to_string().contains("locked"), "{err}");
        assert_eq!(log_len(&db), len, "the log was extended under a writer");
        other.execute_batch("COMMIT").unwrap();
        assert_eq!(lay_out(&conn, &db, len + CHUNK).unwrap(), CHUNK);
    }
}
