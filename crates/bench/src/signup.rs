//! The launch-day replay.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    accepted: Vec<u64>,
}

fn loopback(url: &str) -> SocketAddr {
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("");
    let addr: SocketAddr = host.parse().expect("--url must be http://IP:PORT");
    assert!(
        addr.ip().is_loopback(),
        "load is only ever sent to 127.0.0.0/8 or ::1"
    );
    addr
}

fn registration(n: u64, repeat_every: u64) -> (u64, String) {
    // One in `repeat_every` repeats the ID of an earlier registration.
    let id_n = if repeat_every > 0 && n % repeat_every == repeat_every - 1 && n > 1000 {
        n - 1000
    } else {
        n
    };
    let (country, id) = crate::national_id(id_n);
    let body = serde_json::json!({
        "country": country, "national_id": id, "title": "mx", "first_name": "Bench", "last_name": format!("Person {n}"),
        "email": format!("bench{n}@example.org"), "language": "fr", "consent": true,
    });
    (id_n, body.to_string())
}

async fn connection(
    addr: SocketAddr,
    next: Arc<AtomicU64>,
    total: u64,
    deadline: Instant,
    form: bool,
    repeat_every: u64,
    offset: u64,
) -> Tally {
    let mut t = Tally::default();
    let stream = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            *t.errors
                .entry(format!("connect: {}", e.kind()))
                .or_default() += 1;
            return t;
        }
        Err(_) => {
            *t.errors.entry("connect: timeout".into()).or_default() += 1;
            return t;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => {
            *t.errors.entry(format!("handshake: {e}")).or_default() += 1;
            return t;
        }
    };
    tokio::spawn(conn);
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total || Instant::now() >= deadline {
            return t;
        }
        let started = Instant::now();
        if form {
            let req = hyper::Request::get("/")
                .header("host", "bench")
                .body(Full::new(Bytes::new()))
                .unwrap();
            match send(&mut sender, req).await {
                Ok(200) => {}
                Ok(s) => *t.statuses.entry(s).or_default() += 0,
                Err(e) => {
                    *t.errors.entry(e).or_default() += 1;
                    return t;
                }
            }
        }
        let (id_n, body) = registration(offset + n, repeat_every);
        let req = hyper::Request::post("/api/v1/registrations")
            .header("host", "bench")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        match send(&mut sender, req).await {
            Ok(status) => {
                t.latencies_us
                    .push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                *t.statuses.entry(status).or_default() += 1;
                if status == 202 {
                    t.accepted.push(id_n);
                }
            }
            Err(e) => {
                *t.errors.entry(e).or_default() += 1;
                return t;
            }
        }
    }
}

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: hyper::Request<Full<Bytes>>,
) -> Result<u16, String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let fut = sender.send_request(req);
    let resp = match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Err(format!(
                "request: {}",
                if e.is_incomplete_message() {
                    "reset".to_string()
                } else {
                    e.to_string()
                }
            ));
        }
        Err(_) => return Err("timeout".into()),
    };
    let status = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(status)
}

fn peak_memory_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub async fn run(args: HashMap<String, String>) {
    let url = args
        .get("url")
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let addr = loopback(&url);
    let connections = crate::num(&args, "connections", 1000);
    let total = crate::num(&args, "requests", 100_000);
    let seconds = crate::num(&args, "seconds", 120).min(600);
    let offset = crate::num(&args, "offset", 0);
    let repeat_every = crate::num(&args, "repeat-every", 20);
    let form = args.contains_key("form");
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        tasks.push(tokio::spawn(connection(
            addr,
            next.clone(),
            total,
            deadline,
            form,
            repeat_every,
            offset,
        )));
    }
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await.expect("task");
        all.latencies_us.extend(t.latencies_us);
        for (k, v) in t.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        for (k, v) in t.errors {
            *all.errors.entry(k).or_default() += v;
        }
        all.accepted.extend(t.accepted);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let pct = |p: f64| {
        all.latencies_us
            .get(
                ((all.latencies_us.len() as f64 * p) as usize)
                    .min(all.latencies_us.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let accepted = all.accepted.len();
    println!(
        "connections        {connections}{}",
        if form {
            " (each loads the form, then posts)"
        } else {
            ""
        }
    );
    println!("requests answered  {}", all.latencies_us.len());
    println!(
        "sign-ups (202)     {accepted} in {elapsed:.2} s = {:.0} per second",
        accepted as f64 / elapsed
    );
    println!(
        "latency ms         p50 {:.1}  p99 {:.1}  max {:.1}",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    println!("statuses           {:?}", all.statuses);
    println!("errors             {:?}", all.errors);
    if let Some(pids) = args.get("server-pid") {
        for pid in pids.split(',') {
            println!(
                "server {pid} peak   {} MiB",
                peak_memory_kib(pid).map(|k| k / 1024).unwrap_or(0)
            );
        }
    }
    if let (Some(db), Some(secret)) = (args.get("database"), args.get("secret")) {
        verify(db, secret, &all.accepted).await;
    }
}

/// Every 202 is stored, and each national ID exactly once.
async fn verify(database: &str, secret: &str, accepted: &[u64]) {
    use standby_store::Store;
    let store = standby_store::connect(database).await.expect("database");
    let mut distinct: Vec<u64> = accepted.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let mut missing = 0;
    for n in &distinct {
        let (country, id) = crate::national_id(*n);
        let hash = hmac_hex(
            secret.as_bytes(),
            format!("national-id:{country}:{id}").as_bytes(),
        );
        if !store.has_registrant(&hash).await.expect("query") {
            missing += 1;
        }
    }
    let stats = store.stats().await.expect("stats");
    println!(
        "verification       {} distinct IDs answered 202, {missing} missing; {} registrants in the database",
        distinct.len(),
        stats.registered
    );
    if missing > 0 {
        std::process::exit(1);
    }
}

fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}
