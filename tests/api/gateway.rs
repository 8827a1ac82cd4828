//! A fake SMS gateway over real HTTP on loopback, and the tests of the SMS
//! channel and delivery receipts (CONTRACT section 6).

use crate::helpers::*;
use crate::setup::*;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use standby_domain::Clock;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Behaviour {
    /// Answer 503 (with Retry-After: 1) to every n-th request.
    pub fail_every: Option<usize>,
    /// Answer 503 to the first try of every reference.
    pub fail_first_try: bool,
    /// Refuse for good (400) messages to this number.
    pub reject_to: Option<String>,
    /// Take this long to answer (a real gateway's latency).
    pub delay_ms: u64,
}

#[derive(Default)]
pub struct Gateway {
    pub behaviour: Behaviour,
    /// Every request: (reference, to, body, answered status).
    pub requests: Mutex<Vec<(String, String, String, u16)>>,
    /// When each request arrived.
    pub times: Mutex<Vec<std::time::Instant>>,
    /// Requests being answered now, and the most there ever were at once.
    pub in_flight: std::sync::atomic::AtomicUsize,
    pub most_in_flight: std::sync::atomic::AtomicUsize,
}

impl Gateway {
    pub fn accepted(&self) -> Vec<(String, String, String)> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.3 == 200)
            .map(|r| (r.0.clone(), r.1.clone(), r.2.clone()))
            .collect()
    }
}

async fn receive(State(gw): State<Arc<Gateway>>, Json(v): Json<Value>) -> impl IntoResponse {
    use std::sync::atomic::Ordering;
    let now = gw.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    gw.most_in_flight.fetch_max(now, Ordering::SeqCst);
    if gw.behaviour.delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(gw.behaviour.delay_ms)).await;
    }
    gw.in_flight.fetch_sub(1, Ordering::SeqCst);
    let reference = v["reference"].as_str().unwrap_or("").to_string();
    let to = v["to"].as_str().unwrap_or("").to_string();
    let body = v["body"].as_str().unwrap_or("").to_string();
    let mut reqs = gw.requests.lock().unwrap();
    let n = reqs.len() + 1;
    let seen = reqs.iter().any(|r| r.0 == reference);
    let status = if gw.behaviour.reject_to.as_deref() == Some(to.as_str()) {
        400
    } else if gw.behaviour.fail_every.is_some_and(|k| n % k == 0)
        || (gw.behaviour.fail_first_try && !seen)
    {
        503
    } else {
        200
    };
    reqs.push((reference, to, body, status));
    gw.times.lock().unwrap().push(std::time::Instant::now());
    let mut headers = HeaderMap::new();
    if status == 503 {
        headers.insert("retry-after", "1".parse().unwrap());
    }
    (
        StatusCode::from_u16(status).unwrap(),
        headers,
        Json(json!({"ok": status == 200})),
    )
}

/// Starts the gateway; gives its URL and its record.
pub async fn start(behaviour: Behaviour) -> (String, Arc<Gateway>) {
    let gw = Arc::new(Gateway {
        behaviour,
        ..Default::default()
    });
    let app = axum::Router::new()
        .route("/sms", axum::routing::post(receive))
        .with_state(gw.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sms", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, gw)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn sms_retries_keep_their_reference_and_honour_retry_after() {
    let (url, gw) = start(Behaviour {
        fail_first_try: true,
        ..Default::default()
    })
    .await;
    let app = spawn_with(Options {
        env: vec![("STANDBY_SMS", url)],
        ..Default::default()
    })
    .await;
    let w = world(&app, 10).await;
    for n in 0..3 {
        person(
            &app,
            Person {
                phone: Some(&format!("+3247000000{n}")),
                ..Person::new(n)
            },
            1_000 + i64::from(n),
        )
        .await;
    }
    offer(&app, &w, 2, 600).await;
    eventually("three first tries", || {
        gw.requests.lock().unwrap().len() >= 3
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        gw.requests.lock().unwrap().len(),
        3,
        "no retry before Retry-After has passed on the clock"
    );
    app.clock.advance_ms(5_000);
    eventually("retried", || gw.accepted().len() == 3).await;
    let reqs = gw.requests.lock().unwrap().clone();
    for (reference, ..) in gw.accepted() {
        let tries: Vec<_> = reqs.iter().filter(|r| r.0 == reference).collect();
        assert_eq!(
            tries.len(),
            2,
            "{reference}: one 503 then one 200, same reference"
        );
        assert_eq!((tries[0].3, tries[1].3), (503, 200));
    }
    // The gateway answers before the hand-over is recorded: wait for the record.
    let mut sms = Vec::new();
    for _ in 0..600 {
        sms = app
            .store()
            .messages_of_kind("invitation")
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.1 == "sms")
            .collect();
        if sms.iter().all(|m| m.2 == "sent") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sms.len(), 3);
    assert!(sms.iter().all(|m| m.2 == "sent" && m.3 == 2), "{sms:?}");
}

#[tokio::test]
async fn no_channel_at_all_makes_an_invitation_undeliverable_with_no_penalty() {
    if !require(crate::smtp::aiosmtpd_available(), "python3 with aiosmtpd") {
        return;
    }
    let port = crate::smtp::free_port();
    let _sink = crate::smtp::start_sink(port).await;
    let (url, gw) = start(Behaviour {
        reject_to: Some("+32470000099".into()),
        ..Default::default()
    })
    .await;
    let app = spawn_with(Options {
        env: vec![
            ("STANDBY_SMS", url),
            ("STANDBY_EMAIL", format!("smtp://127.0.0.1:{port}")),
        ],
        ..Default::default()
    })
    .await;
    let w = world(&app, 10).await;
    let who = person(
        &app,
        Person {
            phone: Some("+32470000099"),
            email: Some("reject@example.be".into()),
            ..Person::new(1)
        },
        1_000,
    )
    .await;
    let id = offer(&app, &w, 1, 60).await;
    for _ in 0..600 {
        if offer_state(&app, &w, id).await["invitations"]["undeliverable"] == 1 {
            break;
        }
        // A loaded machine may make a try fail for a passing reason; let its
        // retries come due on the clock.
        app.clock.advance_ms(60_000);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        offer_state(&app, &w, id).await["invitations"]["undeliverable"],
        1
    );
    assert_eq!(gw.requests.lock().unwrap().len(), 1, "a 4xx is not retried");
    // Time passes: no expiry, no pause, the person is waiting with their place.
    app.clock.advance_ms(3_600_000);
    standby::services::engine::tick(&app.state).await.unwrap();
    let row = app.store().registrant_raw_row(who).await.unwrap().unwrap();
    assert_eq!(
        row.iter()
            .find(|(c, _)| c == "status")
            .unwrap()
            .1
            .as_deref(),
        Some("waiting")
    );
    assert!(
        app.store()
            .messages_of_kind("paused")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Posts a receipt with the given timestamp header and signature; the
/// status and the JSON answer.
async fn post_receipt(app: &TestApp, body: &str, timestamp: &str, sig: &str) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/api/v1/receipts/sms"))
        .header("content-type", "application/json")
        .header("x-standby-timestamp", timestamp)
        .header("x-standby-signature", sig)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The signature of a receipt: HMAC-SHA256 of the timestamp, a dot and the body.
fn receipt_signature(secret: &str, timestamp: &str, body: &str) -> String {
    standby::security::hmac_hex(secret.as_bytes(), format!("{timestamp}.{body}").as_bytes())
}

#[tokio::test]
async fn signed_receipts_are_recorded_and_bad_signatures_change_nothing() {
    let (url, gw) = start(Behaviour::default()).await;
    let secret = "receipt-secret-0123456789abcdef0123456789";
    let app = spawn_with(Options {
        env: vec![
            ("STANDBY_SMS", url),
            ("STANDBY_RECEIPT_SECRET", secret.into()),
        ],
        ..Default::default()
    })
    .await;
    let w = world(&app, 10).await;
    person(
        &app,
        Person {
            phone: Some("+32470000001"),
            ..Person::new(1)
        },
        1_000,
    )
    .await;
    let id = offer(&app, &w, 1, 600).await;
    eventually("sms sent", || gw.accepted().len() == 1).await;
    let reference = gw.accepted()[0].0.clone();
    let now = (app.clock.now_ms() / 1000).to_string();
    let signed = |body: &str| receipt_signature(secret, &now, body);
    let failed = json!({"reference": reference, "status": "failed"}).to_string();
    // Bad signatures, the body signed without its timestamp, and a signed
    // timestamp more than 300 s away: 401, nothing changed.
    assert_eq!(
        post_receipt(&app, &failed, &now, &"00".repeat(32)).await.0,
        401
    );
    let other = standby::security::hmac_hex(
        b"other-secret-0123456789abcdef0123",
        format!("{now}.{failed}").as_bytes(),
    );
    assert_eq!(post_receipt(&app, &failed, &now, &other).await.0, 401);
    let unstamped = standby::security::hmac_hex(secret.as_bytes(), failed.as_bytes());
    assert_eq!(post_receipt(&app, &failed, &now, &unstamped).await.0, 401);
    for skew in [-301, 301] {
        let then = (app.clock.now_ms() / 1000 + skew).to_string();
        let (status, answer) = post_receipt(
            &app,
            &failed,
            &then,
            &receipt_signature(secret, &then, &failed),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{skew} s"
        );
    }
    let within = (app.clock.now_ms() / 1000 - 299).to_string();
    let unknown = json!({"reference": "nope", "status": "delivered"}).to_string();
    assert_eq!(
        post_receipt(
            &app,
            &unknown,
            &within,
            &receipt_signature(secret, &within, &unknown)
        )
        .await
        .0,
        404,
        "a timestamp within 300 s is taken; the reference is unknown"
    );
    assert_eq!(
        offer_state(&app, &w, id).await["invitations"]["sent"],
        1,
        "nothing changed"
    );
    // An e-mail's reference is not a gateway's business: unknown to receipts.
    let mails = app.store().messages_of_kind("invitation").await.unwrap();
    let mail = mails
        .iter()
        .find(|m| m.1 == "email")
        .expect("the invitation e-mail");
    assert_eq!(mail.2, "sent");
    let on_mail = json!({"reference": mail.0, "status": "failed"}).to_string();
    assert_eq!(
        post_receipt(&app, &on_mail, &now, &signed(&on_mail))
            .await
            .0,
        404
    );
    let bad = json!({"reference": reference, "status": "lost"}).to_string();
    assert_eq!(post_receipt(&app, &bad, &now, &signed(&bad)).await.0, 422);
    // An oversized receipt: the contract's JSON 413.
    let huge = json!({"reference": "x".repeat(17 * 1024), "status": "failed"}).to_string();
    let (status, answer) = post_receipt(&app, &huge, &now, &signed(&huge)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    // The e-mail of this invitation was handed over too, so a failed SMS leaves it open.
    let (status, answer) = post_receipt(&app, &failed, &now, &signed(&failed)).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("recorded")));
    assert_eq!(offer_state(&app, &w, id).await["invitations"]["sent"], 1);
    // A replay, and a receipt that would move it backwards: 200, nothing changed.
    let delivered = json!({"reference": reference, "status": "delivered"}).to_string();
    for body in [&failed, &delivered] {
        let (status, answer) = post_receipt(&app, body, &now, &signed(body)).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("unchanged")),
            "{body}"
        );
    }
    let trail = app.store().audit_trail(500).await.unwrap();
    let receipts: Vec<&str> = trail
        .iter()
        .filter(|a| a.action.starts_with("message.deliver"))
        .map(|a| a.action.as_str())
        .collect();
    assert_eq!(
        receipts,
        ["message.delivery_failed"],
        "recorded once, never moved back"
    );
}

#[tokio::test]
async fn a_booking_is_confirmed_by_e_mail_and_by_sms_with_the_me_link() {
    let (url, gw) = start(Behaviour::default()).await;
    let app = spawn_with(Options {
        env: vec![("STANDBY_SMS", url)],
        ..Default::default()
    })
    .await;
    let w = world(&app, 10).await;
    person(
        &app,
        Person {
            phone: Some("+32470000042"),
            ..Person::new(1)
        },
        1_000,
    )
    .await;
    offer(&app, &w, 1, 600).await;
    eventually("invitation SMS", || gw.accepted().len() == 1).await;
    let sms = gw.accepted()[0].2.clone();
    assert!(sms.contains("/i/") && sms.contains("/me/"), "{sms}");
    let token = sms
        .split_whitespace()
        .find(|w| w.contains("/i/"))
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let r = app
        .client
        .post(app.url(&format!("/api/v1/invitations/{token}/accept")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually("booking SMS", || gw.accepted().len() == 2).await;
    let booking = gw.accepted()[1].2.clone();
    assert!(
        booking.contains("appointment confirmed at Heysel") && booking.contains("/me/"),
        "{booking}"
    );
    let mails = app.store().messages_of_kind("booking").await.unwrap();
    assert_eq!(
        mails.iter().map(|m| m.1.as_str()).collect::<Vec<_>>(),
        vec!["email", "sms"]
    );
}

#[tokio::test]
async fn with_e_mail_down_every_dose_is_booked_through_sms() {
    let (url, gw) = start(Behaviour::default()).await;
    // Nobody listens on this port: every e-mail fails, its circuit opens.
    let dead_smtp = crate::smtp::free_port();
    let app = spawn_with(Options {
        env: vec![
            ("STANDBY_SMS", url),
            ("STANDBY_EMAIL", format!("smtp://127.0.0.1:{dead_smtp}")),
        ],
        ..Default::default()
    })
    .await;
    let w = world(&app, 10).await;
    // One person in four has a phone; the first wave is mostly e-mail only.
    let mut with_phone = Vec::new();
    for n in 0..40u32 {
        let phone = format!("+3247000{n:04}");
        let has_phone = n % 4 == 3;
        let id = person(
            &app,
            Person {
                phone: has_phone.then_some(phone.as_str()),
                ..Person::new(n)
            },
            1_000 + i64::from(n),
        )
        .await;
        if has_phone {
            with_phone.push(id);
        }
    }
    let id = offer(&app, &w, 4, 600).await;
    // Accept every SMS invitation as it arrives.
    let mut accepted = std::collections::HashSet::new();
    for _ in 0..600 {
        for (reference, _, body) in gw.accepted() {
            let Some(link) = body.split_whitespace().find(|w| w.contains("/i/")) else {
                continue;
            };
            if accepted.insert(reference) {
                let token = link.rsplit('/').next().unwrap();
                app.client
                    .post(app.url(&format!("/api/v1/invitations/{token}/accept")))
                    .send()
                    .await
                    .unwrap();
            }
        }
        if offer_state(&app, &w, id).await["booked"] == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let o = offer_state(&app, &w, id).await;
    assert_eq!(o["booked"], 4, "{o}");
    // Invitations to people without a phone: only the first wave's, made
    // before e-mail was known to be down; none since.
    let invited: Vec<i64> = app
        .store()
        .invitations_of_offer(id)
        .await
        .unwrap()
        .iter()
        .map(|i| i.0)
        .collect();
    let by_email_only = invited.iter().filter(|r| !with_phone.contains(r)).count();
    assert!(
        by_email_only <= 6,
        "{by_email_only} e-mail-only invitations: {invited:?}"
    );
    assert!(
        invited.len() > 8,
        "the wave went on past the first: {invited:?}"
    );
}

#[tokio::test]
async fn several_sms_are_on_their_way_at_once_still_paced_to_the_rate() {
    // A gateway answering in 300 ms, a rate of 20 a second: one at a time
    // would carry at most 3 a second.
    let (url, gw) = start(Behaviour {
        delay_ms: 300,
        ..Default::default()
    })
    .await;
    let app = spawn_with(Options {
        env: vec![("STANDBY_SMS", url), ("STANDBY_SMS_RATE", "20".into())],
        ..Default::default()
    })
    .await;
    let w = world(&app, 20).await;
    let phones: Vec<String> = (0..12).map(|n| format!("+324700001{n:02}")).collect();
    for (n, phone) in phones.iter().enumerate() {
        person(
            &app,
            Person {
                phone: Some(phone.as_str()),
                ..Person::new(n as u32)
            },
            1_000 + n as i64,
        )
        .await;
    }
    offer(&app, &w, 6, 600).await;
    eventually("12 invitations by SMS", || gw.accepted().len() == 12).await;
    let most = gw.most_in_flight.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=8).contains(&most), "{most} at once");
    // Paced: request starts at least ~1/20 s apart (a little slack for timers).
    let times = gw.times.lock().unwrap().clone();
    let mut starts: Vec<_> = times.iter().collect();
    starts.sort();
    let span = *starts[starts.len() - 1] - *starts[0];
    assert!(
        span >= std::time::Duration::from_millis(11 * 40),
        "12 requests over {span:?}: paced to the rate"
    );
}

#[tokio::test]
async fn a_reply_quoting_the_sms_code_accepts_as_the_link_does() {
    let (url, gw) = start(Behaviour::default()).await;
    let secret = "receipt-secret-0123456789abcdef0123456789";
    let app = spawn_with(Options {
        env: vec![
            ("STANDBY_SMS", url),
            ("STANDBY_RECEIPT_SECRET", secret.into()),
        ],
        ..Default::default()
    })
    .await;
    let w = world(&app, 10).await;
    for (n, phone) in [(1, "+32470000101"), (2, "+32470000102")] {
        person(
            &app,
            Person {
                phone: Some(phone),
                ..Person::new(n)
            },
            1_000 + i64::from(n),
        )
        .await;
    }
    let id = offer(&app, &w, 1, 600).await;
    eventually("two invitation SMS", || gw.accepted().len() == 2).await;
    let code_for = |phone: &str| {
        let body = gw
            .accepted()
            .into_iter()
            .find(|m| m.1 == phone)
            .expect("an SMS to that phone")
            .2;
        body.split("or text ").nth(1).expect("the code in the SMS")[..6].to_string()
    };
    let (first, second) = (code_for("+32470000101"), code_for("+32470000102"));
    let now = (app.clock.now_ms() / 1000).to_string();
    let reply = |from: &str, text: &str| json!({"from": from, "body": text}).to_string();
    let post = |body: String, sig: String| {
        let client = app.client.clone();
        let url = app.url("/api/v1/inbound/sms");
        let now = now.clone();
        async move {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-standby-timestamp", now)
                .header("x-standby-signature", sig)
                .body(body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let signed = |body: &str| receipt_signature(secret, &now, body);
    // Unsigned, or the right code from another phone: nothing happens.
    let body = reply("+32470000101", &first);
    assert_eq!(post(body.clone(), "00".repeat(32)).await.0, 401);
    let elsewhere = reply("+32470999999", &first);
    let (s, v) = post(elsewhere.clone(), signed(&elsewhere)).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ignored")));
    let bad = reply("not a phone", &first);
    assert_eq!(post(bad.clone(), signed(&bad)).await.0, 422);
    assert_eq!(offer_state(&app, &w, id).await["booked"], 0);
    // The first person replies with their code: booked, confirmed by SMS.
    let body = reply("+32 470 00 01 01", &format!("Yes {first}"));
    let (s, v) = post(body.clone(), signed(&body)).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("booked")), "{v}");
    assert_eq!(offer_state(&app, &w, id).await["booked"], 1);
    eventually("booking SMS", || {
        gw.accepted()
            .iter()
            .any(|m| m.1 == "+32470000101" && m.2.contains("appointment confirmed"))
    })
    .await;
    // The second replies too late: told by SMS that the doses are gone.
    let body = reply("+32470000102", &second);
    let (s, v) = post(body.clone(), signed(&body)).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("full")), "{v}");
    eventually("the 'full' answer by SMS", || {
        gw.accepted()
            .iter()
            .any(|m| m.1 == "+32470000102" && m.2.contains("You keep your place"))
    })
    .await;
    // A repeat of the first reply changes nothing, and says nothing more.
    let sent = gw.accepted().len();
    let body = reply("+32470000101", &first);
    let (s, v) = post(body.clone(), signed(&body)).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("answered")));
    assert_eq!(offer_state(&app, &w, id).await["booked"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(gw.accepted().len(), sent);
}
