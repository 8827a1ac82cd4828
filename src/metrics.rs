//! Counters and latency sums kept in memory and rendered in Prometheus text
//! format at `/metrics`, together with gauges read from the database.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};

type Key = (&'static str, Vec<(&'static str, String)>);

static COUNTERS: LazyLock<Mutex<BTreeMap<Key, f64>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

pub fn add(name: &'static str, labels: &[(&'static str, &str)], v: f64) {
    let key = (
        name,
        labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
    );
    *COUNTERS
        .lock()
        .expect("metrics lock")
        .entry(key)
        .or_insert(0.0) += v;
}

pub fn message(channel: &str, outcome: &str) {
    add(
        "standby_messages_total",
        &[("channel", channel), ("outcome", outcome)],
        1.0,
    );
}

pub fn request(route: &str, method: &str, status: u16, seconds: f64) {
    let status = status.to_string();
    let labels = [
        ("route", route),
        ("method", method),
        ("status", status.as_str()),
    ];
    add("standby_http_requests_total", &labels, 1.0);
    add(
        "standby_http_request_duration_seconds_sum",
        &labels[..2],
        seconds,
    );
    add(
        "standby_http_request_duration_seconds_count",
        &labels[..2],
        1.0,
    );
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render_counters(out: &mut String) {
    let map = COUNTERS.lock().expect("metrics lock");
    let mut last = "";
    for ((name, labels), v) in map.iter() {
        if *name != last {
            let kind =
                if name.ends_with("_total") || name.ends_with("_count") || name.ends_with("_sum") {
                    "counter"
                } else {
                    "gauge"
                };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            last = name;
        }
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(out, "{name}{{{}}} {v}", labels.join(","));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        add("standby_test_total", &[("k", "a\"b")], 2.0);
        let mut s = String::new();
        render_counters(&mut s);
        assert!(s.contains("# TYPE standby_test_total counter"));
        assert!(s.contains("standby_test_total{k=\"a\\\"b\"} 2"));
    }
}
