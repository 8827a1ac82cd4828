//! Time rules and fair consequences (issue 23): quiet hours, offers that
//! stop inviting near their end and close at it, silences that count only
//! within a person's availability, at most three invitations a day, the
//! least invited first, and invitations before sign-up confirmations.

use crate::helpers::*;
use crate::setup::*;
use reqwest::Method;
use serde_json::json;
use standby::services::engine;
use standby_domain::Clock;
use standby_store::*;
use std::time::Duration;

const HOUR: i64 = 3_600_000;

async fn offer_between(
    app: &TestApp,
    w: &World,
    doses: i64,
    starts: &str,
    ends: &str,
    response_s: i64,
) -> i64 {
    let (status, body) = call(
        app,
        Method::POST,
        &format!("/api/v1/centers/{}/offers", w.center),
        &w.admin,
        Some(json!({"vaccine": "PFZ", "doses": doses, "starts_at": starts, "ends_at": ends, "response_seconds": response_s})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn nobody_is_invited_during_quiet_hours_and_the_clock_starts_in_the_morning() {
    let app = spawn_app().await;
    let mut w = world(&app, 10).await;
    for n in 1..=2 {
        person(&app, Person::new(n), 1_000 + i64::from(n)).await;
    }
    // 20:30 UTC is 21:30 in Brussels: quiet until 08:00 there (07:00 UTC).
    app.clock.advance_ms(10 * HOUR + HOUR / 2);
    let id = offer(&app, &w, 1, 600).await;
    for _ in 0..3 {
        engine::tick(&app.state).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o = offer_state(&app, &w, id).await;
    assert_eq!(
        o["invitations"]["queued"].as_i64().unwrap() + o["invitations"]["sent"].as_i64().unwrap(),
        0,
        "{o}"
    );
    app.clock.advance_ms(10 * HOUR + HOUR / 2);
    log_in_again(&app, &mut w).await;
    assert_eq!(
        app.clock.now(),
        "2026-11-25T07:00:00Z".parse::<jiff::Timestamp>().unwrap()
    );
    eventually("invited in the morning", || async {
        offer_state(&app, &w, id).await["invitations"]["sent"] == 2
    })
    .await;
    let token = invitation_links(&app)[0]
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let (_, inv) = app.get_json(&format!("/api/v1/invitations/{token}")).await;
    let expires: jiff::Timestamp = inv["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires.as_millisecond(), app.clock.now_ms() + 600_000);
}

#[tokio::test]
async fn invitations_queued_when_quiet_hours_begin_wait_for_the_morning() {
    let app = spawn_with(Options {
        workers: false,
        ..Default::default()
    })
    .await;
    let mut w = world(&app, 10).await;
    for n in 1..=2 {
        person(&app, Person::new(n), 1_000 + i64::from(n)).await;
    }
    // 19:59 UTC, 20:59 in Brussels: the wave is queued, not yet sent.
    app.clock.advance_ms(10 * HOUR - 60_000);
    let id = offer(&app, &w, 1, 600).await;
    engine::tick(&app.state).await.unwrap();
    assert_eq!(offer_state(&app, &w, id).await["invitations"]["queued"], 2);
    // Two minutes later it is quiet: the queued messages are held back.
    app.clock.advance_ms(120_000);
    engine::tick(&app.state).await.unwrap();
    standby::spawn_workers(&app.state).unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let o = offer_state(&app, &w, id).await;
    assert_eq!(
        (
            o["invitations"]["queued"].as_i64(),
            o["invitations"]["sent"].as_i64()
        ),
        (Some(2), Some(0)),
        "{o}"
    );
    assert!(invitation_links(&app).is_empty(), "nothing left at night");
    // 08:00 in Brussels.
    app.clock.advance_ms(11 * HOUR - 60_000);
    log_in_again(&app, &mut w).await;
    eventually("handed over in the morning", || async {
        offer_state(&app, &w, id).await["invitations"]["sent"] == 2
    })
    .await;
}

#[tokio::test]
async fn an_offer_stops_inviting_near_its_end_and_closes_at_it() {
    let app = spawn_app().await;
    let w = world(&app, 10).await;
    for n in 1..=4 {
        person(&app, Person::new(n), 1_000 + i64::from(n)).await;
    }
    // Ends in 20 minutes with a 30-minute response window: nobody invited.
    let short = offer_between(
        &app,
        &w,
        2,
        "2026-11-24T10:00:00Z",
        "2026-11-24T10:20:00Z",
        1_800,
    )
    .await;
    // Ends in two hours with a 10-minute window: invites.
    let id = offer_between(
        &app,
        &w,
        2,
        "2026-11-24T10:00:00Z",
        "2026-11-24T12:00:00Z",
        600,
    )
    .await;
    eventually("the longer offer invites", || async {
        offer_state(&app, &w, id).await["invitations"]["sent"] == 4
    })
    .await;
    let o = offer_state(&app, &w, short).await;
    assert_eq!(o["invitations"]["sent"], 0, "{o}");
    let token = invitation_links(&app)[0]
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        app.client
            .post(app.url(&format!("/api/v1/invitations/{token}/accept")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Past its end, each offer closes: unbooked doses back to the stock.
    app.clock.advance_ms(2 * HOUR);
    engine::tick(&app.state).await.unwrap();
    for (offer, booked) in [(short, 0), (id, 1)] {
        let o = offer_state(&app, &w, offer).await;
        assert_eq!(
            (o["status"].as_str(), o["booked"].as_i64()),
            (Some("closed"), Some(booked)),
            "{o}"
        );
        assert_eq!(o["invitations"]["sent"], 0, "nothing left open: {o}");
    }
    let (_, stock) = call(
        &app,
        Method::GET,
        &format!("/api/v1/centers/{}/stock", w.center),
        &w.admin,
        None,
    )
    .await;
    assert_eq!(
        (stock[0]["on_hand"].as_i64(), stock[0]["reserved"].as_i64()),
        (Some(10), Some(1))
    );
    let metrics = app.get_text("/metrics").await;
    assert!(metrics.contains("standby_offers_ended_total"), "counted");
}

#[tokio::test]
async fn a_silence_outside_the_persons_availability_never_counts() {
    let app = spawn_app().await;
    let w = world(&app, 10).await;
    // Available on Wednesdays 10:00-18:00 (the offers' window), invited on a
    // Tuesday morning: three silences, no strike, no pause.
    let who = person(
        &app,
        Person {
            availability: vec![(2, 600, 1080)],
            ..Person::new(1)
        },
        1_000,
    )
    .await;
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
            Method::POST,
            &format!("/api/v1/offers/{id}/close"),
            &w.admin,
            None,
        )
        .await;
    }
    let row = app.store().registrant_raw_row(who).await.unwrap().unwrap();
    let status = row.iter().find(|(c, _)| c == "status").unwrap().1.clone();
    assert_eq!(status.as_deref(), Some("waiting"));
    let trail = app.store().audit_trail(500).await.unwrap();
    let expiries: Vec<&str> = trail
        .iter()
        .filter(|a| a.action == "invitation.expired")
        .map(|a| a.detail.as_str())
        .collect();
    assert_eq!(expiries.len(), 3);
    assert!(
        expiries.iter().all(|d| d.contains("\"counted\":false")),
        "{expiries:?}"
    );
}

#[tokio::test]
async fn at_most_three_invitations_a_day_and_declines_never_count() {
    let app = spawn_app().await;
    let mut w = world(&app, 10).await;
    let who = person(&app, Person::new(1), 1_000).await;
    for round in 0..3 {
        let id = offer(&app, &w, 1, 600).await;
        eventually("invited", || async {
            offer_state(&app, &w, id).await["invitations"]["sent"] == 1
        })
        .await;
        let links = invitation_links(&app);
        let token = links
            .iter()
            .map(|l| l.rsplit('/').next().unwrap().to_string())
            .find(|_| true)
            .unwrap();
        // Declining is free: the person stays waiting, never paused.
        let mut declined = false;
        for link in &links {
            let t = link.rsplit('/').next().unwrap();
            let r = app
                .client
                .post(app.url(&format!("/api/v1/invitations/{t}/decline")))
                .send()
                .await
                .unwrap();
            declined |= r.status() == 200;
        }
        assert!(declined, "round {round} ({token})");
        call(
            &app,
            Method::POST,
            &format!("/api/v1/offers/{id}/close"),
            &w.admin,
            None,
        )
        .await;
        for e in std::fs::read_dir(&app.outbox).unwrap().flatten() {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let fourth = offer(&app, &w, 1, 600).await;
    for _ in 0..3 {
        engine::tick(&app.state).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o = offer_state(&app, &w, fourth).await;
    assert_eq!(
        o["invitations"]["sent"].as_i64().unwrap() + o["invitations"]["queued"].as_i64().unwrap(),
        0,
        "a fourth in 24 h: {o}"
    );
    // A day later the person is invited again.
    app.clock.advance_ms(24 * HOUR);
    log_in_again(&app, &mut w).await;
    eventually("invited again a day later", || async {
        offer_state(&app, &w, fourth).await["invitations"]["sent"] == 1
    })
    .await;
    let row = app.store().registrant_raw_row(who).await.unwrap().unwrap();
    assert_eq!(
        row.iter()
            .find(|(c, _)| c == "status")
            .unwrap()
            .1
            .as_deref(),
        Some("invited")
    );
}

#[tokio::test]
async fn within_an_age_band_the_least_invited_come_first() {
    let app = spawn_app().await;
    let w = world(&app, 10).await;
    let first = person(&app, Person::new(1), 1_000).await;
    let second = person(&app, Person::new(2), 1_001).await;
    let third = person(&app, Person::new(3), 1_002).await;
    // The earliest confirmed has been invited twice before.
    let raw = sqlx_any(&app.database_url).await;
    raw(format!(
        "UPDATE registrants SET invited_count = 2 WHERE id = {first}"
    ))
    .await;
    let id = offer(&app, &w, 1, 600).await;
    eventually("two invited", || async {
        offer_state(&app, &w, id).await["invitations"]["sent"] == 2
    })
    .await;
    let invited: Vec<i64> = app
        .store()
        .invitations_of_offer(id)
        .await
        .unwrap()
        .iter()
        .map(|i| i.0)
        .collect();
    assert_eq!(invited, vec![second, third]);
}

/// Runs one statement on the test's database.
async fn sqlx_any(
    url: &str,
) -> impl Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    let url = url.to_string();
    move |sql: String| {
        let url = url.clone();
        Box::pin(async move {
            use sqlx::Connection;
            let sql = sqlx::AssertSqlSafe(sql);
            if url.starts_with("sqlite:") {
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            } else {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
        })
    }
}

#[tokio::test]
async fn invitations_leave_before_sign_up_confirmations() {
    let tmp = tempfile::tempdir().unwrap();
    let s = connect(&fresh_database_url(tmp.path()).await)
        .await
        .unwrap();
    s.migrate().await.unwrap();
    let message = |reference: &str, kind: &str| NewMessage {
        reference: reference.into(),
        channel: "email".into(),
        kind: kind.into(),
        registrant_id: None,
        recipient: "x@example.be".into(),
        subject: None,
        body: "b".into(),
    };
    for n in 0..5 {
        s.enqueue_message(&message(&format!("confirm-{n}"), "confirmation"), 10 + n)
            .await
            .unwrap();
    }
    s.enqueue_message(&message("booking-1", "booking"), 100)
        .await
        .unwrap();
    s.enqueue_message(&message("invite-1", "invitation"), 200)
        .await
        .unwrap();
    let claimed = s
        .claim_messages("email", "w", 1_000, 60_000, 3)
        .await
        .unwrap();
    let refs: Vec<&str> = claimed.iter().map(|m| m.reference.as_str()).collect();
    assert_eq!(refs, ["booking-1", "invite-1", "confirm-0"]);
}

#[tokio::test]
async fn the_order_is_explained_on_a_public_page_in_four_languages() {
    let app = spawn_app().await;
    let mut titles = std::collections::HashSet::new();
    for (lang, word) in [
        ("fr", "invité"),
        ("nl", "uitgenodigd"),
        ("de", "eingeladen"),
        ("en", "invited"),
    ] {
        let r = app
            .client
            .get(app.url(&format!("/order?lang={lang}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{lang}");
        let html = r.text().await.unwrap();
        assert!(html.contains(&format!("<html lang=\"{lang}\"")), "{lang}");
        assert!(html.contains(word), "{lang}");
        // This deployment's own figures: 3 a day, pause after 3, 21:00-08:00.
        assert!(
            html.contains(" 3 ") && html.contains("21:00") && html.contains("08:00"),
            "{lang}: {html}"
        );
        assert!(
            !html.contains('⟦') && !html.contains('{'),
            "{lang}: every text filled"
        );
        titles.insert(
            html.split("<h1>")
                .nth(1)
                .unwrap()
                .split("</h1>")
                .next()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(titles.len(), 4, "four translations");
    // Linked from every page's footer, the sign-up form's included.
    assert!(app.get_text("/").await.contains("href=\"/order\""));
}
