//! Spawns the real application on port 0 with a fresh database per test:
//! a SQLite file in a temporary folder, or, when STANDBY_TEST_DATABASE_URL
//! names a PostgreSQL server, a new database on it.

use jiff::Timestamp;
use serde_json::{Value, json};
use standby::config::Config;
use standby_domain::{Clock, ManualClock};
use standby_store::Store;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub fn pg_admin_url() -> Option<String> {
    std::env::var("STANDBY_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

/// A fresh, empty database URL for one test.
pub async fn fresh_database_url(tmp: &Path) -> String {
    match pg_admin_url() {
        Some(admin) => {
            use sqlx::Connection;
            let name = format!(
                "standby_t_{}",
                &standby::security::random_secret()
                    .to_lowercase()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "")[..16]
            );
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("PostgreSQL named by STANDBY_TEST_DATABASE_URL answers");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let base = admin
                .rsplit_once('/')
                .map(|(b, _)| b.to_string())
                .expect("URL with a database name");
            format!("{base}/{name}")
        }
        None => format!("sqlite://{}/standby.db", tmp.display()),
    }
}

pub fn start_time() -> Timestamp {
    "2026-11-24T10:00:00Z".parse().unwrap()
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: standby::AppState,
    pub clock: Arc<ManualClock>,
    pub outbox: PathBuf,
    pub database_url: String,
    pub tmp: tempfile::TempDir,
}

pub struct Options {
    pub env: Vec<(&'static str, String)>,
    pub workers: bool,
    /// Share an existing database (a second process, say) instead of a fresh one.
    pub database: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            env: Vec::new(),
            workers: true,
            database: None,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

pub async fn spawn_with(opts: Options) -> TestApp {
    standby::init_tls();
    if let Ok(filter) = std::env::var("STANDBY_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let tmp = tempfile::tempdir().unwrap();
    let database_url = match opts.database.clone() {
        Some(url) => url,
        None => fresh_database_url(tmp.path()).await,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let outbox = tmp.path().join("outbox");
    let mut vars: HashMap<String, String> = HashMap::from([
        (
            "STANDBY_SECRET".into(),
            "test-secret-0123456789abcdef0123456789".into(),
        ),
        ("STANDBY_EMAIL".into(), format!("file:{}", outbox.display())),
        ("STANDBY_SMS".into(), format!("file:{}", outbox.display())),
        ("STANDBY_CLIENT_RATE".into(), "0".into()),
        ("STANDBY_PUBLIC_URL".into(), format!("http://{addr}")),
        ("STANDBY_EMAIL_RATE".into(), "1000".into()),
    ]);
    for (k, v) in opts.env {
        vars.insert(k.to_string(), v);
    }
    let config = Config::load(
        Some(addr.to_string()),
        Some(database_url.clone()),
        &move |k| vars.get(k).cloned(),
    )
    .expect("test configuration");
    let store = standby::open_store(&database_url)
        .await
        .expect("open store");
    let clock = Arc::new(ManualClock::new(start_time()));
    let state = standby::App::new(config, store, clock.clone() as Arc<dyn Clock>);
    if opts.workers {
        standby::spawn_workers(&state).unwrap();
    }
    tokio::spawn(standby::serve(listener, state.clone()));
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        state,
        clock,
        outbox,
        database_url,
        tmp,
    }
}

/// A valid Belgian national register number, distinct for each `n`.
pub fn be_id(n: u32) -> String {
    standby::demo::belgian_id(
        1940 + (n % 60) as i32,
        1 + (n / 60) % 12,
        1 + (n / 720) % 28,
        1 + n % 997,
    )
}

pub fn registration(n: u32) -> Value {
    json!({
        "national_id": be_id(n),
        "title": "ms",
        "first_name": "Anne",
        "last_name": "Dupont",
        "email": format!("person{n}@example.be"),
        "language": "en",
        "consent": true,
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The body of a GET, as text.
    pub async fn get_text(&self, path: &str) -> String {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        r.text().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn stats(&self) -> Value {
        self.get_json("/api/v1/stats").await.1
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.state.store
    }

    /// Every e-mail file in the outbox folder, waiting up to 10 s for `n`.
    pub async fn wait_for_emails(&self, n: usize) -> Vec<String> {
        wait_for_files(&self.outbox, "eml", n).await
    }

    /// The confirmation and self-service links of the e-mail sent to `email`.
    pub async fn links_for(&self, email: &str) -> (String, String) {
        for _ in 0..300 {
            for mail in wait_for_files(&self.outbox, "eml", 0).await {
                if mail.contains(&format!("To: {email}")) {
                    return (find_link(&mail, "/confirm/"), find_link(&mail, "/me/"));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no e-mail to {email} within 10 s");
    }

    /// Registers `n`, confirms, and gives the self-service path.
    pub async fn registered_and_confirmed(&self, n: u32) -> String {
        let body = registration(n);
        assert_eq!(
            self.post_json("/api/v1/registrations", &body)
                .await
                .status(),
            202
        );
        let (confirm, me) = self.links_for(body["email"].as_str().unwrap()).await;
        let r = self.client.post(&confirm).send().await.unwrap();
        assert_eq!(r.status(), 200);
        me.trim_start_matches(&self.base).to_string()
    }
}

pub fn find_link(mail: &str, marker: &str) -> String {
    mail.split_whitespace()
        .find(|w| w.contains(marker))
        .unwrap_or_else(|| panic!("no {marker} link in the message"))
        .to_string()
}

pub async fn wait_for_files(dir: &Path, ext: &str, n: usize) -> Vec<String> {
    for _ in 0..300 {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == ext))
                    .collect()
            })
            .unwrap_or_default();
        if files.len() >= n {
            files.sort();
            return files
                .iter()
                .map(|p| std::fs::read_to_string(p).unwrap())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "fewer than {n} .{ext} files in {} after 10 s",
        dir.display()
    );
}

/// Skips a test that needs an outside program, except in CI where its
/// absence is a failure.
pub fn require(program_ok: bool, what: &str) -> bool {
    if program_ok {
        return true;
    }
    assert!(!is_ci(), "{what} is required in CI (see .ci/run)");
    eprintln!("skipping: {what} is not installed here (CI installs it)");
    false
}

/// Waits (up to 30 s, polling every 50 ms) until `check` holds; panics
/// naming `what` otherwise.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}
