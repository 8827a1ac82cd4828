//! The `standby` binary: exit codes, configuration errors, user add, demo.

use crate::helpers::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn standby(tmp: &std::path::Path, db: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_standby"));
    c.current_dir(tmp)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db)
        .env("STANDBY_SECRET", "cli-test-secret-0123456789abcdef0123456")
        .env("STANDBY_EMAIL", "file:outbox")
        // Real time: a run at night must not wait for the quiet hours to end.
        .env("STANDBY_QUIET_HOURS", "none")
        // A server here lays out a small write-ahead log, not the default GiB.
        .env("STANDBY_SQLITE_WAL_MB", "4");
    c
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_setting() {
    let tmp = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("STANDBY_COUNTRY", "FR"),
        ("STANDBY_EMAIL_RATE", "0"),
        ("DATABASE_URL", "mysql://x"),
        ("STANDBY_LISTEN", "here"),
        ("STANDBY_SQLITE_WAL_MB", "a lot"),
        // Secrets shorter than 32 bytes.
        ("STANDBY_SECRET", "0123456789abcdef0123456789abcde"),
        ("STANDBY_RECEIPT_SECRET", "short-receipt-secret"),
        ("STANDBY_METRICS_TOKEN", "short-token"),
        ("STANDBY_SECRET_FILE", "/nonexistent/standby.key"),
    ] {
        let mut command = standby(tmp.path(), "sqlite://t.db");
        if var == "STANDBY_SECRET_FILE" {
            command.env_remove("STANDBY_SECRET");
        }
        let out = command.env(var, value).arg("migrate").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains("WARN")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains(var), "{err}");
    }
    let out = standby(tmp.path(), "sqlite://t.db")
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = standby(tmp.path(), "postgres://localhost/x")
        .env_remove("STANDBY_SECRET")
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("STANDBY_SECRET")
    );
}

#[tokio::test]
async fn migrate_user_add_and_demo() {
    let tmp = tempfile::tempdir().unwrap();
    let db = fresh_database_url(tmp.path()).await;
    let out = standby(tmp.path(), &db).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let add = |args: &[&str], password: &str| {
        let mut child = standby(tmp.path(), &db)
            .args(["user", "add"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = add(
        &["--email", "Boss@Example.be", "--role", "admin"],
        "a long enough password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = add(
        &["--email", "boss@example.be", "--role", "admin"],
        "a long enough password\n",
    );
    assert_eq!(out.status.code(), Some(2), "duplicate e-mail");
    let out = add(
        &["--email", "nurse@example.be", "--role", "staff"],
        "a long enough password\n",
    );
    assert_eq!(out.status.code(), Some(2), "staff needs a centre");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--center"));
    let out = add(
        &["--email", "nurse@example.be", "--role", "admin"],
        "short\n",
    );
    assert_eq!(out.status.code(), Some(2));

    let out = standby(tmp.path(), &db)
        .args(["demo", "--registrants", "40"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("admin@standby.test") && text.contains("staff1@standby.test"));
    let store = standby::open_store(&db).await.unwrap();
    let stats = standby_store::Store::stats(store.as_ref()).await.unwrap();
    assert_eq!(stats.registered, 40);
    assert!(stats.confirmed > 20 && stats.doses_available > 0);
    assert_eq!(
        standby_store::Store::list_centers(store.as_ref())
            .await
            .unwrap()
            .len(),
        5
    );
    // The demo password printed works.
    let line = text
        .lines()
        .find(|l| l.contains("admin@standby.test"))
        .unwrap();
    let password = line.split_whitespace().last().unwrap();
    let user = standby_store::Store::user_by_email(store.as_ref(), "admin@standby.test")
        .await
        .unwrap()
        .unwrap();
    assert!(standby::security::verify_password(
        password,
        &user.password_hash
    ));
    // A second run changes nothing.
    let out = standby(tmp.path(), &db)
        .args(["demo", "--registrants", "40"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        standby_store::Store::stats(store.as_ref())
            .await
            .unwrap()
            .registered,
        40
    );
}

#[tokio::test]
async fn serve_answers_and_stops_on_sigterm() {
    standby::init_tls();
    let tmp = tempfile::tempdir().unwrap();
    let db = fresh_database_url(tmp.path()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = standby(tmp.path(), &db)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let mut ready = false;
    for _ in 0..300 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "the server answered /readyz");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful stop: {status:?}");
}

#[tokio::test]
async fn logs_are_json_lines_without_personal_data() {
    standby::init_tls();
    let tmp = tempfile::tempdir().unwrap();
    let db = fresh_database_url(tmp.path()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(tmp.path().join("server.log")).unwrap();
    let mut child = standby(tmp.path(), &db)
        .env("STANDBY_LOG", "debug")
        .env("STANDBY_LOG_FORMAT", "json")
        .env("STANDBY_EMAIL", "smtp://127.0.0.1:9")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(format!("{base}/readyz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut body = registration(77);
    body["first_name"] = serde_json::json!("Zéphyrine");
    body["last_name"] = serde_json::json!("Vanderkelen");
    body["phone"] = serde_json::json!("+32 470 99 88 77");
    assert_eq!(
        http.post(format!("{base}/api/v1/registrations"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    let _ = http
        .post(format!("{base}/api/v1/login"))
        .json(&serde_json::json!({"email": "someone@example.be", "password": "nope"}))
        .send()
        .await
        .unwrap();
    let _ = http
        .post(format!("{base}/api/v1/registrations"))
        .json(&serde_json::json!({"national_id": "85073003329", "email": "leak@example.be"}))
        .send()
        .await
        .unwrap();
    // Let the dispatcher fail on the closed SMTP port and log it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(tmp.path().join("server.log")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{text}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string());
    }
    assert!(
        text.contains("message will be retried"),
        "the SMTP failure is logged"
    );
    for secret in [
        be_id(77).as_str(),
        "85073003329",
        "person77@example.be",
        "someone@example.be",
        "leak@example.be",
        "Zéphyrine",
        "Vanderkelen",
        "470 99 88 77",
        "+32470998877",
    ] {
        assert!(!text.contains(secret), "the logs carry {secret}");
    }
}
