//! The launch-day replay.

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

/// A registration for sign-up number `n`: the national ID it uses and the
/// request body, as JSON for the API or URL-encoded for the HTML form.
fn registration(n: u64, repeat_every: u64, form: bool) -> (u64, String) {
    // One in `repeat_every` repeats the ID of an earlier registration.
    let id_n = if repeat_every > 0 && n % repeat_every == repeat_every - 1 && n > 1000 {
        n - 1000
    } else {
        n
    };
    let (country, id) = crate::national_id(id_n);
    let body = if form {
        format!(
            "form_lang=fr&country={country}&national_id={id}&title=mx&first_name=Bench&last_name=Person+{n}\
             &email=bench{n}%40example.org&phone=&language=fr&consent=on"
        )
    } else {
        serde_json::json!({
            "country": country, "national_id": id, "title": "mx", "first_name": "Bench", "last_name": format!("Person {n}"),
            "email": format!("bench{n}@example.org"), "language": "fr", "consent": true,
        })
        .to_string()
    };
    (id_n, body)
}

/// A minimal HTTP/1.1 client on one kept-alive connection, like wrk's: the
/// request is written in one call and the answer read in the same task, so
/// the load generator spends its CPU on the traffic, not on itself.
struct Client {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    host: String,
}

impl Client {
    async fn request(&mut self, head: &str, body: &str) -> Result<u16, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut req = Vec::with_capacity(head.len() + body.len() + 128);
        req.extend_from_slice(head.as_bytes());
        req.extend_from_slice(b"Host: ");
        req.extend_from_slice(self.host.as_bytes());
        if !body.is_empty() {
            req.extend_from_slice(format!("\r\nContent-Length: {}", body.len()).as_bytes());
        }
        req.extend_from_slice(b"\r\n\r\n");
        req.extend_from_slice(body.as_bytes());
        self.stream
            .write_all(&req)
            .await
            .map_err(|e| format!("write: {}", e.kind()))?;
        self.buf.clear();
        loop {
            // Parse what has arrived; read more until the whole answer is here.
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut length = None;
                    let mut chunked = false;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<usize>().ok());
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h.value.eq_ignore_ascii_case(b"chunked");
                        }
                    }
                    let done = match (length, chunked) {
                        (Some(n), _) => self.buf.len() >= head_len + n,
                        (None, true) => self.buf[head_len..].ends_with(b"0\r\n\r\n"),
                        (None, false) => return Err("answer without a length".into()),
                    };
                    if done {
                        return Ok(status);
                    }
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(format!("bad answer: {e}")),
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) => return Err("reset".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read: {}", e.kind())),
            }
        }
    }

    async fn timed(&mut self, head: &str, body: &str) -> Result<u16, String> {
        match tokio::time::timeout(Duration::from_secs(30), self.request(head, body)).await {
            Ok(r) => r,
            Err(_) => Err("timeout".into()),
        }
    }
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
    let host = addr.to_string();
    let post_head = if form {
        format!(
            "POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nOrigin: http://{host}\r\n"
        )
    } else {
        "POST /api/v1/registrations HTTP/1.1\r\nContent-Type: application/json\r\n".to_string()
    };
    let mut client = Client {
        stream,
        buf: Vec::with_capacity(16 * 1024),
        host,
    };
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total || Instant::now() >= deadline {
            return t;
        }
        let started = Instant::now();
        if form {
            match client.timed("GET / HTTP/1.1\r\n", "").await {
                Ok(200) => {}
                Ok(s) => *t.statuses.entry(s).or_default() += 0,
                Err(e) => {
                    *t.errors.entry(e).or_default() += 1;
                    return t;
                }
            }
        }
        let (id_n, body) = registration(offset + n, repeat_every, form);
        match client.timed(&post_head, &body).await {
            Ok(status) => {
                t.latencies_us
                    .push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                *t.statuses.entry(status).or_default() += 1;
                // The API answers 202; the form answers 200 with its "done" page.
                if status == 202 || (form && status == 200) {
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

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
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
    let server_pids: Vec<String> = args
        .get("server-pid")
        .map(|p| p.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let cpu = |pid: &str| cpu_seconds(pid).unwrap_or(0.0);
    let cpu_before: Vec<f64> = server_pids.iter().map(|p| cpu(p)).collect();
    let own_before = cpu("self");
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
    let own_cpu = cpu("self") - own_before;
    let server_cpu: Vec<f64> = server_pids
        .iter()
        .zip(&cpu_before)
        .map(|(p, before)| cpu(p) - before)
        .collect();
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
    println!(
        "cpu during load    load generator {own_cpu:.1} s, server {} s (of {:.1} s x cores)",
        server_cpu
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>()
            .join(" + "),
        elapsed
    );
    for pid in &server_pids {
        println!(
            "server {pid} peak   {} MiB",
            peak_memory_kib(pid).map(|k| k / 1024).unwrap_or(0)
        );
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
