//! Candidate matching on a large list: fills a database with registrants
//! (in batches, straight through the store) and times the selection query the
//! invitation engine runs.

use standby_domain::invitation::{birth_bounds, weekly_windows, ymd};
use standby_store::{
    CandidateQuery, EngineStore, NewCenter, NewOffer, NewRegistrant, Store, VaccineRecord,
};
use std::collections::HashMap;
use std::time::Instant;

/// Stores a batch of registrants and confirms each of them at `confirmed_at`.
async fn load(
    store: &standby_store::SqlStore,
    batch: Vec<standby_store::NewRegistrant>,
    now: i64,
    confirmed_at: i64,
) {
    if batch.is_empty() {
        return;
    }
    let tokens: Vec<(String, String)> = batch
        .iter()
        .map(|r| (r.confirm_hash.clone(), format!("me2-{}", r.nid_hash)))
        .collect();
    store
        .insert_registrations(batch, now)
        .await
        .expect("insert");
    for (confirm, me) in &tokens {
        store
            .confirm_registrant(confirm, me, confirmed_at)
            .await
            .expect("confirm");
    }
}

pub async fn run(args: HashMap<String, String>) {
    let database = args
        .get("database")
        .cloned()
        .unwrap_or_else(|| "sqlite://bench-matching.db".into());
    let registrants = crate::num(&args, "registrants", 1_000_000);
    let candidates = crate::num(&args, "candidates", 10_000) as i64;
    let store = standby_store::connect(&database).await.expect("database");
    store.migrate().await.expect("migrate");
    let now = 1_764_000_000_000i64;
    let centers = store.list_centers().await.expect("centres");
    let center = match centers.first() {
        Some(c) => c.clone(),
        None => store
            .create_center(
                &NewCenter {
                    name: "Bench".into(),
                    address: "x".into(),
                    postal_code: "1".into(),
                    time_zone: "Europe/Brussels".into(),
                    quiet_hours: None,
                },
                "bench",
                now,
            )
            .await
            .expect("centre"),
    };
    let _ = store
        .create_vaccine(
            &VaccineRecord {
                code: "BENCH".into(),
                name: "Bench".into(),
                min_age: 18,
                max_age: 120,
            },
            "bench",
            now,
        )
        .await;
    let have = store.stats().await.expect("stats").registered as u64;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(2000);
    for n in have..registrants {
        let year = 1930 + (n % 80) as i64;
        batch.push(NewRegistrant {
            nid_hash: crate::bench_key(b'm', n),
            country: "BE".into(),
            birth_ymd: year * 10_000 + 101 + (n % 12) as i64 * 100,
            title: None,
            first_name: "B".into(),
            last_name: "P".into(),
            email: format!("b{n}@example.org"),
            phone: None,
            language: "fr".into(),
            centers: if n % 3 == 0 { vec![center.id] } else { vec![] },
            availability: if n % 2 == 0 {
                vec![((n % 7) as i64, 540, 1020)]
            } else {
                vec![]
            },
            confirm_hash: format!("c-{n}"),
            confirm_expires_at: i64::MAX / 2,
            me_hash: format!("m-{n}"),
            me_expires_at: i64::MAX / 2,
            message: None,
            confirmed_at: Some(now + n as i64),
        });
        if batch.len() == 2000 {
            load(&store, std::mem::take(&mut batch), now, now + n as i64).await;
            if n % 100_000 < 2000 {
                eprintln!(
                    "{n} registrants loaded ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    load(&store, batch, now, now).await;
    let starts = jiff::Timestamp::from_second(1_764_057_600).expect("ts");
    let offer = NewOffer {
        center_id: center.id,
        vaccine: "BENCH".into(),
        doses: 1,
        starts_at: starts.as_millisecond(),
        ends_at: starts.as_millisecond() + 8 * 3600 * 1000,
        response_ms: 600_000,
    };
    let offer_id = match store.create_offer(&offer, "bench", now).await {
        Ok(o) => o.id,
        Err(_) => {
            // No stock yet on a first run: deliver some, then release.
            let _ = store
                .record_delivery(center.id, "BENCH", 1_000_000, "bench", now)
                .await;
            store
                .create_offer(&offer, "bench", now)
                .await
                .expect("offer")
                .id
        }
    };
    let today: jiff::civil::Date = "2026-11-24".parse().expect("date");
    let (lo, hi) = birth_bounds(today, 18, 120);
    let tz = jiff::tz::TimeZone::get("Europe/Brussels").expect("tz");
    let q = CandidateQuery {
        offer_id,
        center_id: center.id,
        today_ymd: ymd(today),
        birth_lo: lo,
        birth_hi: hi,
        windows: weekly_windows(
            starts,
            jiff::Timestamp::from_millisecond(starts.as_millisecond() + 8 * 3600 * 1000)
                .expect("ts"),
            &tz,
        ),
        limit: candidates,
        since: 0,
        per_day: 3,
        need_phone: false,
    };
    if database.starts_with("postgres") {
        // As autovacuum would after a bulk load: fresh planner statistics.
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&database)
            .await
            .expect("connect");
        sqlx::query("ANALYZE")
            .execute(&mut conn)
            .await
            .expect("analyze");
    }
    let total = store.stats().await.expect("stats").waiting;
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..5 {
        let t = Instant::now();
        found = store.candidates(&q).await.expect("candidates").len();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    println!("waiting registrants  {total}");
    println!("candidates selected  {found} (asked {candidates})");
    println!(
        "selection ms         best {:.1}  median {:.1}  worst {:.1} (5 runs)",
        times[0], times[2], times[4]
    );
}
