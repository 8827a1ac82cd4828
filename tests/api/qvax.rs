//! The Qvax replay, at test scale: a centre releases its doses at once; the
//! SMS gateway answers 503 to one request in ten; the SMTP server stalls at
//! first; people answer as their messages arrive, some never answer and some
//! cannot be reached. The guarantees must all hold.

use crate::gateway::{Behaviour, start};
use crate::helpers::*;
use crate::setup::*;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const DOSES: i64 = 60;
const PEOPLE: u32 = 240;
const SMS_RATE: usize = 40;

#[tokio::test]
async fn qvax_replay_doses_released_at_once_with_failing_channels() {
    if !require(crate::smtp::aiosmtpd_available(), "python3 with aiosmtpd") {
        return;
    }
    let port = crate::smtp::free_port();
    let sink = crate::smtp::start_sink_stalling(port, 3.0).await;
    let (url, gw) = start(Behaviour {
        fail_every: Some(10),
        ..Default::default()
    })
    .await;
    let app = spawn_with(Options {
        env: vec![
            ("STANDBY_SMS", url),
            ("STANDBY_SMS_RATE", SMS_RATE.to_string()),
            ("STANDBY_EMAIL", format!("smtp://127.0.0.1:{port}")),
            ("STANDBY_EMAIL_RATE", "100".into()),
        ],
        ..Default::default()
    })
    .await;
    let w = world(&app, DOSES).await;
    let mut ids = HashMap::new();
    for n in 0..PEOPLE {
        // Half have a phone; one in twelve has an address that refuses mail and no phone.
        let unreachable = n % 12 == 11;
        let phone = (n % 2 == 0 && !unreachable).then(|| format!("+3247{n:07}"));
        let email = unreachable.then(|| format!("reject{n}@example.be"));
        let id = person(
            &app,
            Person {
                phone: phone.as_deref(),
                email,
                ..Person::new(n)
            },
            1_000 + i64::from(n),
        )
        .await;
        ids.insert(id, n);
    }
    let offer_id = offer(&app, &w, DOSES, 600).await;

    // People answer whatever reaches them first: one in five never answers, one in seven declines.
    let mut answered: HashSet<String> = HashSet::new();
    let started = Instant::now();
    loop {
        let mut links: Vec<String> = gw
            .accepted()
            .iter()
            .filter_map(|(_, _, body)| {
                body.split_whitespace()
                    .find(|w| w.contains("/i/"))
                    .map(str::to_string)
            })
            .collect();
        for e in std::fs::read_dir(sink.dir.path()).unwrap().flatten() {
            if let Ok(text) = std::fs::read_to_string(e.path())
                && let Some(l) = text.split_whitespace().find(|w| w.contains("/i/"))
            {
                links.push(l.to_string());
            }
        }
        for link in links {
            let token = link.rsplit('/').next().unwrap().to_string();
            if !answered.insert(token.clone()) {
                continue;
            }
            let (_, inv) = app.get_json(&format!("/api/v1/invitations/{token}")).await;
            // The clock runs from hand-over; the hand-over may be recorded a moment after the message arrives.
            let status = inv["status"].as_str().unwrap_or("");
            assert!(
                inv["expires_at"].is_string() || matches!(status, "queued" | "withdrawn"),
                "{inv}"
            );
            let h = token
                .bytes()
                .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
            if h % 5 == 0 {
                continue;
            }
            let action = if h % 7 == 0 { "decline" } else { "accept" };
            let r = app
                .client
                .post(app.url(&format!("/api/v1/invitations/{token}/{action}")))
                .send()
                .await
                .unwrap();
            assert!(
                matches!(r.status().as_u16(), 200 | 409),
                "{action}: {}",
                r.status()
            );
        }
        let o = offer_state(&app, &w, offer_id).await;
        if o["status"] == "filled" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the offer was not filled in time: {o}"
        );
        // Let retries (Retry-After, back-off) and deadlines come due on the clock.
        app.clock.advance_ms(2_000);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let o = offer_state(&app, &w, offer_id).await;
    assert_eq!(o["booked"], DOSES, "all doses booked");
    assert_eq!(
        app.stats().await["booked"],
        DOSES,
        "never more bookings than doses"
    );

    let store = app.store();
    let invitations = store.invitations_of_offer(offer_id).await.unwrap();
    for (reg, status, sent_at, expires_at) in &invitations {
        if status == "expired" {
            assert!(
                sent_at.is_some() && expires_at.is_some(),
                "registrant {reg}: expired without having been handed over"
            );
        }
        if sent_at.is_none() {
            assert!(
                matches!(
                    status.as_str(),
                    "withdrawn" | "undeliverable" | "accepted" | "declined"
                ),
                "{reg}: {status}"
            );
        }
    }
    // Nobody unreachable was told anything negative; every pause message follows a handed-over invitation.
    let unreachable: Vec<i64> = ids
        .iter()
        .filter(|(_, n)| **n % 12 == 11)
        .map(|(id, _)| *id)
        .collect();
    for id in &unreachable {
        let status = store
            .registrant_raw_row(*id)
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .find(|(c, _)| c == "status")
            .unwrap()
            .1
            .unwrap();
        assert_eq!(status, "waiting", "an unreachable person keeps their place");
    }
    assert!(
        invitations
            .iter()
            .filter(|i| unreachable.contains(&i.0))
            .all(|i| i.1 != "expired")
    );
    // Pacing: never more SMS in one second than the channel's rate (plus the one that opens the window).
    let times = gw.times.lock().unwrap().clone();
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= SMS_RATE + 1,
            "{in_window} SMS within one second"
        );
    }
    // 503s were retried with the same reference, and nothing was sent twice otherwise.
    let reqs = gw.requests.lock().unwrap().clone();
    let mut accepted_refs = HashSet::new();
    for r in reqs.iter().filter(|r| r.3 == 200) {
        assert!(accepted_refs.insert(r.0.clone()), "{} accepted twice", r.0);
    }
    assert!(
        reqs.iter()
            .filter(|r| r.3 == 503)
            .all(|r| accepted_refs.contains(&r.0) || store_has_pending(&reqs, &r.0))
    );
    // Once filled, invitations not handed over are withdrawn and their messages never leave.
    let withdrawn_unsent = invitations
        .iter()
        .filter(|i| i.1 == "withdrawn" && i.2.is_none())
        .count();
    let msgs = store.messages_of_kind("invitation").await.unwrap();
    let waiting: Vec<_> = msgs.iter().filter(|m| m.2 == "queued").collect();
    assert!(
        waiting.is_empty(),
        "no invitation message left waiting after the offer filled: {waiting:?}"
    );
    eprintln!(
        "qvax replay: {} invitations, {} SMS requests ({} answered 503), {} withdrawn unsent, {:?}",
        invitations.len(),
        reqs.len(),
        reqs.iter().filter(|r| r.3 == 503).count(),
        withdrawn_unsent,
        started.elapsed()
    );
}

fn store_has_pending(reqs: &[(String, String, String, u16)], reference: &str) -> bool {
    // A 503 whose retry had not happened yet when the offer filled (its message was then withdrawn).
    !reqs.iter().any(|r| r.0 == reference && r.3 == 200)
}
