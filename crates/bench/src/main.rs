//! `standby-bench`: replays launch day against a running Standby, on
//! loopback only, bounded in count and time.
//!
//! ```text
//! standby-bench signup --url http://127.0.0.1:8080 --connections 1000 --requests 100000 \
//!     [--seconds 120] [--form] [--offset 0] [--database sqlite://standby.db --secret S] [--server-pid PID]
//!     [--kill-server-after SECONDS] [--threads N]
//! standby-bench signup --target pretix --url http://127.0.0.1:18100 --path '/ORG/EVENT/waitinglist/?item=N'
//!     --item N [--connections …] [--database postgres://…/pretix_db]
//! standby-bench matching --database URL [--registrants 1000000] [--candidates 10000]
//! standby-bench qvax [--doses 2000] [--people 6000] [--standby target/release/standby]
//! ```
//!
//! Each connection loads the form (with `--form`) and posts a distinct valid
//! registration: Belgian and Luxembourg IDs, one in twenty repeating an
//! earlier one. It reports sign-ups per second, latency percentiles, errors by
//! kind, the server's peak memory, and then checks in the database that every
//! 202 is stored exactly once.

mod matching;
mod qvax;
mod signup;
mod simulate;

use std::collections::HashMap;

pub fn args() -> (String, HashMap<String, String>) {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_default();
    let mut map = HashMap::new();
    let rest: Vec<String> = it.collect();
    let mut i = 0;
    while i < rest.len() {
        let key = rest[i].trim_start_matches("--").to_string();
        let value = rest.get(i + 1).filter(|v| !v.starts_with("--")).cloned();
        i += if value.is_some() { 2 } else { 1 };
        map.insert(key, value.unwrap_or_else(|| "true".into()));
    }
    (cmd, map)
}

pub fn num(map: &HashMap<String, String>, key: &str, default: u64) -> u64 {
    map.get(key)
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("--{key} takes a number"))
        })
        .unwrap_or(default)
}

/// A national ID's key for people stored straight into the database (no
/// HMAC needed): the scenario's tag, then `n`.
pub fn bench_key(tag: u8, n: u64) -> standby_store::NidKey {
    let mut key = [0u8; 16];
    key[0] = tag;
    key[8..].copy_from_slice(&n.to_be_bytes());
    standby_store::NidKey(key)
}

/// A valid Belgian national register number or Luxembourg matricule, distinct for each `n`.
pub fn national_id(n: u64) -> (String, String) {
    let year = 1930 + (n % 75) as i32;
    let month = 1 + ((n / 75) % 12) as u32;
    let day = 1 + ((n / 900) % 28) as u32;
    let seq = 1 + ((n / 25_200) % 997) as u32;
    if n % 10 < 7 {
        let body = format!("{:02}{month:02}{day:02}{seq:03}", year % 100);
        let v: u64 = body.parse().unwrap();
        let v = if year >= 2000 { v + 2_000_000_000 } else { v };
        ("BE".into(), format!("{body}{:02}", 97 - v % 97))
    } else {
        use standby_domain::national_id::{luhn_check_digit, verhoeff_check_digit};
        let body = format!("{year:04}{month:02}{day:02}{seq:03}");
        (
            "LU".into(),
            format!(
                "{body}{}{}",
                luhn_check_digit(&body),
                verhoeff_check_digit(&body)
            ),
        )
    }
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let (cmd, args) = args();
    // --threads N: the load generator's event loops (default one; see
    // `signup::default_threads`).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.get("threads").and_then(|n| n.parse().ok()) {
        builder.worker_threads(n);
    }
    let runtime = builder.enable_all().build().expect("runtime");
    match cmd.as_str() {
        "signup" => runtime.block_on(signup::run(args)),
        "matching" => runtime.block_on(matching::run(args)),
        "qvax" => runtime.block_on(qvax::run(args)),
        "simulate" => runtime.block_on(simulate::run(args)),
        _ => {
            eprintln!(
                "usage: standby-bench signup|matching [--options]; see the comment at the top of crates/bench/src/main.rs"
            );
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_valid_and_distinct() {
        let today = "2026-11-24".parse().unwrap();
        let mut seen = std::collections::HashSet::new();
        for n in 0..200_000u64 {
            let (c, id) = super::national_id(n);
            let country = standby_domain::Country::parse(&c).unwrap();
            assert!(
                standby_domain::NationalId::parse(country, &id, today).is_ok(),
                "{n}: {id}"
            );
            assert!(seen.insert(id), "{n} repeats");
        }
    }
}
