//! `standby-bench simulate`: the real invitation engine (its domain rules,
//! its store on a SQLite file, `engine::tick`, accept and decline) on a
//! manual clock, with fake channels taking messages at their rates, and a
//! population answering along a response curve. Simulated time jumps to
//! the next thing that can happen, so a day takes seconds to minutes.
//!
//! ```text
//! standby-bench simulate [--doses 10,100,2000] [--p 0.05,0.15,0.3] [--seeds 3]
//!     [--decline 0.3] [--window 1800] [--email-rate 50] [--sms-rate 20] [--hours 24]
//! ```
//!
//! The response curve is the one Covidliste published in 2021, as in
//! `shared/reference/invitation_replay.py`: of those who answer, 31 % within
//! 5 minutes, 69 % within 30, 92 % within 2 hours (piecewise log-linear
//! through (0.25, 0), (5, .31), (30, .69), (120, .92), (480, .98), (1440, 1)
//! minutes). A share p accepts; a share d of the others declines (same
//! delay curve); the rest never answer.

use standby::config::Config;
use standby_domain::{Clock, ManualClock};
use standby_store::{
    EngineStore, InsertOutcome, NewCenter, NewOffer, NewRegistrant, Store, VaccineRecord,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

const CURVE: [(f64, f64); 6] = [
    (0.25, 0.0),
    (5.0, 0.31),
    (30.0, 0.69),
    (120.0, 0.92),
    (480.0, 0.98),
    (1440.0, 1.0),
];

/// A small deterministic generator (xorshift64*), so a seed replays exactly.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A delay (ms) from hand-over to answer, along the curve.
    fn delay_ms(&mut self) -> i64 {
        let u = self.next_f64();
        for w in CURVE.windows(2) {
            let ((t0, f0), (t1, f1)) = (w[0], w[1]);
            if u <= f1 {
                let x = if f1 > f0 { (u - f0) / (f1 - f0) } else { 0.0 };
                let minutes = (t0.ln() + x * (t1.ln() - t0.ln())).exp();
                return (minutes * 60_000.0) as i64;
            }
        }
        1440 * 60_000
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accept,
    Decline,
}

/// What one release came to.
#[derive(Debug, Default, Clone)]
struct Outcome {
    notified: usize,
    messages: usize,
    booked: i64,
    booked_at_8h: i64,
    fill_minutes: Option<f64>,
    strikes: i64,
    paused: i64,
    told_full: usize,
    told_late: usize,
}

struct Settings {
    decline: f64,
    window_s: i64,
    email_rate: i64,
    sms_rate: i64,
    horizon_ms: i64,
}

fn list<T: std::str::FromStr>(args: &HashMap<String, String>, key: &str, default: &str) -> Vec<T> {
    args.get(key)
        .map(String::as_str)
        .unwrap_or(default)
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("--{key} takes a comma-separated list"))
        })
        .collect()
}

pub async fn run(args: HashMap<String, String>) {
    standby::init_tls();
    let doses: Vec<i64> = list(&args, "doses", "10,100,2000");
    let ps: Vec<f64> = list(&args, "p", "0.05,0.15,0.3");
    let seeds = crate::num(&args, "seeds", 3);
    let settings = Settings {
        decline: args
            .get("decline")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.3),
        window_s: crate::num(&args, "window", 1800) as i64,
        email_rate: crate::num(&args, "email-rate", 50) as i64,
        sms_rate: crate::num(&args, "sms-rate", 20) as i64,
        horizon_ms: crate::num(&args, "hours", 24) as i64 * 3_600_000,
    };
    println!(
        "policy: today's engine; window {} s; e-mail {}/s, SMS {}/s; everyone with both channels; decline share {}",
        settings.window_s, settings.email_rate, settings.sms_rate, settings.decline
    );
    println!(
        "{:>5} {:>5} | {:>13} {:>13} | {:>10} {:>10} | {:>14} | {:>13} {:>13} | {:>13}",
        "doses",
        "p",
        "notified/dose",
        "messages/dose",
        "fill med",
        "fill p90",
        "unbooked at 8h",
        "strikes/dose",
        "pauses/dose",
        "told full/dose"
    );
    for &d in &doses {
        for &p in &ps {
            let mut runs = Vec::new();
            for seed in 0..seeds {
                runs.push(simulate_one(d, p, seed, &settings).await);
            }
            print_row(d, p, &runs);
        }
    }
}

fn print_row(doses: i64, p: f64, runs: &[Outcome]) {
    let n = runs.len() as f64;
    let per_dose = |f: &dyn Fn(&Outcome) -> f64| {
        runs.iter()
            .map(|r| f(r) / (r.booked.max(1) as f64))
            .sum::<f64>()
            / n
    };
    let mut fills: Vec<f64> = runs
        .iter()
        .map(|r| r.fill_minutes.unwrap_or(f64::INFINITY))
        .collect();
    fills.sort_by(f64::total_cmp);
    let quantile = |q: f64| fills[((fills.len() - 1) as f64 * q).round() as usize];
    let show = |m: f64| {
        if m.is_finite() {
            format!("{m:.0} min")
        } else {
            "unfilled".into()
        }
    };
    let unbooked_8h = runs
        .iter()
        .map(|r| 1.0 - r.booked_at_8h as f64 / doses as f64)
        .sum::<f64>()
        / n;
    println!(
        "{:>5} {:>5} | {:>13.1} {:>13.1} | {:>10} {:>10} | {:>13.1}% | {:>13.2} {:>13.2} | {:>13.2}",
        doses,
        p,
        per_dose(&|r| r.notified as f64),
        per_dose(&|r| r.messages as f64),
        show(quantile(0.5)),
        show(quantile(0.9)),
        100.0 * unbooked_8h,
        per_dose(&|r| r.strikes as f64),
        per_dose(&|r| r.paused as f64),
        per_dose(&|r| r.told_full as f64),
    );
}

/// One release of `doses` at a centre whose list holds enough people.
async fn simulate_one(doses: i64, p: f64, seed: u64, s: &Settings) -> Outcome {
    let tmp =
        std::env::temp_dir().join(format!("standby-sim-{}-{doses}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("temporary folder");
    let url = format!("sqlite://{}/sim.db", tmp.display());
    let outbox = tmp.join("outbox").display().to_string();
    let vars: HashMap<&str, String> = HashMap::from([
        (
            "STANDBY_SECRET",
            "simulation-secret-0123456789abcdef0123".into(),
        ),
        ("STANDBY_EMAIL", format!("file:{outbox}")),
        ("STANDBY_SMS", format!("file:{outbox}")),
        ("STANDBY_QUIET_HOURS", "none".into()),
        ("STANDBY_CLIENT_RATE", "0".into()),
    ]);
    let config = Config::load(Some("127.0.0.1:0".into()), Some(url.clone()), &move |k| {
        vars.get(k).cloned()
    })
    .expect("configuration");
    let store = standby::open_store(&url).await.expect("store");
    let start: jiff::Timestamp = "2026-11-24T08:00:00Z".parse().expect("time");
    let clock = Arc::new(ManualClock::new(start));
    let state = standby::App::new(config, store.clone(), clock.clone() as Arc<dyn Clock>);
    let t0 = clock.now_ms();
    // A centre, a vaccine, the doses, and enough people for any policy.
    let center = store
        .create_center(
            &NewCenter {
                name: "Heysel".into(),
                address: "Place de Belgique 1".into(),
                postal_code: "1020".into(),
                time_zone: "Europe/Brussels".into(),
                quiet_hours: Some("none".into()),
            },
            "sim",
            t0,
        )
        .await
        .expect("centre")
        .id;
    store
        .create_vaccine(
            &VaccineRecord {
                code: "PFZ".into(),
                name: "Comirnaty".into(),
                min_age: 18,
                max_age: 120,
            },
            "sim",
            t0,
        )
        .await
        .expect("vaccine");
    store
        .record_delivery(center, "PFZ", doses, "sim", t0)
        .await
        .expect("delivery");
    let people = ((doses as f64 / p) * 2.0).ceil() as u64 + 100;
    let mut batch = Vec::new();
    for n in 0..people {
        batch.push(NewRegistrant {
            nid_hash: crate::bench_key(9, n),
            country: "BE".into(),
            birth_ymd: 1950_0101 + (n % 40) as i64 * 1_0000,
            title: None,
            first_name: "Sim".into(),
            last_name: "Person".into(),
            email: format!("p{n}@sim.example"),
            phone: Some(format!("+3247{n:07}")),
            language: "en".into(),
            centers: vec![],
            availability: vec![],
            confirm_hash: format!("c{n}"),
            confirm_expires_at: t0,
            me_hash: format!("m{n}"),
            me_expires_at: t0 + 86_400_000,
            message: None,
            confirmed_at: Some(t0 - 86_400_000 + n as i64),
        });
        if batch.len() == 2_000 || n + 1 == people {
            let out = store
                .insert_registrations(std::mem::take(&mut batch), t0)
                .await
                .expect("people");
            assert!(out.iter().all(|o| matches!(o, InsertOutcome::Created(_))));
        }
    }
    let offer = store
        .create_offer(
            &NewOffer {
                center_id: center,
                vaccine: "PFZ".into(),
                doses,
                starts_at: t0 + 3_600_000,
                ends_at: t0 + s.horizon_ms + 3_600_000,
                response_ms: s.window_s * 1000,
            },
            "sim",
            t0,
        )
        .await
        .expect("offer")
        .id;
    let mut rng = Rng::new(seed + 1 + (doses as u64) * 31 + (p * 1000.0) as u64 * 7);
    let mut out = Outcome::default();
    // Answers to come: time → (token, answer).
    let mut answers: BTreeMap<(i64, u64), (String, Answer)> = BTreeMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut seq = 0u64;
    let mut now = t0;
    let end = t0 + s.horizon_ms;
    let mut at_8h = None;
    while now <= end {
        clock.set(jiff::Timestamp::from_millisecond(now).expect("time"));
        if at_8h.is_none() && now - t0 >= 8 * 3_600_000 {
            at_8h = Some(booked(&*store, offer).await);
        }
        standby::services::engine::tick(&state)
            .await
            .expect("engine pass");
        // The channels take what is due, at their rates, within this second.
        let mut busy = false;
        for (channel, rate) in [("email", s.email_rate), ("sms", s.sms_rate)] {
            let claimed = store
                .claim_messages(channel, "sim", now, 60_000, rate)
                .await
                .expect("claim");
            busy |= !claimed.is_empty();
            for (k, m) in claimed.iter().enumerate() {
                let at = now + k as i64 * 1000 / rate;
                store
                    .message_sent(m.id, "sim", at)
                    .await
                    .expect("hand-over");
                out.messages += 1;
                let Some(token) = m
                    .body
                    .split_whitespace()
                    .find_map(|w| w.split("/i/").nth(1))
                    .map(|t| t.trim_end_matches(['.', ',']).to_string())
                else {
                    continue;
                };
                // The person decides once, when the first message reaches them.
                if seen.insert(token.clone()) {
                    out.notified += 1;
                    let answer = if rng.next_f64() < p {
                        Some(Answer::Accept)
                    } else if rng.next_f64() < s.decline {
                        Some(Answer::Decline)
                    } else {
                        None
                    };
                    if let Some(a) = answer {
                        seq += 1;
                        answers.insert((at + rng.delay_ms(), seq), (token, a));
                    }
                }
            }
        }
        // The answers of this second, each at its own moment.
        let next_second = now + 1000;
        while let Some(entry) = answers.first_entry() {
            if entry.key().0 >= next_second {
                break;
            }
            let ((at, _), (token, answer)) = entry.remove_entry();
            clock.set(jiff::Timestamp::from_millisecond(at.max(now)).expect("time"));
            match answer {
                Answer::Accept => match standby::services::engine::accept(&state, &token).await {
                    Ok(_) => {
                        out.booked += 1;
                        if out.booked == doses {
                            out.fill_minutes = Some((at - t0) as f64 / 60_000.0);
                        }
                    }
                    Err(standby::error::AppError::Conflict {
                        code: "offer_filled",
                        ..
                    }) => out.told_full += 1,
                    Err(_) => out.told_late += 1,
                },
                Answer::Decline => {
                    let _ = standby::services::engine::decline(&state, &token).await;
                }
            }
        }
        // Filled: the answers still on their way are told the doses are
        // gone (counted), then the release is over.
        if out.booked >= doses && answers.is_empty() {
            break;
        }
        // Nothing to send: jump to the next answer or deadline.
        now = if busy {
            next_second
        } else {
            let next_answer = answers.keys().next().map(|k| k.0);
            let next_expiry = store
                .invitations_of_offer(offer)
                .await
                .expect("invitations")
                .iter()
                .filter(|i| i.1 == "sent")
                .filter_map(|i| i.3)
                .min();
            let next_due = store.next_message_due("email").await.ok().flatten();
            [next_answer, next_expiry, next_due]
                .into_iter()
                .flatten()
                .min()
                .map(|t| t.max(next_second))
                .unwrap_or(end + 1)
        };
    }
    // Filled (or the horizon reached) before 8 hours: what it booked by then.
    out.booked_at_8h = match at_8h {
        Some(n) => n,
        None => booked(&*store, offer).await,
    };
    let trail = store.audit_trail(1_000_000).await.expect("audit");
    let expiries = trail.iter().filter(|a| a.action == "invitation.expired");
    out.strikes = expiries
        .clone()
        .filter(|a| a.detail.contains("\"counted\":true"))
        .count() as i64;
    out.paused = expiries
        .filter(|a| a.detail.contains("\"paused\":true"))
        .count() as i64;
    store.close().await;
    let _ = std::fs::remove_dir_all(&tmp);
    out
}

async fn booked(store: &dyn Store, offer: i64) -> i64 {
    store
        .offer(offer)
        .await
        .expect("offer")
        .map(|(o, _)| o.booked)
        .unwrap_or(0)
}
