//! The launch-day replay.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    /// (when the request was due or sent, in ms since the load began; its latency in µs)
    timeline: Vec<(u32, u32)>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    accepted: Vec<u64>,
}

impl Tally {
    fn merge(&mut self, t: Tally) {
        self.latencies_us.extend(t.latencies_us);
        self.timeline.extend(t.timeline);
        for (k, v) in t.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in t.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.accepted.extend(t.accepted);
    }
}

/// One event loop by default, whatever the cores: the generator shares the
/// machine with the server it measures, and a second loop only takes CPU
/// from it (on 2 cores, 3 interleaved pairs: one loop used 1.4-1.5 s of
/// CPU per 100,000 sign-ups against 1.6-1.8 s, and the server answered
/// faster in each; Debian's wrk agreed, -t1 against -t2). `--threads N`
/// for more.
fn default_threads() -> u64 {
    1
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
    // n - 1001 is never itself a repeat (for every `repeat_every` > 1), so
    // the ID was really posted before.
    let id_n = if repeat_every > 1 && n % repeat_every == repeat_every - 1 && n > 1001 {
        n - 1001
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
        // Written out directly: every value is digits or fixed ASCII, with
        // nothing to escape (building a serde_json::Value and printing it
        // was an eighth of the generator's CPU).
        format!(
            r#"{{"country":"{country}","national_id":"{id}","title":"mx","first_name":"Bench","last_name":"Person {n}","email":"bench{n}@example.org","language":"fr","consent":true}}"#
        )
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
    /// Cookies the server set (pretix's session and CSRF cookies).
    cookies: Vec<(String, String)>,
    addr: SocketAddr,
    /// The server said `Connection: close`: connect anew before the next request.
    closed: bool,
}

impl Client {
    async fn request(&mut self, head: &str, body: &str) -> Result<u16, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut req = Vec::with_capacity(head.len() + body.len() + 128);
        req.extend_from_slice(head.as_bytes());
        req.extend_from_slice(b"Host: ");
        req.extend_from_slice(self.host.as_bytes());
        if !self.cookies.is_empty() {
            req.extend_from_slice(b"\r\nCookie: ");
            for (i, (k, v)) in self.cookies.iter().enumerate() {
                if i > 0 {
                    req.extend_from_slice(b"; ");
                }
                req.extend_from_slice(format!("{k}={v}").as_bytes());
            }
        }
        if !body.is_empty() {
            req.extend_from_slice(format!("\r\nContent-Length: {}", body.len()).as_bytes());
        }
        req.extend_from_slice(b"\r\n\r\n");
        req.extend_from_slice(body.as_bytes());
        if self.closed {
            self.stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {}", e.kind()))?;
            let _ = self.stream.set_nodelay(true);
            self.closed = false;
        }
        self.stream
            .write_all(&req)
            .await
            .map_err(|e| format!("write: {}", e.kind()))?;
        self.buf.clear();
        let mut eof = false;
        loop {
            // Parse what has arrived; read more until the whole answer is here.
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut length = None;
                    let mut chunked = false;
                    let mut set: Vec<(String, String)> = Vec::new();
                    let mut close = false;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("connection") {
                            close |= h.value.eq_ignore_ascii_case(b"close");
                        }
                        if h.name.eq_ignore_ascii_case("set-cookie") {
                            let v = String::from_utf8_lossy(h.value);
                            if let Some((k, v)) =
                                v.split(';').next().and_then(|c| c.split_once('='))
                            {
                                set.push((k.trim().to_string(), v.trim().to_string()));
                            }
                        } else if h.name.eq_ignore_ascii_case("content-length") {
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
                        // Without a length the answer ends when the connection does.
                        (None, false) if close => eof,
                        (None, false) => return Err("answer without a length".into()),
                    };
                    if done {
                        self.closed = close;
                        for (k, v) in set {
                            self.cookies.retain(|(name, _)| *name != k);
                            self.cookies.push((k, v));
                        }
                        return Ok(status);
                    }
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(format!("bad answer: {e}")),
            }
            // Straight into the buffer's spare room (no zeroed scratch
            // buffer per read).
            self.buf.reserve(16 * 1024);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) if !eof && !self.buf.is_empty() => eof = true,
                Ok(0) => return Err("reset".into()),
                Ok(_) => {}
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

/// What the load is sent to.
#[derive(Clone)]
enum Target {
    /// Standby's API (JSON) or, with `form`, its HTML form.
    Standby { form: bool },
    /// pretix's waiting-list form at `path` (`/ORG/EVENT/waitinglist/?item=N`),
    /// for product `item`: load the form, then post it with its CSRF token.
    Pretix { path: String, item: String },
}

/// The value of `<input name="csrfmiddlewaretoken" value="...">` in a page.
fn csrf_field(page: &[u8]) -> Option<String> {
    let page = std::str::from_utf8(page).ok()?;
    let at = page.find("name=\"csrfmiddlewaretoken\"")?;
    let rest = &page[at..];
    let v = rest.find("value=\"")? + 7;
    let end = rest[v..].find('"')?;
    Some(rest[v..v + end].to_string())
}

async fn pretix_signup(client: &mut Client, path: &str, item: &str, n: u64) -> Result<u16, String> {
    let status = client
        .timed(&format!("GET {path} HTTP/1.1\r\n"), "")
        .await?;
    if status != 200 {
        return Ok(status);
    }
    let token = csrf_field(&client.buf).ok_or("the form has no CSRF token")?;
    let body = format!("csrfmiddlewaretoken={token}&itemvar={item}&email=bench{n}%40example.org");
    let host = client.host.clone();
    client
        .timed(
            &format!(
                "POST {path} HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Origin: http://{host}\r\nReferer: http://{host}{path}\r\n"
            ),
            &body,
        )
        .await
}

/// What every connection shares.
struct Load {
    addr: SocketAddr,
    /// The number of the next sign-up to send.
    next: AtomicU64,
    total: u64,
    deadline: Instant,
    target: Target,
    repeat_every: u64,
    offset: u64,
    /// When the load began (the timeline counts from here).
    began: Instant,
    /// Every connection is opened (or has failed) before any posts, so the
    /// sign-ups measured are the surge itself, not the TCP handshakes.
    ready: tokio::sync::Barrier,
    /// When the last connection was open and they all started posting.
    go: std::sync::OnceLock<Instant>,
}

impl Load {
    async fn all_connected(&self) {
        if self.ready.wait().await.is_leader() {
            let _ = self.go.set(Instant::now());
        }
    }
}

async fn connection(load: Arc<Load>, pace: Option<Pace>) -> Tally {
    let Load {
        addr,
        ref next,
        total,
        deadline,
        ref target,
        repeat_every,
        offset,
        began,
        ..
    } = *load;
    let form = matches!(target, Target::Standby { form: true });
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
            load.all_connected().await;
            return t;
        }
        Err(_) => {
            *t.errors.entry("connect: timeout".into()).or_default() += 1;
            load.all_connected().await;
            return t;
        }
    };
    load.all_connected().await;
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
        cookies: Vec::new(),
        addr,
        closed: false,
    };
    let mut sent: u32 = 0;
    loop {
        // Paced: this connection's k-th sign-up is due at first + k x every,
        // and its latency counts from then, however late it leaves (so a
        // slow answer delays the next request without hiding its wait).
        let due = pace.map(|p| p.first + p.every * sent);
        sent += 1;
        if let Some(due) = due {
            if due >= deadline {
                return t;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total || Instant::now() >= deadline {
            return t;
        }
        let started = due.unwrap_or_else(Instant::now);
        if let Target::Pretix { path, item } = &target {
            // pretix's answer to a stored entry is a redirect to the event page.
            match pretix_signup(&mut client, path, item, offset + n).await {
                Ok(status) => {
                    t.latencies_us
                        .push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    *t.statuses.entry(status).or_default() += 1;
                    if status == 302 {
                        t.accepted.push(offset + n);
                    }
                }
                Err(e) => {
                    *t.errors.entry(e).or_default() += 1;
                    return t;
                }
            }
            continue;
        }
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
                let us = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                t.latencies_us.push(us);
                t.timeline
                    .push((started.duration_since(began).as_millis() as u32, us));
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

/// An open-loop schedule for one connection: its first request at `first`,
/// then one every `every`, whatever the answers take.
#[derive(Clone, Copy)]
struct Pace {
    first: Instant,
    every: Duration,
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
    let target = match args.get("target").map(String::as_str) {
        None | Some("standby") => Target::Standby { form },
        Some("pretix") => Target::Pretix {
            path: args
                .get("path")
                .cloned()
                .expect("--target pretix needs --path /ORG/EVENT/waitinglist/?item=N"),
            item: args
                .get("item")
                .cloned()
                .expect("--target pretix needs --item N"),
        },
        Some(other) => panic!("--target is standby or pretix, not {other}"),
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let server_pids: Vec<String> = args
        .get("server-pid")
        .map(|p| p.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let cpu = |pid: &str| cpu_seconds(pid).unwrap_or(0.0);
    let cpu_before: Vec<f64> = server_pids.iter().map(|p| cpu(p)).collect();
    // The crash replay: kill -9 the server in the middle of the load; the
    // verification below then shows whether any acknowledged sign-up is lost.
    if let Some(after) = args.get("kill-server-after") {
        let after: f64 = after.parse().expect("--kill-server-after SECONDS");
        let pids = server_pids.clone();
        assert!(!pids.is_empty(), "--kill-server-after needs --server-pid");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(after)).await;
            for pid in &pids {
                let _ = std::process::Command::new("kill")
                    .args(["-9", pid])
                    .status();
            }
            println!(
                "killed             server {} with SIGKILL after {after} s",
                pids.join(", ")
            );
        });
    }
    // Registrants before the load, to check afterwards that repeated IDs
    // made no second entry.
    let registered_before = match (&target, args.get("database")) {
        (Target::Standby { .. }, Some(db)) => Some(registered(db).await),
        _ => None,
    };
    let own_before = cpu("self");
    // --rate R: the connections together send R sign-ups a second, spread
    // evenly (as wrk2 does), instead of each sending as fast as answers come.
    let rate: Option<f64> = args
        .get("rate")
        .map(|r| r.parse().expect("--rate SIGN-UPS-PER-SECOND"));
    let load = Arc::new(Load {
        addr,
        next: AtomicU64::new(0),
        total,
        deadline,
        target: target.clone(),
        repeat_every,
        offset,
        began: started,
        ready: tokio::sync::Barrier::new(connections as usize),
        go: std::sync::OnceLock::new(),
    });
    // The connections are spread over event loops of their own, one thread
    // each (as wrk does): a task is woken only by its own thread's I/O, so
    // the generator does not spend its CPU waking its other threads.
    let loops = crate::num(&args, "threads", default_threads()).clamp(1, 64);
    let mut threads = Vec::new();
    for l in 0..loops {
        let load = load.clone();
        let thread = std::thread::Builder::new()
            .name(format!("load-{l}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a load runtime");
                rt.block_on(async move {
                    let mut tasks = Vec::new();
                    for i in (l..connections).step_by(loops as usize) {
                        let pace = rate.map(|rate| {
                            let every = Duration::from_secs_f64(connections as f64 / rate);
                            Pace {
                                // Connections start staggered across one
                                // interval, after a second for all of them to
                                // connect.
                                first: started
                                    + Duration::from_secs(1)
                                    + every.mul_f64(i as f64 / connections as f64),
                                every,
                            }
                        });
                        tasks.push(tokio::spawn(connection(load.clone(), pace)));
                    }
                    let mut all = Tally::default();
                    for t in tasks {
                        all.merge(t.await.expect("task"));
                    }
                    all
                })
            })
            .expect("a load thread");
        threads.push(thread);
    }
    let mut all = Tally::default();
    for t in threads {
        let tally = tokio::task::spawn_blocking(move || t.join().expect("load thread"))
            .await
            .expect("join");
        all.merge(tally);
    }
    let go = load.go.get().copied().unwrap_or(started);
    // Paced, the load starts a second in (the first second only connects).
    let load_start = if rate.is_some() {
        started + Duration::from_secs(1)
    } else {
        go
    };
    let elapsed = load_start.elapsed().as_secs_f64();
    let own_cpu = cpu("self") - own_before;
    // A server gone by now (the crash replay killed it) has no figure.
    let server_cpu: Vec<Option<f64>> = server_pids
        .iter()
        .zip(&cpu_before)
        .map(|(p, before)| cpu_seconds(p).map(|after| after - before))
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
    // --timeline: the worst latency of each tenth of a second, to see when
    // the slow answers came (the wall clock lets them be set beside the
    // server's log).
    if args.contains_key("timeline") {
        let wall = std::time::SystemTime::now() - started.elapsed();
        // The p99 to beat: how many answers of each tenth were slower.
        let p99 = (pct(0.99) * 1000.0) as u32;
        let mut worst: BTreeMap<u32, (u32, u32, u32)> = BTreeMap::new();
        for (at, us) in &all.timeline {
            let w = worst.entry(at / 100).or_default();
            w.0 = w.0.max(*us);
            w.1 += 1;
            w.2 += u32::from(*us > p99);
        }
        for (tenth, (us, count, slow)) in worst {
            let at = wall + Duration::from_millis(u64::from(tenth) * 100);
            let secs = at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            println!(
                "timeline           {:.1} (+{:.1} s)  {count} sent, worst {:.1} ms, {slow} over the p99",
                secs % 3600.0,
                f64::from(tenth) / 10.0,
                f64::from(us) / 1000.0
            );
        }
    }
    if let Some(rate) = rate {
        println!(
            "offered            {rate:.0} sign-ups per second (open loop; latency from each request's due time)"
        );
    }
    println!(
        "connections open   in {:.0} ms, before the first sign-up (not counted below)",
        go.duration_since(started).as_secs_f64() * 1000.0
    );
    println!("requests answered  {}", all.latencies_us.len());
    println!(
        "sign-ups accepted  {accepted} in {elapsed:.2} s = {:.0} per second",
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
            .map(|c| c.map_or("?".to_string(), |c| format!("{c:.1}")))
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
    match (&target, args.get("database"), args.get("secret")) {
        (Target::Pretix { .. }, Some(db), _) => verify_pretix(db, &all.accepted).await,
        (Target::Standby { .. }, Some(db), Some(secret)) => {
            // Every request answered (no error, no kill): the new registrants
            // are exactly the distinct IDs answered 202.
            let complete = all.errors.is_empty() && !args.contains_key("kill-server-after");
            let expect_new = registered_before.filter(|_| complete);
            verify(db, secret, &all.accepted, expect_new).await
        }
        _ => {}
    }
}

async fn registered(database: &str) -> u64 {
    use standby_store::Store;
    let store = standby_store::connect(database).await.expect("database");
    store.stats().await.expect("stats").registered as u64
}

/// Every 202 is stored, and each national ID exactly once. `before`: the
/// registrants before a load in which every request was answered.
async fn verify(database: &str, secret: &str, accepted: &[u64], before: Option<u64>) {
    use standby_store::Store;
    let store = standby_store::connect(database).await.expect("database");
    let mut distinct: Vec<u64> = accepted.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let mut missing = 0;
    for n in &distinct {
        let (country, id) = crate::national_id(*n);
        let key = national_id_key(secret.as_bytes(), &country, &id);
        if !store.has_registrant(&key).await.expect("query") {
            missing += 1;
        }
    }
    let stats = store.stats().await.expect("stats");
    println!(
        "verification       {} distinct IDs answered 202 ({} answers repeated an ID), {missing} missing; {} registrants in the database",
        distinct.len(),
        accepted.len() - distinct.len(),
        stats.registered
    );
    if missing > 0 {
        std::process::exit(1);
    }
    if let Some(before) = before {
        // A second entry for a repeated ID would add more registrants than
        // distinct IDs; from an empty database every distinct ID adds one
        // (a later pass over the same IDs adds none).
        let added = (stats.registered as u64).saturating_sub(before);
        let fine = if before == 0 {
            added == distinct.len() as u64
        } else {
            added <= distinct.len() as u64
        };
        println!(
            "repeated IDs       {added} registrants added for {} distinct IDs ({before} before): {}",
            distinct.len(),
            if fine { "no second entry" } else { "MISMATCH" }
        );
        if !fine {
            std::process::exit(1);
        }
    }
}

/// Every redirect pretix answered is a waiting-list entry, and no address
/// is there twice.
async fn verify_pretix(database: &str, accepted: &[u64]) {
    use sqlx::Row;
    let pool = sqlx::PgPool::connect(database)
        .await
        .expect("pretix's database");
    let rows = sqlx::query("SELECT email FROM pretixbase_waitinglistentry")
        .fetch_all(&pool)
        .await
        .expect("waiting-list entries");
    let mut stored: HashMap<String, u64> = HashMap::new();
    for r in &rows {
        *stored.entry(r.get::<String, _>(0)).or_default() += 1;
    }
    let missing = accepted
        .iter()
        .filter(|n| !stored.contains_key(&format!("bench{n}@example.org")))
        .count();
    let doubled = stored.values().filter(|&&c| c > 1).count();
    println!(
        "verification       {} answered with a redirect, {missing} missing; {} entries in pretix's database, {doubled} addresses twice",
        accepted.len(),
        rows.len()
    );
    if missing > 0 {
        std::process::exit(1);
    }
}

/// The key the server stores for a national ID: the first 128 bits of its
/// HMAC-SHA256 (as `standby::security::national_id_hash`).
fn national_id_key(secret: &[u8], country: &str, id: &str) -> standby_store::NidKey {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).expect("any key length");
    mac.update(format!("national-id:{country}:{id}").as_bytes());
    let digest = mac.finalize().into_bytes();
    standby_store::NidKey::try_from(&digest[..16]).expect("a digest of 32 bytes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_repeated_id_is_one_really_posted_before() {
        let mut posted = std::collections::HashSet::new();
        let mut repeats = 0;
        for n in 0..100_000u64 {
            let (id_n, _) = super::registration(n, 20, false);
            if id_n != n {
                assert!(posted.contains(&id_n), "{n} repeats {id_n}, never posted");
                repeats += 1;
            }
            posted.insert(id_n);
        }
        // One in twenty after the first thousand or so.
        assert!((4_900..=5_000).contains(&repeats), "{repeats} repeats");
    }

    #[test]
    fn the_api_body_is_json_with_every_field_of_its_registration() {
        for n in [0u64, 7, 1_019, 99_999] {
            let (id_n, body) = super::registration(n, 20, false);
            let v: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
            let (country, id) = crate::national_id(id_n);
            assert_eq!(v["country"], country, "{body}");
            assert_eq!(v["national_id"], id, "{body}");
            assert_eq!(v["last_name"], format!("Person {n}"));
            assert_eq!(v["email"], format!("bench{n}@example.org"));
            assert_eq!(v["consent"], true);
            assert_eq!(v.as_object().unwrap().len(), 8, "{body}");
        }
    }
}
