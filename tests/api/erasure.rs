//! Erased means erased: after a withdrawal and a clean stop, none of the
//! person's name, e-mail address or phone number is left in the database's
//! files, the server's log or the outbox (an SMTP server's refusal that
//! echoed the address included). The real binary, a real SMTP server.

use crate::helpers::*;
use crate::smtp::{aiosmtpd_available, free_port, start_sink};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every file under `dir`, recursively, but `skip`.
fn files(dir: &std::path::Path, skip: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path == skip {
            continue;
        }
        if path.is_dir() {
            files(&path, skip, out);
        } else {
            out.push(path);
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What must not be found anywhere once the person has withdrawn.
const FIRST: &str = "Zoltanique";
const LAST: &str = "Quixbyrnell";
const EMAIL: &str = "busy.zq7x@example.be";
const PHONE: &str = "+32470987654";

/// The places holding one of the person's values, as "file: value".
fn leaks(tmp: &std::path::Path, outbox: &std::path::Path) -> Vec<String> {
    let mut all = Vec::new();
    files(tmp, outbox, &mut all);
    let mut found = Vec::new();
    for path in all {
        let bytes = std::fs::read(&path).unwrap_or_default();
        for needle in [FIRST, LAST, EMAIL, "busy.zq7x", "470987654", &be_id(77)] {
            if contains(&bytes, needle) {
                found.push(format!("{}: {needle}", path.display()));
            }
        }
    }
    found
}

#[tokio::test]
async fn a_withdrawn_person_leaves_nothing_in_the_files_the_log_or_the_outbox() {
    if !require(aiosmtpd_available(), "python3 with aiosmtpd") {
        return;
    }
    standby::init_tls();
    let smtp = free_port();
    let sink = start_sink(smtp).await;
    let tmp = tempfile::tempdir().unwrap();
    let database = fresh_database_url(tmp.path()).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(tmp.path().join("server.log")).unwrap();
    let outbox = tmp.path().join("outbox");
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_standby"))
            .current_dir(tmp.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STANDBY_SECRET", "erasure-test-secret-0123456789abcdef012")
            .env("STANDBY_EMAIL", format!("smtp://127.0.0.1:{smtp}"))
            .env("STANDBY_SMS", "file:outbox")
            .env("STANDBY_CLIENT_RATE", "0")
            // The most the log ever says, and a laid-out log to empty.
            .env("STANDBY_LOG", "debug")
            .env("STANDBY_SQLITE_WAL_MB", "4")
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database",
                &database,
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut person = registration(77);
    person["first_name"] = json!(FIRST);
    person["last_name"] = json!(LAST);
    person["email"] = json!(EMAIL);
    person["phone"] = json!(PHONE);
    let r = client
        .post(format!("{base}/api/v1/registrations"))
        .json(&person)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Refused once with a 450 echoing the address, then taken.
    let mails = wait_for_files(sink.dir.path(), "eml", 1).await;
    let confirm = find_link(&mails[0], "/confirm/");
    assert_eq!(client.post(&confirm).send().await.unwrap().status(), 200);
    let me = find_link(&mails[0], "/me/").replace("/me/", "/api/v1/me/");
    let (_, export) = {
        let r = client.get(format!("{me}/export")).send().await.unwrap();
        (r.status(), r.json::<serde_json::Value>().await.unwrap())
    };
    let confirmation = &export["messages"][0];
    assert_eq!(confirmation["status"], "sent", "{export}");
    assert_eq!(confirmation["attempts"], 2, "refused once: {export}");
    assert!(confirmation["sent_at"].is_string(), "{export}");
    assert_eq!(client.delete(&me).send().await.unwrap().status(), 200);
    // The upkeep empties the write-ahead log after an erasure (a quarter
    // of a second); then a clean stop.
    for _ in 0..100 {
        if leaks(tmp.path(), &outbox).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut stopped = false;
    for _ in 0..200 {
        if server.0.try_wait().unwrap().is_some() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stopped, "the server stops on SIGTERM");
    let log = std::fs::read_to_string(tmp.path().join("server.log")).unwrap();
    assert!(
        log.contains("<address>"),
        "the refusal was logged, its address masked: {log}"
    );
    assert_eq!(leaks(tmp.path(), &outbox), Vec::<String>::new());
    if let Some(_pg) = pg_admin_url() {
        // PostgreSQL's files are the server's: every row of every table, as text.
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&database).await.unwrap();
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert!(tables.len() > 5, "{tables:?}");
        for table in tables {
            for needle in [FIRST, LAST, "busy.zq7x", "470987654"] {
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT COUNT(*) FROM {table} t WHERE CAST(t AS TEXT) LIKE $1"
                )))
                .bind(format!("%{needle}%"))
                .fetch_one(&mut conn)
                .await
                .unwrap();
                assert_eq!(n, 0, "{needle} in {table}");
            }
        }
    } else {
        assert!(tmp.path().join("standby.db").exists());
    }
}
