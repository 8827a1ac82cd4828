//! Counters and latency sums kept in memory and rendered in Prometheus text
//! format at `/metrics`, together with gauges read from the database.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;
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
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
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

pub fn request(route: &str, method: &str, status: u16, seconds: f64) {
    let code = itoa_status(status);
    let status = std::str::from_utf8(&code).unwrap_or("0");
    let labels = [("route", route), ("method", method), ("status", status)];
    KEY.with_borrow_mut(|key| {
        let mut map = COUNTERS.lock().expect("metrics lock");
        series_key(key, "standby_http_requests_total", &labels);
        bump(&mut map, key, 1.0);
        series_key(
            key,
            "standby_http_request_duration_seconds_sum",
            &labels[..2],
        );
        bump(&mut map, key, seconds);
        series_key(
            key,
            "standby_http_request_duration_seconds_count",
            &labels[..2],
        );
        bump(&mut map, key, 1.0);
    });
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
    let map = COUNTERS.lock().expect("metrics lock");
    let mut series: Vec<(&String, &f64)> = map.iter().collect();
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
