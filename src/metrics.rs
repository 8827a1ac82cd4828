//! Counters and latency sums kept in memory and rendered in Prometheus text
//! format at `/metrics`, together with gauges read from the database.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

/// Series by their rendered name and labels (`name{k="v"}`), so that
/// counting is a lookup with a key built in a reused buffer: no allocation
/// per request once a series exists.
static COUNTERS: LazyLock<Mutex<HashMap<String, f64>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

thread_local! {
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

fn series_key(out: &mut String, name: &str, labels: &[(&str, &str)]) {
    out.clear();
    out.push_str(name);
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        if v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
        } else {
            out.push_str(v);
        }
        out.push('"');
    }
    out.push('}');
}

fn bump(map: &mut HashMap<String, f64>, key: &str, v: f64) {
    match map.get_mut(key) {
        Some(total) => *total += v,
        None => {
            map.insert(key.to_string(), v);
        }
    }
}

pub fn add(name: &'static str, labels: &[(&'static str, &str)], v: f64) {
    KEY.with_borrow_mut(|key| {
        series_key(key, name, labels);
        bump(&mut COUNTERS.lock().expect("metrics lock"), key, v);
    });
}

pub fn message(channel: &str, outcome: &str) {
    add(
        "standby_messages_total",
        &[("channel", channel), ("outcome", outcome)],
        1.0,
    );
}

/// One method's requests on one route: their total time, their count, and
/// their count by status.
#[derive(Default)]
struct MethodStats {
    method: String,
    seconds: f64,
    count: f64,
    statuses: Vec<(u16, f64)>,
}

/// Requests by route, then method, then status: every request is counted,
/// so a request finds its counters by its route (no key built) and a short
/// scan; at `/metrics` they are rendered as series with the others.
static REQUESTS: LazyLock<Mutex<HashMap<String, Vec<MethodStats>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

pub fn request(route: &str, method: &str, status: u16, seconds: f64) {
    let mut map = REQUESTS.lock().expect("metrics lock");
    let methods = match map.get_mut(route) {
        Some(methods) => methods,
        None => map.entry(route.to_string()).or_default(),
    };
    let at = match methods.iter().position(|m| m.method == method) {
        Some(at) => at,
        None => {
            methods.push(MethodStats {
                method: method.to_string(),
                ..MethodStats::default()
            });
            methods.len() - 1
        }
    };
    let m = &mut methods[at];
    m.seconds += seconds;
    m.count += 1.0;
    match m.statuses.iter_mut().find(|(s, _)| *s == status) {
        Some((_, n)) => *n += 1.0,
        None => m.statuses.push((status, 1.0)),
    }
}

/// The request counters as series, as [`add`] would have keyed them.
fn request_series() -> Vec<(String, f64)> {
    let map = REQUESTS.lock().expect("metrics lock");
    let mut out = Vec::new();
    let mut key = String::new();
    for (route, methods) in map.iter() {
        for m in methods {
            for (status, n) in &m.statuses {
                let code = itoa_status(*status);
                let status = std::str::from_utf8(&code).unwrap_or("0");
                series_key(
                    &mut key,
                    "standby_http_requests_total",
                    &[("route", route), ("method", &m.method), ("status", status)],
                );
                out.push((key.clone(), *n));
            }
            let labels = [("route", route.as_str()), ("method", m.method.as_str())];
            series_key(
                &mut key,
                "standby_http_request_duration_seconds_sum",
                &labels,
            );
            out.push((key.clone(), m.seconds));
            series_key(
                &mut key,
                "standby_http_request_duration_seconds_count",
                &labels,
            );
            out.push((key.clone(), m.count));
        }
    }
    out
}

/// A status code's three digits without allocating.
fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

pub fn render_counters(out: &mut String) {
    let requests = request_series();
    let map = COUNTERS.lock().expect("metrics lock");
    let mut series: Vec<(&str, f64)> = map
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .chain(requests.iter().map(|(k, v)| (k.as_str(), *v)))
        .collect();
    series.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut last = "";
    for (key, v) in series {
        let name = key.split('{').next().unwrap_or(key);
        if name != last {
            let kind =
                if name.ends_with("_total") || name.ends_with("_count") || name.ends_with("_sum") {
                    "counter"
                } else {
                    "gauge"
                };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            last = name;
        }
        let _ = writeln!(out, "{key} {v}");
    }
}

/// A latency histogram with fixed buckets, counted without a lock, so that
/// every request can be recorded under a launch-day load. An operator reads
/// the tail from it (`histogram_quantile` in Prometheus); the sums above only
/// give means, and a mean hides the slow few.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    /// Requests at or under each bound (not cumulative; rendered cumulative).
    counts: [AtomicU64; BOUNDS_MS.len() + 1],
    sum_us: AtomicU64,
}

/// Upper bounds of the buckets, in milliseconds; the last bucket is +Inf.
const BOUNDS_MS: [u64; 16] = [
    1, 2, 5, 10, 20, 30, 40, 50, 60, 75, 100, 150, 250, 500, 1000, 5000,
];

impl Histogram {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            counts: [const { AtomicU64::new(0) }; BOUNDS_MS.len() + 1],
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn record(&self, elapsed: std::time::Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_MS
            .iter()
            .position(|&ms| us <= ms * 1000)
            .unwrap_or(BOUNDS_MS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            match BOUNDS_MS.get(i) {
                Some(ms) => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{le=\"{}\"}} {cumulative}",
                        *ms as f64 / 1000.0
                    );
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Every HTTP request, from the first middleware to the answer built.
pub static HTTP_LATENCY: Histogram = Histogram::new(
    "standby_http_latency_seconds",
    "Time from a request entering the application to its answer, every route.",
);

/// A sign-up from entering the writer's queue to its commit being answered:
/// the part of a sign-up's time spent waiting for, and in, the database.
pub static SIGNUP_STORE_LATENCY: Histogram = Histogram::new(
    "standby_signup_store_seconds",
    "Time from a sign-up entering the writer queue to its batch being committed and answered.",
);

pub fn render_histograms(out: &mut String) {
    HTTP_LATENCY.render(out);
    SIGNUP_STORE_LATENCY.render(out);
}

/// Connections open now, in this process (the connection loop counts them).
pub static OPEN_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// The gauges kept in memory: how many connections are open (against the
/// process's file limit, on launch day).
pub fn render_gauges(out: &mut String) {
    let _ = writeln!(
        out,
        "# TYPE standby_http_connections_open gauge\nstandby_http_connections_open {}",
        OPEN_CONNECTIONS.load(Ordering::Relaxed)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_rendered_as_series_per_route_method_and_status() {
        request("/test/{id}", "POST", 202, 0.5);
        request("/test/{id}", "POST", 202, 0.25);
        request("/test/{id}", "POST", 503, 0.25);
        request("/test/{id}", "GET", 200, 1.0);
        let mut s = String::new();
        render_counters(&mut s);
        for line in [
            "standby_http_requests_total{route=\"/test/{id}\",method=\"POST\",status=\"202\"} 2\n",
            "standby_http_requests_total{route=\"/test/{id}\",method=\"POST\",status=\"503\"} 1\n",
            "standby_http_requests_total{route=\"/test/{id}\",method=\"GET\",status=\"200\"} 1\n",
            "standby_http_request_duration_seconds_sum{route=\"/test/{id}\",method=\"POST\"} 1\n",
            "standby_http_request_duration_seconds_count{route=\"/test/{id}\",method=\"POST\"} 3\n",
            "standby_http_request_duration_seconds_count{route=\"/test/{id}\",method=\"GET\"} 1\n",
        ] {
            assert!(s.contains(line), "no {line} in {s}");
        }
        // One TYPE line per name, before its series.
        assert_eq!(
            s.matches("# TYPE standby_http_requests_total counter")
                .count(),
            1
        );
        let typed = s.find("# TYPE standby_http_requests_total").unwrap();
        assert!(typed < s.find("standby_http_requests_total{").unwrap());
    }

    #[test]
    fn renders_prometheus_text() {
        add("standby_test_total", &[("k", "a\"b")], 2.0);
        let mut s = String::new();
        render_counters(&mut s);
        assert!(s.contains("# TYPE standby_test_total counter"));
        assert!(s.contains("standby_test_total{k=\"a\\\"b\"} 2"));
    }

    #[test]
    fn a_histogram_counts_each_duration_in_its_bucket_and_renders_them_cumulative() {
        use std::time::Duration;
        let h = Histogram::new("standby_test_seconds", "test");
        h.record(Duration::from_micros(900)); // <= 1 ms
        h.record(Duration::from_millis(1)); // the bound itself is in its bucket
        h.record(Duration::from_micros(40_500)); // <= 50 ms
        h.record(Duration::from_secs(9)); // past every bound
        let mut s = String::new();
        h.render(&mut s);
        assert!(s.contains("# TYPE standby_test_seconds histogram"), "{s}");
        // Cumulative: each bucket counts everything at or under its bound.
        for (le, n) in [
            ("0.001", 2),
            ("0.03", 2),
            ("0.05", 3),
            ("5", 3),
            ("+Inf", 4),
        ] {
            let line = format!("standby_test_seconds_bucket{{le=\"{le}\"}} {n}\n");
            assert!(s.contains(&line), "no {line} in {s}");
        }
        assert!(s.contains("standby_test_seconds_count 4\n"), "{s}");
        assert!(s.contains("standby_test_seconds_sum 9.0424\n"), "{s}");
    }
}
