//! The HTTP/1.1 connection loop: accepts connections, serves each with
//! hyper, closes connections that send nothing, and stops gracefully.
//!
//! `axum::serve` served before; this loop does the same with three
//! differences a launch day needs:
//! - a client has [`HEADER_READ_TIMEOUT`] to send a request's head (and
//!   [`BODY_READ_TIMEOUT`] more for its body, answered 408 after), and an
//!   idle keep-alive connection is closed after the same time (hyper's
//!   header timer also runs while it waits for the next request). Without
//!   it a connection that sends nothing, or a byte a minute (slowloris),
//!   held its socket and ~24 KiB of buffers for as long as the client liked,
//!   and enough of them would use up the process's file limit;
//! - HTTP/1.1 only (the product serves nothing else): no preface sniffing
//!   for HTTP/2 on every connection;
//! - each connection waits for the stop on a oneshot of its own, instead of
//!   every connection polling one shared channel, under its lock, whenever
//!   it wakes (0.7 % of the server's samples in a surge's `perf` profile;
//!   no change in sign-ups per second could be measured).

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Notify, oneshot};
use tower::ServiceExt;

/// How long a client may take to send a request's head, and how long an
/// idle keep-alive connection stays open (nginx: 60 s and 75 s). Not
/// shorter: the 25,000-connection replay opens every connection before the
/// first request, which took 8 s here.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client may take to send a request's body once its head has
/// arrived, plus one second for each [`BODY_MIN_RATE`] bytes it announced:
/// a client that sent its head and then stalled held its connection for
/// ever (200 such connections were still open after 185 s).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The slowest a large body may come (bytes a second) before its time runs out.
pub const BODY_MIN_RATE: u64 = 1024;

/// The connection loop's time limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a request's head, and for an idle keep-alive connection.
    pub header: Duration,
    /// For a request's body, from its head on (plus its length at `body_min_rate`).
    pub body: Duration,
    pub body_min_rate: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: HEADER_READ_TIMEOUT,
            body: BODY_READ_TIMEOUT,
            body_min_rate: BODY_MIN_RATE,
        }
    }
}

/// When a request's body must have arrived, kept in its extensions: a body
/// read that fails after it is answered 408 (`web::extract`).
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub tokio::time::Instant);

/// A request body that fails once its deadline has passed. The timer is
/// only set when the body does not arrive with the head (most do, in the
/// same packet).
pub struct TimedBody {
    inner: hyper::body::Incoming,
    deadline: tokio::time::Instant,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl TimedBody {
    fn new(inner: hyper::body::Incoming, deadline: tokio::time::Instant) -> Self {
        TimedBody {
            inner,
            deadline,
            timer: None,
        }
    }
}

/// The error of a body whose time ran out.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = self.get_mut();
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            crate::metrics::add(
                "standby_http_connections_closed_total",
                &[("reason", "body_timeout")],
                1.0,
            );
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting, lets each request under way finish and closes every
/// connection (idle ones at once).
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    timeouts: Timeouts,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .keep_alive(true);
    let open = Arc::new(Open::default());
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        let (stop, listed) = Open::add(&open);
        let http = http.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // Unlisted when this task ends, even by a panic.
            let _listed = listed;
            let service = hyper::service::service_fn(
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    if http_body::Body::is_end_stream(req.body()) {
                        return app.clone().oneshot(req.map(axum::body::Body::new));
                    }
                    let announced = http_body::Body::size_hint(req.body()).lower();
                    let deadline = tokio::time::Instant::now()
                        + timeouts.body
                        + Duration::from_secs(announced / timeouts.body_min_rate.max(1));
                    req.extensions_mut().insert(BodyDeadline(deadline));
                    app.clone().oneshot(
                        req.map(|body| axum::body::Body::new(TimedBody::new(body, deadline))),
                    )
                },
            );
            let mut conn = pin!(http.serve_connection(TokioIo::new(stream), service));
            let ended = tokio::select! {
                biased;
                ended = conn.as_mut() => ended,
                _ = stop => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if ended.is_err_and(|e| e.is_timeout()) {
                crate::metrics::add(
                    "standby_http_connections_closed_total",
                    &[("reason", "header_timeout")],
                    1.0,
                );
            }
        });
    }
    drop(listener);
    open.stop_all().await;
    Ok(())
}

/// What to do when `accept` fails: a connection reset before it was
/// accepted is nothing; anything else (above all `EMFILE`, the process's
/// file limit reached) is logged and the loop pauses a moment, so that it
/// does not spin while connections close.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    crate::metrics::add(
        "standby_http_accept_errors_total",
        &[("kind", accept_error_kind(e))],
        1.0,
    );
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The metrics label of an accept error: the file limits by name, since
/// they are the ones an operator can raise.
fn accept_error_kind(e: &std::io::Error) -> &'static str {
    // EMFILE and ENFILE (the same numbers on Linux, the BSDs and macOS).
    match e.raw_os_error() {
        Some(24) => "process_file_limit",
        Some(23) => "system_file_limit",
        _ => "other",
    }
}

/// The open connections, each with the sender that tells it to stop.
#[derive(Default)]
struct Open {
    stops: Mutex<HashMap<u64, Option<oneshot::Sender<()>>>>,
    /// The id the next connection gets.
    next_id: std::sync::atomic::AtomicU64,
    /// Woken whenever the last open connection closes.
    emptied: Notify,
}

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Option<oneshot::Sender<()>>>> {
        self.stops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists a connection: the receiver that tells it to stop, and the
    /// guard that unlists it when dropped.
    fn add(open: &Arc<Open>) -> (oneshot::Receiver<()>, Listed) {
        let id = open
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        open.lock().insert(id, Some(tx));
        crate::metrics::OPEN_CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (
            rx,
            Listed {
                open: open.clone(),
                id,
            },
        )
    }

    fn remove(&self, id: u64) {
        let mut stops = self.lock();
        stops.remove(&id);
        if stops.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// Tells every connection to stop, then waits until all have closed
    /// (a connection stays listed until its task ends).
    async fn stop_all(&self) {
        for stop in self.lock().values_mut() {
            if let Some(stop) = stop.take() {
                let _ = stop.send(());
            }
        }
        loop {
            // Created before the check, so a close in between still wakes it.
            let emptied = self.emptied.notified();
            if self.lock().is_empty() {
                return;
            }
            emptied.await;
        }
    }
}

/// A connection's place in [`Open`], given up when its task ends.
struct Listed {
    open: Arc<Open>,
    id: u64,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.open.remove(self.id);
        crate::metrics::OPEN_CONNECTIONS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// These tests count `OPEN_CONNECTIONS`, which is the process's: one at a time.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test]
    async fn the_open_connections_gauge_follows_each_connection() {
        let _serial = SERIAL.lock().await;
        let open = Arc::new(Open::default());
        let before = crate::metrics::OPEN_CONNECTIONS.load(Ordering::Relaxed);
        let (_a, first) = Open::add(&open);
        let (_b, second) = Open::add(&open);
        assert_eq!(
            crate::metrics::OPEN_CONNECTIONS.load(Ordering::Relaxed),
            before + 2
        );
        drop(first);
        assert_eq!(
            crate::metrics::OPEN_CONNECTIONS.load(Ordering::Relaxed),
            before + 1
        );
        drop(second);
        assert_eq!(
            crate::metrics::OPEN_CONNECTIONS.load(Ordering::Relaxed),
            before
        );
        let mut out = String::new();
        crate::metrics::render_gauges(&mut out);
        assert!(
            out.contains(&format!("\nstandby_http_connections_open {before}\n")),
            "{out}"
        );
    }

    #[test]
    fn accept_errors_name_the_file_limits() {
        let err = |n| std::io::Error::from_raw_os_error(n);
        assert_eq!(accept_error_kind(&err(24)), "process_file_limit");
        assert_eq!(accept_error_kind(&err(23)), "system_file_limit");
        assert_eq!(accept_error_kind(&err(12)), "other");
    }

    #[tokio::test]
    async fn stop_all_waits_for_every_connection_and_tells_each_to_stop() {
        let _serial = SERIAL.lock().await;
        let open = Arc::new(Open::default());
        let (first, first_listed) = Open::add(&open);
        let (second, second_listed) = Open::add(&open);
        let stopping = tokio::spawn({
            let open = open.clone();
            async move { open.stop_all().await }
        });
        first.await.expect("the first connection was told to stop");
        drop(first_listed);
        tokio::task::yield_now().await;
        assert!(!stopping.is_finished(), "one connection is still open");
        second
            .await
            .expect("the second connection was told to stop");
        drop(second_listed);
        tokio::time::timeout(Duration::from_secs(5), stopping)
            .await
            .expect("stop_all ended once both closed")
            .unwrap();
    }

    #[tokio::test]
    async fn a_connection_whose_task_panicked_does_not_hold_up_the_stop() {
        let _serial = SERIAL.lock().await;
        let open = Arc::new(Open::default());
        let (_stop, listed) = Open::add(&open);
        let task = tokio::spawn(async move {
            let _listed = listed;
            panic!("a handler panicked");
        });
        assert!(task.await.unwrap_err().is_panic());
        tokio::time::timeout(Duration::from_secs(5), open.stop_all())
            .await
            .expect("nothing left open");
    }

    #[tokio::test]
    async fn stop_all_with_nothing_open_ends_at_once() {
        let open = Open::default();
        tokio::time::timeout(Duration::from_secs(5), open.stop_all())
            .await
            .expect("nothing to wait for");
    }
}
