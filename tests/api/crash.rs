//! kill -9 in the middle of the work, restart, and nothing acknowledged is
//! lost (CONTRACT section 5, guarantee 6).

use crate::gateway::{Behaviour, start};
use crate::helpers::*;
use serde_json::{Value, json};
use standby_store::Store;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// SMS on their way at once in the dispatch crash test: at most these can
/// reach the gateway twice (each under its own reference).
const IN_FLIGHT: usize = 2;

const SECRET: &str = "crash-test-secret-0123456789abcdef01234";

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(tmp: &std::path::Path, db: &str, port: u16, env: &[(&str, String)]) -> Server {
    standby::init_tls();
    let mut c = Command::new(env!("CARGO_BIN_EXE_standby"));
    c.current_dir(tmp)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STANDBY_SECRET", SECRET)
        .env("STANDBY_EMAIL", "file:outbox")
        .env("STANDBY_SMS", "file:outbox")
        .env("STANDBY_CLIENT_RATE", "0")
        // Real time: a run at night must not wait for the quiet hours to end.
        .env("STANDBY_QUIET_HOURS", "none")
        .env("STANDBY_LEASE_SECONDS", "2")
        .env("STANDBY_LOG", "warn")
        .env("STANDBY_SQLITE_WAL_MB", "4")
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            db,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let server = Server {
        child: c.spawn().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..600 {
        if reqwest::get(format!("{}/readyz", server.base))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not come up");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn every_acknowledged_sign_up_survives_kill_9() {
    standby::init_tls();
    let tmp = tempfile::tempdir().unwrap();
    let db = fresh_database_url(tmp.path()).await;
    let port = free_port();
    let laid_out = 64 << 20;
    let env = [("STANDBY_SQLITE_WAL_MB", (laid_out >> 20).to_string())];
    let server = serve(tmp.path(), &db, port, &env).await;
    // SQLite: the log is laid out with zeros in the background; the load
    // writes over them, and recovery must find every commit among them.
    if let Some(path) = standby_store::sqlite_file(&db) {
        let wal = format!("{}-wal", path.display());
        let mut waited = 0;
        while std::fs::metadata(&wal).map_or(0, |m| m.len()) < laid_out {
            assert!(waited < 500, "the write-ahead log was never laid out");
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
    }
    let acknowledged = Arc::new(Mutex::new(Vec::<u32>::new()));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for worker in 0..16u32 {
        let (client, url, acked) = (
            client.clone(),
            format!("{}/api/v1/registrations", server.base),
            acknowledged.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000u32 {
                let n = worker * 10_000 + i;
                match client
                    .post(&url)
                    .json(&registration(n))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 202 => acked.lock().unwrap().push(n),
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the load run, then kill the server without warning.
    while acknowledged.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acknowledged.lock().unwrap().clone();
    if let Some(path) = standby_store::sqlite_file(&db) {
        let wal = std::fs::metadata(format!("{}-wal", path.display())).unwrap();
        assert_eq!(wal.len(), laid_out, "the commits went over the zeros");
    }
    let _again = serve(tmp.path(), &db, port, &env).await;
    let store = standby::open_store(&db).await.unwrap();
    for n in &acked {
        let hash =
            standby::security::national_id_hash(SECRET.as_bytes(), &format!("BE:{}", be_id(*n)));
        assert!(
            store.has_registrant(&hash).await.unwrap(),
            "sign-up {n} was acknowledged but is gone"
        );
    }
    let stats = store.stats().await.unwrap();
    assert!(stats.registered >= acked.len() as i64);
    let confirmations: i64 = store
        .outbox_counts()
        .await
        .unwrap()
        .iter()
        .map(|c| c.2)
        .sum();
    assert_eq!(
        confirmations, stats.registered,
        "one confirmation message per registrant, none lost"
    );
    eprintln!(
        "kill -9 under load: {} sign-ups acknowledged, {} stored",
        acked.len(),
        stats.registered
    );
}

#[tokio::test]
async fn no_message_is_lost_or_sent_twice_across_kill_9_during_dispatch() {
    standby::init_tls();
    let tmp = tempfile::tempdir().unwrap();
    let db = fresh_database_url(tmp.path()).await;
    let (gateway, gw) = start(Behaviour::default()).await;
    let port = free_port();
    let env = [
        ("STANDBY_SMS", gateway),
        ("STANDBY_SMS_RATE", "10".to_string()),
        ("STANDBY_SMS_IN_FLIGHT", IN_FLIGHT.to_string()),
        ("STANDBY_ADMIN_EMAIL", "admin@example.be".to_string()),
        ("STANDBY_ADMIN_PASSWORD", "admin password 123".to_string()),
    ];
    let server = serve(tmp.path(), &db, port, &env).await;
    let (token, center) = populate(&server.base, &tmp.path().join("outbox"), 40).await;
    let http = reqwest::Client::new();
    let store = standby::open_store(&db).await.unwrap();
    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", server.base))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let r = post(
        &format!("/api/v1/centers/{center}/offers"),
        json!({"vaccine": "PFZ", "doses": 20, "starts_at": "2030-01-02T09:00:00Z", "ends_at": "2030-01-02T17:00:00Z", "response_seconds": 3600}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let offer: Value = r.json().await.unwrap();
    let offer_id = offer["id"].as_str().unwrap().to_string();
    // 40 SMS paced at 10 a second: kill the process in the middle.
    while gw.accepted().len() < 12 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let before = gw.accepted().len();
    assert!(before < 40, "the crash came in the middle of dispatch");
    let server = serve(tmp.path(), &db, port, &env).await;
    for _ in 0..600 {
        let pending = store
            .messages_of_kind("invitation")
            .await
            .unwrap()
            .iter()
            .filter(|m| m.1 == "sms" && m.2 != "sent")
            .count();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sms: Vec<_> = store
        .messages_of_kind("invitation")
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.1 == "sms")
        .collect();
    assert_eq!(sms.len(), 40);
    assert!(
        sms.iter().all(|m| m.2 == "sent"),
        "every queued SMS left after the restart: {sms:?}"
    );
    let accepted = gw.accepted();
    let refs: std::collections::HashSet<&str> = accepted.iter().map(|a| a.0.as_str()).collect();
    for m in &sms {
        assert!(
            refs.contains(m.0.as_str()),
            "{} recorded as sent but never reached the gateway",
            m.0
        );
    }
    // Anything the gateway got twice came under one reference (a same-reference retry).
    assert_eq!(refs.len(), sms.len());
    assert!(
        accepted.len() - refs.len() <= IN_FLIGHT,
        "at most the messages in flight at the crash went twice"
    );
    let o: Value = http
        .get(format!("{}/api/v1/offers/{offer_id}", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(o["invitations"]["sent"], 40);
}

/// An admin token, a centre with 100 doses, and `people` confirmed registrants with phones.
async fn populate(base: &str, outbox: &std::path::Path, people: u32) -> (String, String) {
    let http = reqwest::Client::new();
    let token = http
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"email": "admin@example.be", "password": "admin password 123"}))
        .send()
        .await
        .unwrap();
    let token = token.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let c: Value = post("/api/v1/centers", json!({"name": "Heysel", "address": "x", "postal_code": "1020", "time_zone": "Europe/Brussels"})).await.unwrap().json().await.unwrap();
    let center = c["id"].as_str().unwrap().to_string();
    post(
        "/api/v1/vaccines",
        json!({"code": "PFZ", "name": "x", "min_age": 18, "max_age": 120}),
    )
    .await
    .unwrap();
    post(
        &format!("/api/v1/centers/{center}/deliveries"),
        json!({"vaccine": "PFZ", "doses": 100}),
    )
    .await
    .unwrap();
    for n in 0..people {
        let mut body = registration(n);
        body["phone"] = json!(format!("+3247{n:07}"));
        assert_eq!(
            http.post(format!("{base}/api/v1/registrations"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status(),
            202
        );
    }
    for mail in wait_for_files(outbox, "eml", people as usize).await {
        assert_eq!(
            http.post(find_link(&mail, "/confirm/"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    (token, center)
}

#[tokio::test]
async fn two_processes_on_one_database_share_the_dispatch_without_doubles() {
    standby::init_tls();
    let tmp = tempfile::tempdir().unwrap();
    let db = fresh_database_url(tmp.path()).await;
    let (gateway, gw) = start(Behaviour {
        fail_every: Some(7),
        ..Default::default()
    })
    .await;
    let env = [
        ("STANDBY_SMS", gateway),
        ("STANDBY_SMS_RATE", "50".to_string()),
        ("STANDBY_ADMIN_EMAIL", "admin@example.be".to_string()),
        ("STANDBY_ADMIN_PASSWORD", "admin password 123".to_string()),
    ];
    let a = serve(tmp.path(), &db, free_port(), &env).await;
    let b = serve(tmp.path(), &db, free_port(), &env).await;
    let (token, center) = populate(&a.base, &tmp.path().join("outbox"), 60).await;
    let http = reqwest::Client::new();
    // A sign-up burst spread over both processes: every one stored, once.
    let mut burst = Vec::new();
    for n in 1000..1200u32 {
        let url = format!(
            "{}/api/v1/registrations",
            if n % 2 == 0 { &a.base } else { &b.base }
        );
        let http = http.clone();
        burst.push(tokio::spawn(async move {
            http.post(url)
                .json(&registration(n))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in burst {
        assert_eq!(t.await.unwrap(), 202);
    }
    let store = standby::open_store(&db).await.unwrap();
    for n in 1000..1200u32 {
        let hash =
            standby::security::national_id_hash(SECRET.as_bytes(), &format!("BE:{}", be_id(n)));
        assert!(
            store.has_registrant(&hash).await.unwrap(),
            "sign-up {n} lost"
        );
    }
    assert_eq!(
        store.stats().await.unwrap().registered,
        260,
        "60 + 200, none doubled"
    );
    let r = http
        .post(format!("{}/api/v1/centers/{center}/offers", b.base))
        .bearer_auth(&token)
        .json(&json!({"vaccine": "PFZ", "doses": 30, "starts_at": "2030-01-02T09:00:00Z", "ends_at": "2030-01-02T17:00:00Z", "response_seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for _ in 0..600 {
        let sms = store.messages_of_kind("invitation").await.unwrap();
        if sms.iter().filter(|m| m.1 == "sms").count() == 60 && sms.iter().all(|m| m.2 == "sent") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sms: Vec<_> = store
        .messages_of_kind("invitation")
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.1 == "sms")
        .collect();
    assert_eq!(
        sms.len(),
        60,
        "both engines together invited twice the doses, no more"
    );
    assert!(sms.iter().all(|m| m.2 == "sent"));
    let accepted = gw.accepted();
    let refs: std::collections::HashSet<&str> = accepted.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(
        (accepted.len(), refs.len()),
        (60, 60),
        "every SMS handed over exactly once"
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.invited, 60);
}
