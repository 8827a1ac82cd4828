//! The connection loop (`standby::server`): a client that sends nothing, or
//! sends its request's head too slowly, has its connection closed; an idle
//! keep-alive connection is closed after the same time; a stop lets the
//! request under way finish and closes the rest. Real TCP on loopback.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::spawn_app;

const TIMEOUT: Duration = Duration::from_millis(300);

/// A second server on the test app's state, with the header timeout
/// `timeout`, and the sender that stops it.
async fn server(
    app: &crate::helpers::TestApp,
    timeout: Duration,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(standby::server::serve_until(
        listener,
        standby::router(app.state.clone()),
        standby::server::Timeouts {
            header: timeout,
            body: timeout,
            body_min_rate: 1024,
        },
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop, serving)
}

/// Reads until the server closes the connection (or 5 s pass: a failure);
/// what was read.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection within 5 s");
    got
}

/// The server closes `stream` without a word, not before the header timeout
/// has run from `since`.
async fn closed_silently_after_the_timeout(stream: &mut TcpStream, since: Instant) {
    let got = read_to_close(stream).await;
    assert!(got.is_empty(), "nothing was answered: {got:?}");
    assert!(
        since.elapsed() >= TIMEOUT - Duration::from_millis(20),
        "closed after the timeout, not before: {:?}",
        since.elapsed()
    );
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let app = spawn_app().await;
    let (addr, _stop, _serving) = server(&app, TIMEOUT).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    closed_silently_after_the_timeout(&mut stream, started).await;
    // Counted for the operator (the counter is the process's: at least ours).
    let metrics = app.get_text("/metrics").await;
    let closed: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("standby_http_connections_closed_total{reason=\"header_timeout\"} ")
        })
        .expect("the header timeouts are counted")
        .parse()
        .unwrap();
    assert!(closed >= 1.0, "{metrics}");
    assert!(
        metrics.contains("\nstandby_http_connections_open "),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_off_at_the_timeout() {
    let app = spawn_app().await;
    let (addr, _stop, _serving) = server(&app, TIMEOUT).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // A header byte every 50 ms keeps the connection busy but never ends
    // the head: slowloris.
    let mut closed = false;
    for _ in 0..100 {
        if stream.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => panic!("no answer expected: {:?}", &buf[..n]),
            Err(_) => {}
        }
    }
    assert!(closed, "the slow head was cut off");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut off near the 300 ms timeout, not after 100 bytes: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_head_that_arrives_in_parts_within_the_timeout_is_answered() {
    let app = spawn_app().await;
    let (addr, _stop, _serving) = server(&app, TIMEOUT).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&HEALTHZ[..10]).await.unwrap();
    tokio::time::sleep(TIMEOUT / 3).await;
    stream.write_all(&HEALTHZ[10..]).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_timeout() {
    let app = spawn_app().await;
    let (addr, _stop, _serving) = server(&app, TIMEOUT).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Two requests on one connection: it is kept alive between them.
    for _ in 0..2 {
        stream.write_all(HEALTHZ).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let idle = Instant::now();
    closed_silently_after_the_timeout(&mut stream, idle).await;
}

#[tokio::test]
async fn a_stop_closes_idle_connections_and_ends_the_loop() {
    let app = spawn_app().await;
    // A long header timeout: only the stop can close these connections.
    let (addr, stop, serving) = server(&app, Duration::from_secs(600)).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(HEALTHZ).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Let the loop accept the second connection before it stops.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("the loop ended once its connections closed")
        .unwrap()
        .unwrap();
    assert!(read_to_close(&mut idle).await.is_empty());
    assert!(read_to_close(&mut silent).await.is_empty());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

/// A request whose head names a body of `length` bytes, of which `sent`
/// are sent before the client stalls.
fn stalled_post(path: &str, length: usize, sent: usize) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(b' ', sent));
    req
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_its_connection_closed() {
    let app = spawn_app().await;
    let (addr, _stop, _serving) = server(&app, TIMEOUT).await;
    let before = body_timeouts(&app).await;
    for path in ["/api/v1/registrations", "/api/v1/login"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(&stalled_post(path, 100, 10))
            .await
            .unwrap();
        let started = Instant::now();
        let got = read_to_close(&mut stream).await;
        let answer = String::from_utf8_lossy(&got);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
        assert!(
            started.elapsed() >= TIMEOUT - Duration::from_millis(20),
            "not before the timeout: {:?}",
            started.elapsed()
        );
    }
    assert!(body_timeouts(&app).await >= before + 2.0);
}

#[tokio::test]
async fn a_large_body_gets_more_time_at_the_minimum_rate() {
    let app = spawn_app().await;
    let (addr, _stop, _serving) = server(&app, TIMEOUT).await;
    // 16,000 bytes at 1,024 B/s: 15 s more than the 300 ms timeout. A body
    // that arrives in two halves 600 ms apart is still read.
    let body = format!("{{\"x\": \"{}\"}}", "a".repeat(15_990));
    let head = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..8_000]).await.unwrap();
    tokio::time::sleep(TIMEOUT * 2).await;
    stream.write_all(&body.as_bytes()[8_000..]).await.unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).to_string();
    // Read whole, then refused for what it says (no e-mail): not a 408.
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

async fn body_timeouts(app: &crate::helpers::TestApp) -> f64 {
    app.get_text("/metrics")
        .await
        .lines()
        .find_map(|l| {
            l.strip_prefix("standby_http_connections_closed_total{reason=\"body_timeout\"} ")
        })
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}
