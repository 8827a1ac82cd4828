//! The Qvax replay at full size: a centre releases 2,000 doses at once; the
//! SMS gateway (here, in-process, over real HTTP) takes 20 a second and
//! answers 503 to one request in ten; the SMTP server stalls for a minute.
//! Simulated people answer what reaches them: 80 % accept, 10 % decline,
//! 10 % never answer. Runs a real `standby serve` on loopback, bounded in
//! time, and checks the guarantees at the end.
//!
//! ```text
//! standby-bench qvax [--doses 2000] [--people 6000] [--standby target/release/standby] [--seconds 900]
//! ```

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use standby_store::{EngineStore, NewRegistrant, Store};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Gateway {
    requests: Mutex<Vec<(String, String, u16, Instant)>>,
}

async fn gateway(gw: Arc<Gateway>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let gw = gw.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let gw = gw.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let mut reqs = gw.requests.lock().expect("lock");
                            let status = if (reqs.len() + 1).is_multiple_of(10) {
                                503
                            } else {
                                200
                            };
                            reqs.push((
                                v["reference"].as_str().unwrap_or("").into(),
                                v["body"].as_str().unwrap_or("").into(),
                                status,
                                Instant::now(),
                            ));
                            let mut resp =
                                hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                            *resp.status_mut() =
                                hyper::StatusCode::from_u16(status).expect("status");
                            if status == 503 {
                                resp.headers_mut().insert(
                                    "retry-after",
                                    hyper::header::HeaderValue::from_static("1"),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn http(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host")
        .to_string();
    let path = format!(
        "/{}",
        url.trim_start_matches("http://")
            .split_once('/')
            .map(|x| x.1)
            .unwrap_or("")
    );
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub async fn run(args: HashMap<String, String>) {
    let doses = crate::num(&args, "doses", 2000) as i64;
    let people = crate::num(&args, "people", 6000);
    let seconds = crate::num(&args, "seconds", 900).min(1800);
    let standby = args
        .get("standby")
        .cloned()
        .unwrap_or_else(|| "target/release/standby".into());
    let tmp = std::env::temp_dir().join(format!("standby-qvax-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("tmp");
    let db = format!("sqlite://{}/qvax.db", tmp.display());
    let gw = Arc::new(Gateway::default());
    let gw_port = gateway(gw.clone()).await;
    let smtp_port = free_port();
    let mail_dir = tmp.join("mail");
    let sink = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/support/smtp_sink.py"
    );
    let _smtp = Child(
        std::process::Command::new("python3")
            .arg(sink)
            .arg(smtp_port.to_string())
            .arg(&mail_dir)
            .arg("60")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd"),
    );
    // People, already confirmed, straight into the database.
    let store = standby_store::connect(&db).await.expect("db");
    store.migrate().await.expect("migrate");
    let now = jiff::Timestamp::now().as_millisecond();
    let mut batch = Vec::new();
    for n in 0..people {
        let country = crate::national_id(n).0;
        batch.push(NewRegistrant {
            nid_hash: crate::bench_key(b'q', n),
            country,
            birth_ymd: 19_400_101 + (n % 50) as i64 * 10_000,
            title: None,
            first_name: format!("P{n}"),
            last_name: "Q".into(),
            email: format!("p{n}@example.org"),
            phone: (n % 2 == 0).then(|| format!("+3247{n:07}")),
            language: "fr".into(),
            centers: vec![],
            availability: vec![],
            confirm_hash: format!("qc-{n}"),
            confirm_expires_at: now,
            me_hash: format!("qm-{n}"),
            me_expires_at: now,
            message: None,
            confirmed_at: Some(now + n as i64),
        });
    }
    for chunk in batch.chunks(1000) {
        store
            .insert_registrations(chunk.to_vec(), now)
            .await
            .expect("insert");
    }
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Child(
        std::process::Command::new(&standby)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database",
                &db,
            ])
            .env("STANDBY_SECRET", "qvax-secret-0123456789abcdef0123456789")
            .env("STANDBY_SMS", format!("http://127.0.0.1:{gw_port}/sms"))
            .env("STANDBY_EMAIL", format!("smtp://127.0.0.1:{smtp_port}"))
            .env("STANDBY_SMS_RATE", "20")
            .env("STANDBY_EMAIL_RATE", "50")
            .env("STANDBY_CLIENT_RATE", "0")
            // Real time: a run at night must not wait for the quiet hours to end.
            .env("STANDBY_QUIET_HOURS", "none")
            .env("STANDBY_ADMIN_EMAIL", "admin@example.org")
            .env("STANDBY_ADMIN_PASSWORD", "qvax admin password")
            .env("STANDBY_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("standby binary (build it with cargo build --release)"),
    );
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, login) = http(
        "POST",
        &format!("{base}/api/v1/login"),
        None,
        Some(json!({"email": "admin@example.org", "password": "qvax admin password"})),
    )
    .await;
    let token = login["token"].as_str().expect("token").to_string();
    let t = Some(token.as_str());
    let (_, c) = http("POST", &format!("{base}/api/v1/centers"), t, Some(json!({"name": "Qvax centre", "address": "x", "postal_code": "1000", "time_zone": "Europe/Brussels"}))).await;
    let center = c["id"].as_str().expect("centre").to_string();
    http(
        "POST",
        &format!("{base}/api/v1/vaccines"),
        t,
        Some(json!({"code": "AZ", "name": "Vaxzevria", "min_age": 18, "max_age": 120})),
    )
    .await;
    http(
        "POST",
        &format!("{base}/api/v1/centers/{center}/deliveries"),
        t,
        Some(json!({"vaccine": "AZ", "doses": doses})),
    )
    .await;
    let starts = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    let ends = starts + jiff::SignedDuration::from_hours(10);
    let started = Instant::now();
    let (s, offer) = http(
        "POST",
        &format!("{base}/api/v1/centers/{center}/offers"),
        t,
        Some(json!({"vaccine": "AZ", "doses": doses, "starts_at": starts.to_string(), "ends_at": ends.to_string(), "response_seconds": 1800})),
    )
    .await;
    assert_eq!(s, 201, "{offer}");
    let offer_id = offer["id"].as_str().expect("offer").to_string();
    let mut answered: HashSet<String> = HashSet::new();
    let mut max_out = 0;
    let mut first_booking = None;
    let deadline = started + Duration::from_secs(seconds);
    let filled = loop {
        let mut links: Vec<String> = gw
            .requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.2 == 200)
            .filter_map(|r| {
                r.1.split_whitespace()
                    .find(|w| w.contains("/i/"))
                    .map(str::to_string)
            })
            .collect();
        if let Ok(dir) = std::fs::read_dir(&mail_dir) {
            for e in dir.flatten() {
                if let Ok(text) = std::fs::read_to_string(e.path())
                    && let Some(l) = text.split_whitespace().find(|w| w.contains("/i/"))
                {
                    links.push(l.to_string());
                }
            }
        }
        for link in links {
            let tok = link.rsplit('/').next().unwrap_or("").to_string();
            if !answered.insert(tok.clone()) {
                continue;
            }
            let h = tok
                .bytes()
                .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
                % 10;
            let action = match h {
                0 => continue,
                1 => "decline",
                _ => "accept",
            };
            let (s, _) = http(
                "POST",
                &format!("{base}/api/v1/invitations/{tok}/{action}"),
                None,
                None,
            )
            .await;
            if s == 200 && action == "accept" && first_booking.is_none() {
                first_booking = Some(started.elapsed());
            }
        }
        let (_, o) = http("GET", &format!("{base}/api/v1/offers/{offer_id}"), t, None).await;
        max_out = max_out.max(o["invitations"]["sent"].as_i64().unwrap_or(0));
        if o["status"] == "filled" {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let elapsed = started.elapsed();
    let (_, o) = http("GET", &format!("{base}/api/v1/offers/{offer_id}"), t, None).await;
    let invitations = store
        .invitations_of_offer(offer_id.parse().expect("id"))
        .await
        .expect("invitations");
    let expired_unsent = invitations
        .iter()
        .filter(|i| i.1 == "expired" && i.2.is_none())
        .count();
    let reqs = gw.requests.lock().expect("lock").clone();
    let mut max_per_second = 0;
    for (i, r) in reqs.iter().enumerate() {
        max_per_second = max_per_second.max(
            reqs[i..]
                .iter()
                .take_while(|u| u.3.duration_since(r.3) < Duration::from_secs(1))
                .count(),
        );
    }
    let accepted_refs: HashSet<&str> = reqs
        .iter()
        .filter(|r| r.2 == 200)
        .map(|r| r.0.as_str())
        .collect();
    let doubles = reqs.iter().filter(|r| r.2 == 200).count() - accepted_refs.len();
    // Every message the gateway answered 503 was tried again under its
    // reference and handed over, unless the offer filled first and it was
    // withdrawn unsent: checked against the outbox, so it can fail.
    let outbox: HashMap<String, String> = store
        .messages_of_kind("invitation")
        .await
        .expect("outbox")
        .into_iter()
        .filter(|m| m.1 == "sms")
        .map(|m| (m.0, m.2))
        .collect();
    let refused: HashSet<&str> = reqs
        .iter()
        .filter(|r| r.2 == 503)
        .map(|r| r.0.as_str())
        .collect();
    let not_retried = refused
        .iter()
        .filter(|r| {
            !accepted_refs.contains(**r) && outbox.get(**r).map(String::as_str) != Some("withdrawn")
        })
        .count();
    let stats = store.stats().await.expect("stats");
    println!(
        "doses released       {doses} at once, {people} people on the list (half with a phone)"
    );
    println!(
        "filled               {filled} in {:.0} s (first booking after {:.1} s, while SMTP stalled)",
        elapsed.as_secs_f64(),
        first_booking.unwrap_or_default().as_secs_f64()
    );
    println!(
        "booked               {} (offer) / {} (registrants booked)",
        o["booked"], stats.booked
    );
    println!(
        "invitations          {} created, at most {max_out} out at once; {:?}",
        invitations.len(),
        o["invitations"]
    );
    println!(
        "SMS gateway          {} requests, {} answered 503, at most {max_per_second} in one second, {doubles} sent twice",
        reqs.len(),
        reqs.iter().filter(|r| r.2 == 503).count()
    );
    println!("expired unsent       {expired_unsent} (must be 0)");
    println!(
        "503s retried         {} of {} refused references handed over later or withdrawn unsent ({not_retried} neither, must be 0)",
        refused.len() - not_retried,
        refused.len()
    );
    let ok = filled
        && o["booked"].as_i64() == Some(doses)
        && stats.booked <= doses
        && expired_unsent == 0
        && not_retried == 0
        && doubles == 0
        && max_per_second <= 21;
    println!(
        "guarantees           {}",
        if ok { "held" } else { "BROKEN" }
    );
    let _ = std::fs::remove_dir_all(&tmp);
    if !ok {
        std::process::exit(1);
    }
}
