//! Withdrawal, a pause and a cancellation end what is under way: nobody
//! who left can book, a dose given back is offered again, and whatever the
//! order of answers the bookings, the people and the stock agree.

use crate::helpers::*;
use crate::setup::*;
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};
use standby_store::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// The invitation and self-service tokens in the invitation e-mail sent to
/// `email`, once it is in the outbox folder.
fn invitation_of(app: &TestApp, email: &str) -> Option<(String, String)> {
    let dir = std::fs::read_dir(&app.outbox).ok()?;
    for entry in dir.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if !text.contains(&format!("To: {email}")) || !text.contains("/i/") {
            continue;
        }
        let token = |marker: &str| {
            text.split_whitespace()
                .find(|w| w.contains(marker))
                .map(|w| w.rsplit('/').next().unwrap().to_string())
        };
        return Some((token("/i/")?, token("/me/")?));
    }
    None
}

async fn accept(app: &TestApp, token: &str) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(&format!("/api/v1/invitations/{token}/accept")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn withdraw(app: &TestApp, me: &str) {
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/me/{me}")))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "withdrawal: {}", r.status());
}

async fn stock(app: &TestApp, w: &World) -> Value {
    let (s, v) = call(
        app,
        Method::GET,
        &format!("/api/v1/centers/{}/stock", w.center),
        &w.admin,
        None,
    )
    .await;
    assert_eq!(s, 200);
    v[0].clone()
}

/// Waits for the invitation e-mail of person `n` (made by `person`).
async fn invited(app: &TestApp, n: u32) -> (String, String) {
    let email = format!("p{n}@example.be");
    eventually(&format!("an invitation for {email}"), || async {
        invitation_of(app, &email).is_some()
    })
    .await;
    let (token, me) = invitation_of(app, &email).unwrap();
    // The file is written just before the hand-over is recorded: wait for
    // the record too, so its times are there.
    eventually(&format!("the hand-over to {email} recorded"), || async {
        app.get_json(&format!("/api/v1/invitations/{token}"))
            .await
            .1["status"]
            == "sent"
    })
    .await;
    (token, me)
}

#[tokio::test]
async fn a_withdrawn_person_cannot_accept_the_invitation_that_was_open() {
    let app = spawn_app().await;
    let w = world(&app, 10).await;
    person(&app, Person::new(1), 1_000).await;
    let id = offer(&app, &w, 1, 600).await;
    let (invitation, me) = invited(&app, 1).await;
    withdraw(&app, &me).await;
    let (status, answer) = accept(&app, &invitation).await;
    assert_eq!(status, 410, "{answer}");
    assert_eq!(answer["error"]["code"], "invitation_closed");
    let o = offer_state(&app, &w, id).await;
    assert_eq!(
        (o["booked"].as_i64(), o["status"].as_str()),
        (Some(0), Some("open"))
    );
    assert_eq!(o["invitations"]["withdrawn"], 1);
    assert_eq!(app.stats().await["booked"], 0);
    assert_eq!(
        stock(&app, &w).await["reserved"],
        1,
        "the offer still holds its dose"
    );
    let (s, inv) = app
        .get_json(&format!("/api/v1/invitations/{invitation}"))
        .await;
    assert_eq!((s, inv["status"].as_str()), (200, Some("withdrawn")));
}

#[tokio::test]
async fn withdrawing_after_booking_gives_the_dose_back_and_the_offer_invites_again() {
    let app = spawn_app().await;
    let w = world(&app, 10).await;
    for n in 1..=3 {
        person(&app, Person::new(n), 1_000 + i64::from(n)).await;
    }
    let id = offer(&app, &w, 1, 600).await;
    // Twice the doses are invited: the first two people.
    let (first, first_me) = invited(&app, 1).await;
    invited(&app, 2).await;
    let (status, booked) = accept(&app, &first).await;
    assert_eq!(status, 200, "{booked}");
    let appointment = booked["appointment"]["id"].as_str().unwrap().to_string();
    let o = offer_state(&app, &w, id).await;
    assert_eq!(
        (o["status"].as_str(), o["booked"].as_i64()),
        (Some("filled"), Some(1))
    );
    // A data-access request is answered completely: the invitation with its
    // times, every message with when it left.
    let (s, export) = app.get_json(&format!("/api/v1/me/{first_me}/export")).await;
    assert_eq!(s, 200);
    let inv = &export["invitations"][0];
    assert_eq!(
        (inv["status"].as_str(), inv["center_name"].as_str()),
        (Some("accepted"), Some("Heysel"))
    );
    for field in [
        "created_at",
        "sent_at",
        "expires_at",
        "answered_at",
        "starts_at",
        "ends_at",
    ] {
        assert!(
            inv[field].as_str().is_some_and(|t| t.ends_with('Z')),
            "{field}: {export}"
        );
    }
    assert_eq!(export["appointments"][0]["status"], "booked");
    let messages = export["messages"].as_array().unwrap();
    let invitation_mail = messages
        .iter()
        .find(|m| m["kind"] == "invitation" && m["channel"] == "email")
        .expect("the invitation e-mail");
    assert_eq!(invitation_mail["status"], "sent");
    assert!(invitation_mail["sent_at"].is_string(), "{export}");
    assert!(invitation_mail["subject"].is_string(), "{export}");
    assert!(messages.iter().any(|m| m["kind"] == "booking"), "{export}");
    withdraw(&app, &first_me).await;
    // The booking is cancelled in the same step, its dose back with the
    // offer (still reserved), which opens again and invites the third person.
    let o = offer_state(&app, &w, id).await;
    assert_eq!(
        (o["status"].as_str(), o["booked"].as_i64()),
        (Some("open"), Some(0))
    );
    let s = stock(&app, &w).await;
    assert_eq!(
        (s["on_hand"].as_i64(), s["reserved"].as_i64()),
        (Some(10), Some(1))
    );
    assert_eq!(app.stats().await["booked"], 0);
    let (_, list) = call(
        &app,
        Method::GET,
        &format!("/api/v1/centers/{}/appointments?date=2026-11-25", w.center),
        &w.admin,
        None,
    )
    .await;
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == appointment.as_str())
        .expect("the appointment is listed");
    assert_eq!(mine["status"], "cancelled");
    assert!(mine["first_name"].is_null(), "erased: {mine}");
    let (third, _) = invited(&app, 3).await;
    assert_eq!(accept(&app, &third).await.0, 200);
    let o = offer_state(&app, &w, id).await;
    assert_eq!(
        (o["status"].as_str(), o["booked"].as_i64()),
        (Some("filled"), Some(1))
    );
}

#[tokio::test]
async fn a_paused_person_cannot_accept_and_their_place_goes_to_the_next() {
    let app = spawn_app().await;
    let w = world(&app, 10).await;
    for n in 1..=2 {
        person(&app, Person::new(n), 1_000 + i64::from(n)).await;
    }
    let id = offer(&app, &w, 1, 600).await;
    let (first, first_me) = invited(&app, 1).await;
    let (second, _) = invited(&app, 2).await;
    let r = app
        .client
        .patch(app.url(&format!("/api/v1/me/{first_me}")))
        .json(&json!({"status": "paused"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "paused");
    let (status, answer) = accept(&app, &first).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (410, Some("invitation_closed"))
    );
    assert_eq!(offer_state(&app, &w, id).await["booked"], 0);
    assert_eq!(accept(&app, &second).await.0, 200);
    // The pause cost nothing: no silence was counted.
    let (_, me) = app.get_json(&format!("/api/v1/me/{first_me}")).await;
    assert_eq!(me["status"], "paused");
}

#[tokio::test]
async fn staff_cancelling_a_booking_give_its_dose_back_to_the_offer() {
    let app = spawn_app().await;
    let w = world(&app, 10).await;
    for n in 1..=3 {
        person(&app, Person::new(n), 1_000 + i64::from(n)).await;
    }
    let id = offer(&app, &w, 1, 600).await;
    let (first, _) = invited(&app, 1).await;
    let (_, booked) = accept(&app, &first).await;
    let appointment = booked["appointment"]["id"].as_str().unwrap().to_string();
    let (s, a) = call(
        &app,
        Method::POST,
        &format!("/api/v1/appointments/{appointment}/status"),
        &w.admin,
        Some(json!({"status": "cancelled"})),
    )
    .await;
    assert_eq!((s, a["status"].as_str()), (200, Some("cancelled")), "{a}");
    let o = offer_state(&app, &w, id).await;
    assert_eq!(
        (o["status"].as_str(), o["booked"].as_i64()),
        (Some("open"), Some(0))
    );
    assert_eq!(stock(&app, &w).await["reserved"], 1);
    let (third, _) = invited(&app, 3).await;
    assert_eq!(accept(&app, &third).await.0, 200);
    // Once the offer is closed, a cancelled dose goes back to the free stock.
    let (s, _) = call(
        &app,
        Method::POST,
        &format!("/api/v1/offers/{id}/close"),
        &w.admin,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (_, list) = call(
        &app,
        Method::GET,
        &format!("/api/v1/centers/{}/appointments?date=2026-11-25", w.center),
        &w.admin,
        None,
    )
    .await;
    let live = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["status"] == "booked")
        .expect("the third person's booking")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = call(
        &app,
        Method::POST,
        &format!("/api/v1/appointments/{live}/status"),
        &w.admin,
        Some(json!({"status": "cancelled"})),
    )
    .await;
    assert_eq!(s, 200);
    let st = stock(&app, &w).await;
    assert_eq!(
        (st["on_hand"].as_i64(), st["reserved"].as_i64()),
        (Some(10), Some(0))
    );
    assert_eq!(offer_state(&app, &w, id).await["status"], "closed");
}

// ---- Random interleavings, straight on the store ----

const PEOPLE: usize = 5;
const RESPONSE_MS: i64 = 600_000;

#[derive(Debug, Clone)]
enum Op {
    /// The engine tops the wave up (twice the doses left).
    TopUp,
    /// Every queued message is handed over (the clocks start).
    Send,
    Accept(usize),
    Decline(usize),
    Withdraw(usize),
    Pause(usize),
    /// The response window passes.
    Expire,
    Cancel(usize),
    Attend(usize),
    NoShow(usize),
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::TopUp),
        2 => Just(Op::Send),
        4 => (0..PEOPLE).prop_map(Op::Accept),
        1 => (0..PEOPLE).prop_map(Op::Decline),
        2 => (0..PEOPLE).prop_map(Op::Withdraw),
        1 => (0..PEOPLE).prop_map(Op::Pause),
        1 => Just(Op::Expire),
        2 => (0..PEOPLE).prop_map(Op::Cancel),
        1 => (0..PEOPLE).prop_map(Op::Attend),
        1 => (0..PEOPLE).prop_map(Op::NoShow),
        1 => Just(Op::Close),
    ]
}

/// The database behind the store, for the checks' own SQL.
enum Raw {
    Lite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

impl Raw {
    async fn open(url: &str) -> Raw {
        if url.starts_with("sqlite:") {
            Raw::Lite(sqlx::SqlitePool::connect(url).await.unwrap())
        } else {
            Raw::Pg(sqlx::PgPool::connect(url).await.unwrap())
        }
    }

    /// One whole number from `sql`, with `$1` the centre.
    async fn scalar(&self, sql: &str, center: i64) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self {
            Raw::Lite(p) => sqlx::query_scalar(sql).bind(center).fetch_one(p).await,
            Raw::Pg(p) => sqlx::query_scalar(sql).bind(center).fetch_one(p).await,
        }
        .unwrap()
    }
}

/// Each statement must give 0 for a centre whose state is consistent.
const INVARIANTS: [(&str, &str); 7] = [
    (
        "an offer booked beyond its doses",
        "SELECT COUNT(*) FROM offers WHERE center_id = $1 AND (booked > doses OR booked < 0)",
    ),
    (
        "an offer's bookings and its appointments disagree",
        "SELECT COUNT(*) FROM offers o WHERE o.center_id = $1 AND o.booked <> \
         (SELECT COUNT(*) FROM appointments a WHERE a.offer_id = o.id AND a.status IN ('booked', 'attended', 'no_show'))",
    ),
    (
        "a booked appointment of someone not booked (withdrawn, say)",
        "SELECT COUNT(*) FROM appointments a JOIN registrants r ON r.id = a.registrant_id \
         WHERE a.center_id = $1 AND a.status = 'booked' AND r.status <> 'booked'",
    ),
    (
        "an open invitation of someone withdrawn, paused or booked",
        "SELECT COUNT(*) FROM invitations i JOIN offers o ON o.id = i.offer_id JOIN registrants r ON r.id = i.registrant_id \
         WHERE o.center_id = $1 AND i.status IN ('queued', 'sent') AND r.status <> 'invited'",
    ),
    (
        "the reserved stock is not what the ledger says",
        "SELECT s.reserved - (SELECT COALESCE(CAST(SUM(CASE kind WHEN 'reserved' THEN doses WHEN 'released' THEN -doses \
         WHEN 'administered' THEN -doses ELSE 0 END) AS BIGINT), 0) FROM stock_ledger WHERE center_id = $1) FROM stock s WHERE s.center_id = $1",
    ),
    (
        "the stock on hand is not what the ledger says",
        "SELECT s.on_hand - (SELECT COALESCE(CAST(SUM(CASE kind WHEN 'delivered' THEN doses WHEN 'administered' THEN -doses \
         WHEN 'wasted' THEN -doses WHEN 'returned' THEN -doses ELSE 0 END) AS BIGINT), 0) FROM stock_ledger WHERE center_id = $1) FROM stock s WHERE s.center_id = $1",
    ),
    (
        "the reserved stock is not what the offers and bookings hold",
        "SELECT s.reserved - (SELECT COALESCE(CAST(SUM(CASE WHEN o.status IN ('open', 'filled') THEN o.doses - o.booked ELSE 0 END) AS BIGINT), 0) \
         FROM offers o WHERE o.center_id = $1) - (SELECT COUNT(*) FROM appointments a WHERE a.center_id = $1 AND a.status = 'booked') \
         FROM stock s WHERE s.center_id = $1",
    ),
];

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", UNIQUE.fetch_add(1, Ordering::Relaxed))
}

fn render<T>(_: &Contact, _: &T) -> Rendered {
    Rendered {
        messages: vec![],
        me_token_hash: unique("me"),
    }
}

/// One case: a centre of its own, `doses` in an offer, `PEOPLE` confirmed
/// people, then `ops`; the invariants after every step.
async fn run_case(s: &SqlStore, raw: &Raw, doses: i64, ops: &[Op]) -> Result<(), String> {
    let mut now = 1_000_000_i64;
    let center = s
        .create_center(
            &NewCenter {
                name: unique("centre"),
                address: "Rue 1".into(),
                postal_code: "1000".into(),
                time_zone: "Europe/Brussels".into(),
                quiet_hours: None,
            },
            "test",
            now,
        )
        .await
        .unwrap()
        .id;
    s.record_delivery(center, "PFZ", 10, "test", now)
        .await
        .unwrap();
    let offer = s
        .create_offer(
            &NewOffer {
                center_id: center,
                vaccine: "PFZ".into(),
                doses,
                starts_at: now + 86_400_000,
                ends_at: now + 2 * 86_400_000,
                response_ms: RESPONSE_MS,
            },
            "test",
            now,
        )
        .await
        .unwrap()
        .id;
    let mut people = Vec::new();
    for _ in 0..PEOPLE {
        let confirm = unique("confirm");
        let mut nid = [0u8; 16];
        nid[..8].copy_from_slice(&UNIQUE.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        nid[8] = 0xa5;
        let reg = NewRegistrant {
            nid_hash: NidKey(nid),
            country: "BE".into(),
            birth_ymd: 19_600_303,
            title: None,
            first_name: "Anne".into(),
            last_name: "Dupont".into(),
            email: "anne@example.be".into(),
            phone: None,
            language: "fr".into(),
            centers: vec![],
            availability: vec![],
            confirm_hash: confirm.clone(),
            confirm_expires_at: i64::MAX / 2,
            me_hash: unique("me"),
            me_expires_at: i64::MAX / 2,
            message: None,
            confirmed_at: None,
        };
        let InsertOutcome::Created(id) = s.insert_registrations(vec![reg], now).await.unwrap()[0]
        else {
            panic!("a new person")
        };
        s.confirm_registrant(&confirm, &unique("me"), now)
            .await
            .unwrap();
        people.push(id);
    }
    // Each person's latest invitation token.
    let mut tokens: Vec<Option<String>> = vec![None; PEOPLE];
    for (step, op) in ops.iter().enumerate() {
        now += 1_000;
        match op {
            Op::TopUp => {
                let invitations: Vec<NewInvitation> = people
                    .iter()
                    .map(|&registrant_id| NewInvitation {
                        registrant_id,
                        token_hash: unique("inv"),
                        me_token_hash: unique("me"),
                        messages: vec![NewMessage {
                            reference: unique("ref"),
                            channel: "email".into(),
                            kind: "invitation".into(),
                            registrant_id: Some(registrant_id),
                            recipient: "anne@example.be".into(),
                            subject: None,
                            body: "b".into(),
                        }],
                        short_code: None,
                    })
                    .collect();
                s.insert_invitations(offer, 2.0, &["email", "sms"], &invitations, now)
                    .await
                    .unwrap();
                for (k, inv) in invitations.iter().enumerate() {
                    if s.invitation_by_token(&inv.token_hash)
                        .await
                        .unwrap()
                        .is_some()
                    {
                        tokens[k] = Some(inv.token_hash.clone());
                    }
                }
            }
            Op::Send => {
                let claimed = s
                    .claim_messages("email", "w", now, 60_000, 1_000)
                    .await
                    .unwrap();
                for m in claimed {
                    s.message_sent(m.id, "w", now).await.unwrap();
                }
            }
            Op::Accept(k) => {
                let before = s
                    .invitation_by_token(tokens[*k].as_deref().unwrap_or("none"))
                    .await
                    .unwrap();
                let Some(token) = &tokens[*k] else { continue };
                let person_before = person_status(raw, people[*k]).await;
                let outcome = s.accept_invitation(token, now, &render).await.unwrap();
                if matches!(outcome, AcceptOutcome::Booked(_)) && person_before != "invited" {
                    return Err(format!(
                        "step {step}: someone {person_before} booked ({before:?})"
                    ));
                }
            }
            Op::Decline(k) => {
                if let Some(token) = &tokens[*k] {
                    s.decline_invitation(token, now).await.unwrap();
                }
            }
            Op::Withdraw(k) => s.withdraw_registrant(people[*k], now).await.unwrap(),
            Op::Pause(k) => {
                let change = RegistrantChange {
                    paused: Some(true),
                    ..Default::default()
                };
                // Refused (409) unless waiting or invited: fine either way.
                let _ = s.update_registrant(people[*k], &change, now).await;
            }
            Op::Expire => {
                now += RESPONSE_MS;
                let pause = PauseRule {
                    after: 3,
                    window_ms: 14 * 86_400_000,
                };
                s.expire_invitations(now, 1_000, pause, &|_| true, &render)
                    .await
                    .unwrap();
            }
            Op::Cancel(k) | Op::Attend(k) | Op::NoShow(k) => {
                let status = match op {
                    Op::Cancel(_) => "cancelled",
                    Op::Attend(_) => "attended",
                    _ => "no_show",
                };
                let id = booked_appointment(raw, people[*k]).await;
                if id > 0 {
                    s.set_appointment_status(id, status, "test", now)
                        .await
                        .unwrap();
                }
            }
            Op::Close => {
                s.close_offer(offer, "test", now).await.unwrap();
            }
        }
        for (what, sql) in INVARIANTS {
            let n = raw.scalar(sql, center).await;
            if n != 0 {
                return Err(format!("after step {step} ({op:?}): {what} ({n})"));
            }
        }
    }
    Ok(())
}

async fn person_status(raw: &Raw, id: i64) -> String {
    let sql = sqlx::AssertSqlSafe("SELECT status FROM registrants WHERE id = $1");
    match raw {
        Raw::Lite(p) => sqlx::query_scalar(sql).bind(id).fetch_one(p).await,
        Raw::Pg(p) => sqlx::query_scalar(sql).bind(id).fetch_one(p).await,
    }
    .unwrap()
}

/// The person's booked appointment, or 0.
async fn booked_appointment(raw: &Raw, registrant: i64) -> i64 {
    raw.scalar(
        "SELECT COALESCE(MAX(id), 0) FROM appointments WHERE registrant_id = $1 AND status = 'booked'",
        registrant,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_interleaving_of_answers_keeps_bookings_people_and_stock_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let url = fresh_database_url(tmp.path()).await;
    let s = connect(&url).await.unwrap();
    s.migrate().await.unwrap();
    s.create_vaccine(
        &VaccineRecord {
            code: "PFZ".into(),
            name: "Comirnaty".into(),
            min_age: 18,
            max_age: 120,
        },
        "test",
        0,
    )
    .await
    .unwrap();
    let raw = Raw::open(&url).await;
    let handle = tokio::runtime::Handle::current();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 40,
        failure_persistence: None,
        ..Default::default()
    });
    let strategy = (1i64..=3, proptest::collection::vec(op(), 1..40));
    let result = runner.run(&strategy, |(doses, ops)| {
        tokio::task::block_in_place(|| handle.block_on(run_case(&s, &raw, doses, &ops)))
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
