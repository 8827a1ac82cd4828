//! The invitation engine and the guarantees of CONTRACT section 5.

use crate::helpers::*;
use crate::setup::*;
use serde_json::{Value, json};
use standby::services::engine;
use standby_domain::Clock;
use std::time::Duration;

fn token_of(link: &str) -> String {
    link.rsplit('/').next().unwrap().to_string()
}

#[tokio::test]
async fn a_wave_invites_twice_the_doses_and_the_clock_starts_at_hand_over() {
    let app = spawn_app().await;
    let w = world(&app, 100).await;
    for n in 0..30 {
        person(&app, Person::new(n), 1_000 + i64::from(n)).await;
    }
    let id = offer(&app, &w, 5, 600).await;
    eventually("10 invitations handed over", || async {
        offer_state(&app, &w, id).await["invitations"]["sent"] == 10
    })
    .await;
    let o = offer_state(&app, &w, id).await;
    assert_eq!(o["invitations"]["queued"], 0);
    let links = invitation_links(&app);
    assert_eq!(links.len(), 10);
    let (s, inv) = app
        .get_json(&format!("/api/v1/invitations/{}", token_of(&links[0])))
        .await;
    assert_eq!(s, 200);
    assert_eq!(inv["status"], "sent");
    let expires: jiff::Timestamp = inv["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        expires.as_millisecond(),
        app.clock.now_ms() + 600_000,
        "window starts at hand-over (the clock has not moved)"
    );
    assert_eq!(app.stats().await["invited"], 10);
}

#[tokio::test]
async fn queued_invitations_never_expire_and_the_clock_starts_only_at_hand_over() {
    // No dispatcher: nothing is handed over.
    let app = spawn_with(Options {
        workers: false,
        ..Default::default()
    })
    .await;
    let w = world(&app, 100).await;
    for n in 0..4 {
        person(&app, Person::new(n), 1_000 + i64::from(n)).await;
    }
    let id = offer(&app, &w, 2, 60).await;
    engine::tick(&app.state).await.unwrap();
    assert_eq!(offer_state(&app, &w, id).await["invitations"]["queued"], 4);
    // Eight hours pass with the messages stuck: nobody expires, nobody is
    // penalised (19:00 in Brussels, before the quiet hours).
    app.clock.advance_ms(8 * 3600 * 1000);
    engine::tick(&app.state).await.unwrap();
    let o = offer_state(&app, &w, id).await;
    assert_eq!(
        (
            o["invitations"]["queued"].as_i64(),
            o["invitations"]["expired"].as_i64()
        ),
        (Some(4), Some(0))
    );
    // Now the channel works: the window starts from that moment.
    standby::spawn_workers(&app.state).unwrap();
    eventually("handed over", || async {
        offer_state(&app, &w, id).await["invitations"]["sent"] == 4
    })
    .await;
    let link = invitation_links(&app).pop().unwrap();
    let (_, inv) = app
        .get_json(&format!("/api/v1/invitations/{}", token_of(&link)))
        .await;
    let expires: jiff::Timestamp = inv["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires.as_millisecond(), app.clock.now_ms() + 60_000);
}

#[tokio::test]
async fn accept_books_first_come_first_served_and_late_ones_keep_their_place() {
    let app = spawn_app().await;
    let w = world(&app, 100).await;
    for n in 0..6 {
        person(&app, Person::new(n), 1_000 + i64::from(n)).await;
    }
    let id = offer(&app, &w, 2, 600).await;
    eventually("4 invitations out", || async {
        offer_state(&app, &w, id).await["invitations"]["sent"] == 4
    })
    .await;
    let links = invitation_links(&app);
    let mut outcomes = Vec::new();
    for link in &links {
        let r = app
            .client
            .post(app.url(&format!("/api/v1/invitations/{}/accept", token_of(link))))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        outcomes.push((status, body));
    }
    let booked = outcomes.iter().filter(|(s, _)| *s == 200).count();
    let filled = outcomes
        .iter()
        .filter(|(s, b)| *s == 409 && b["error"]["code"] == "offer_filled")
        .count();
    assert_eq!((booked, filled), (2, 2));
    assert_eq!(
        outcomes.iter().find(|(s, _)| *s == 200).unwrap().1["status"],
        "booked"
    );
    let o = offer_state(&app, &w, id).await;
    assert_eq!(
        (o["status"].as_str(), o["booked"].as_i64()),
        (Some("filled"), Some(2))
    );
    let stats = app.stats().await;
    assert_eq!(
        (stats["booked"].as_i64(), stats["waiting"].as_i64()),
        (Some(2), Some(4)),
        "late ones are back on the list"
    );
    // Booking confirmations went out by e-mail.
    eventually("booking mails", || async {
        std::fs::read_dir(&app.outbox)
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path())
                    .is_ok_and(|t| t.contains("appointment is confirmed"))
            })
            .count()
            == 2
    })
    .await;
    // Stock: 2 doses still reserved for the bookings, the rest free.
    let (_, stock) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/centers/{}/stock", w.center),
        &w.admin,
        None,
    )
    .await;
    assert_eq!(
        (stock[0]["on_hand"].as_i64(), stock[0]["reserved"].as_i64()),
        (Some(100), Some(2))
    );
}

#[tokio::test]
async fn a_thousand_simultaneous_accepts_for_ten_doses_make_ten_bookings() {
    let app = spawn_app().await;
    let w = world(&app, 100).await;
    for n in 0..60 {
        person(&app, Person::new(n), 1_000 + i64::from(n)).await;
    }
    let id = offer(&app, &w, 10, 600).await;
    eventually("20 out", || async {
        offer_state(&app, &w, id).await["invitations"]["sent"] == 20
    })
    .await;
    let tokens: Vec<String> = invitation_links(&app).iter().map(|l| token_of(l)).collect();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let client = app.client.clone();
        let url = app.url(&format!(
            "/api/v1/invitations/{}/accept",
            tokens[i % tokens.len()]
        ));
        tasks.push(tokio::spawn(async move {
            client.post(url).send().await.unwrap().status().as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let s = t.await.unwrap();
        assert!(matches!(s, 200 | 409), "{s}");
        ok += usize::from(s == 200);
    }
    assert_eq!(ok, 10);
    let o = offer_state(&app, &w, id).await;
    assert_eq!(o["booked"], 10);
    assert_eq!(app.stats().await["booked"], 10);
}

#[tokio::test]
async fn three_silences_after_hand_over_pause_with_a_message() {
    let app = spawn_app().await;
    let w = world(&app, 100).await;
    let who = person(&app, Person::new(1), 1_000).await;
    for round in 0..3 {
        let id = offer(&app, &w, 1, 60).await;
        eventually("invited", || async {
            offer_state(&app, &w, id).await["invitations"]["sent"] == 1
        })
        .await;
        app.clock.advance_ms(61_000);
        engine::tick(&app.state).await.unwrap();
        assert_eq!(
            offer_state(&app, &w, id).await["invitations"]["expired"],
            1,
            "round {round}"
        );
        call(
            &app,
            reqwest::Method::POST,
            &format!("/api/v1/offers/{id}/close"),
            &w.admin,
            None,
        )
        .await;
    }
    let row = app.store().registrant_raw_row(who).await.unwrap().unwrap();
    assert_eq!(
        row.iter()
            .find(|(c, _)| c == "status")
            .unwrap()
            .1
            .as_deref(),
        Some("paused")
    );
    eventually("pause mail", || async {
        std::fs::read_dir(&app.outbox).unwrap().flatten().any(|e| {
            std::fs::read_to_string(e.path())
                .is_ok_and(|t| t.contains("your sign-up is paused") && t.contains("/me/"))
        })
    })
    .await;
}

#[tokio::test]
async fn decline_keeps_the_place_and_the_wave_tops_up() {
    let app = spawn_app().await;
    let w = world(&app, 100).await;
    for n in 0..5 {
        person(&app, Person::new(n), 1_000 + i64::from(n)).await;
    }
    let id = offer(&app, &w, 1, 600).await;
    eventually("2 out", || async {
        offer_state(&app, &w, id).await["invitations"]["sent"] == 2
    })
    .await;
    let link = invitation_links(&app).pop().unwrap();
    let r = app
        .client
        .post(app.url(&format!("/api/v1/invitations/{}/decline", token_of(&link))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually("a third invited", || async {
        let o = offer_state(&app, &w, id).await;
        o["invitations"]["declined"] == 1 && o["invitations"]["sent"] == 2
    })
    .await;
    // Declining again, or accepting after declining, changes nothing.
    let r = app
        .client
        .post(app.url(&format!("/api/v1/invitations/{}/accept", token_of(&link))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn matching_respects_centre_age_availability_and_orders_older_bands_first() {
    let app = spawn_with(Options {
        workers: false,
        ..Default::default()
    })
    .await;
    let w = world(&app, 100).await;
    // Offer window: Wednesday 2026-11-25 09:00-17:00 UTC (10:00-18:00 in Brussels).
    let young = person(
        &app,
        Person {
            birth_year: 2010,
            ..Person::new(1)
        },
        1_000,
    )
    .await;
    let other_centre = person(
        &app,
        Person {
            centers: vec![w.center_b],
            ..Person::new(2)
        },
        1_001,
    )
    .await;
    let busy = person(
        &app,
        Person {
            availability: vec![(2, 1200, 1300)],
            ..Person::new(3)
        },
        1_002,
    )
    .await;
    let free_wed = person(
        &app,
        Person {
            availability: vec![(2, 600, 700)],
            birth_year: 1990,
            ..Person::new(4)
        },
        1_003,
    )
    .await;
    let this_centre = person(
        &app,
        Person {
            centers: vec![w.center],
            birth_year: 1990,
            ..Person::new(5)
        },
        1_004,
    )
    .await;
    let old_late = person(
        &app,
        Person {
            birth_year: 1940,
            ..Person::new(6)
        },
        9_000,
    )
    .await;
    let mid_early = person(
        &app,
        Person {
            birth_year: 1975,
            ..Person::new(7)
        },
        500,
    )
    .await;
    let id = offer(&app, &w, 50, 600).await;
    let (o, _) = app.store().offer(id).await.unwrap().unwrap();
    let today = jiff::civil::date(2026, 11, 24);
    let (lo, hi) = standby_domain::invitation::birth_bounds(today, 18, 120);
    let tz = jiff::tz::TimeZone::get("Europe/Brussels").unwrap();
    let windows = standby_domain::invitation::weekly_windows(
        jiff::Timestamp::from_millisecond(o.starts_at).unwrap(),
        jiff::Timestamp::from_millisecond(o.ends_at).unwrap(),
        &tz,
    );
    let q = standby_store::CandidateQuery {
        offer_id: id,
        center_id: w.center,
        today_ymd: 20_261_124,
        birth_lo: lo,
        birth_hi: hi,
        windows,
        limit: 100,
        since: 0,
        per_day: 3,
        need_phone: false,
    };
    let ids: Vec<i64> = app
        .store()
        .candidates(&q)
        .await
        .unwrap()
        .iter()
        .map(|c| c.registrant_id)
        .collect();
    assert_eq!(
        ids,
        vec![old_late, mid_early, free_wed, this_centre],
        "older band first, then earliest confirmation"
    );
    for excluded in [young, other_centre, busy] {
        assert!(!ids.contains(&excluded));
    }
}

#[tokio::test]
async fn one_open_invitation_per_person_across_offers_and_centres() {
    let app = spawn_with(Options {
        workers: false,
        ..Default::default()
    })
    .await;
    let w = world(&app, 100).await;
    call(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/centers/{}/deliveries", w.center_b),
        &w.admin,
        Some(json!({"vaccine": "PFZ", "doses": 10})),
    )
    .await;
    person(&app, Person::new(1), 1_000).await;
    let a = offer(&app, &w, 1, 600).await;
    let (s, e) = tomorrow();
    let (st, b) = call(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/centers/{}/offers", w.center_b),
        &w.admin,
        Some(json!({"vaccine": "PFZ", "doses": 1, "starts_at": s, "ends_at": e})),
    )
    .await;
    assert_eq!(st, 201);
    let b: i64 = b["id"].as_str().unwrap().parse().unwrap();
    engine::tick(&app.state).await.unwrap();
    engine::tick(&app.state).await.unwrap();
    let qa = offer_state(&app, &w, a).await["invitations"]["queued"]
        .as_i64()
        .unwrap();
    let qb = offer_state(&app, &w, b).await["invitations"]["queued"]
        .as_i64()
        .unwrap();
    assert_eq!(qa + qb, 1);
}

#[tokio::test]
async fn closing_withdraws_unsent_invitations_and_returns_unbooked_doses() {
    let app = spawn_with(Options {
        workers: false,
        ..Default::default()
    })
    .await;
    let w = world(&app, 100).await;
    for n in 0..3 {
        person(&app, Person::new(n), 1_000 + i64::from(n)).await;
    }
    let id = offer(&app, &w, 10, 600).await;
    let (_, stock) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/centers/{}/stock", w.center),
        &w.admin,
        None,
    )
    .await;
    assert_eq!(stock[0]["reserved"], 10);
    let (s, body) = call(&app, reqwest::Method::POST, &format!("/api/v1/centers/{}/offers", w.center), &w.admin, Some(json!({"vaccine": "PFZ", "doses": 91, "starts_at": tomorrow().0, "ends_at": tomorrow().1}))).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (409, Some("insufficient_stock"))
    );
    engine::tick(&app.state).await.unwrap();
    assert_eq!(offer_state(&app, &w, id).await["invitations"]["queued"], 3);
    let (s, o) = call(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/offers/{id}/close"),
        &w.admin,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        (o["status"].as_str(), o["invitations"]["withdrawn"].as_i64()),
        (Some("closed"), Some(3))
    );
    let (_, stock) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/centers/{}/stock", w.center),
        &w.admin,
        None,
    )
    .await;
    assert_eq!(
        (stock[0]["on_hand"].as_i64(), stock[0]["reserved"].as_i64()),
        (Some(100), Some(0))
    );
    assert_eq!(
        app.stats().await["waiting"],
        3,
        "everyone keeps their place"
    );
    // Their messages are withdrawn unsent.
    standby::spawn_workers(&app.state).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(invitation_links(&app).is_empty());
}
