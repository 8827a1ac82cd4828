//! Shared set-up for staff and engine tests: an admin, a centre with stock,
//! and confirmed registrants made straight in the store.

use crate::helpers::*;
use serde_json::{Value, json};
use standby::security::{hash_password, national_id_hash, random_token, token_hash};
use standby_store::{NewMessage, NewRegistrant, NewUser, Store};

pub struct World {
    pub admin: String,
    pub center: i64,
    pub center_b: i64,
}

pub async fn user(app: &TestApp, email: &str, role: &str, center: Option<i64>) -> String {
    let store: &dyn Store = app.store().as_ref();
    let pw = "correct horse battery staple";
    store
        .create_user(
            &NewUser {
                email: email.into(),
                password_hash: hash_password(pw).unwrap(),
                role: role.into(),
                center_id: center,
            },
            "test",
            0,
        )
        .await
        .unwrap();
    login(app, email, pw).await
}

/// A fresh admin token after the clock has moved past the old one's 12 hours.
pub async fn log_in_again(app: &TestApp, w: &mut World) {
    w.admin = login(app, "admin@example.be", "correct horse battery staple").await;
}

pub async fn login(app: &TestApp, email: &str, pw: &str) -> String {
    let r = app
        .post_json("/api/v1/login", &json!({"email": email, "password": pw}))
        .await;
    assert_eq!(r.status(), 200, "log-in of {email}");
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

pub async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// An admin, two centres (Brussels, Luxembourg), a vaccine for 18+ and `doses` in stock at the first.
pub async fn world(app: &TestApp, doses: i64) -> World {
    let admin = user(app, "admin@example.be", "admin", None).await;
    let mut ids = Vec::new();
    for (name, tz) in [
        ("Heysel", "Europe/Brussels"),
        ("Victor Hugo", "Europe/Luxembourg"),
    ] {
        let (s, c) = call(app, reqwest::Method::POST, "/api/v1/centers", &admin, Some(json!({"name": name, "address": "Somewhere 1", "postal_code": "1000", "time_zone": tz}))).await;
        assert_eq!(s, 201, "{c}");
        ids.push(c["id"].as_str().unwrap().parse::<i64>().unwrap());
    }
    let (s, _) = call(
        app,
        reqwest::Method::POST,
        "/api/v1/vaccines",
        &admin,
        Some(json!({"code": "PFZ", "name": "Comirnaty", "min_age": 18, "max_age": 120})),
    )
    .await;
    assert_eq!(s, 201);
    if doses > 0 {
        let (s, _) = call(
            app,
            reqwest::Method::POST,
            &format!("/api/v1/centers/{}/deliveries", ids[0]),
            &admin,
            Some(json!({"vaccine": "PFZ", "doses": doses})),
        )
        .await;
        assert_eq!(s, 201);
    }
    app.state.forget_centers();
    World {
        admin,
        center: ids[0],
        center_b: ids[1],
    }
}

pub struct Person<'a> {
    pub n: u32,
    pub birth_year: i32,
    pub phone: Option<&'a str>,
    pub email: Option<String>,
    pub centers: Vec<i64>,
    pub availability: Vec<(i64, i64, i64)>,
}

impl Person<'_> {
    pub fn new(n: u32) -> Self {
        Person {
            n,
            birth_year: 1960,
            phone: None,
            email: None,
            centers: vec![],
            availability: vec![],
        }
    }
}

/// A confirmed registrant, straight in the store; returns its id.
pub async fn person(app: &TestApp, p: Person<'_>, confirmed_at: i64) -> i64 {
    let store: &dyn Store = app.store().as_ref();
    let nid = standby::demo::belgian_id(p.birth_year, 3, 3, 1 + p.n % 997);
    let confirm = random_token();
    let email = p
        .email
        .clone()
        .unwrap_or_else(|| format!("p{}@example.be", p.n));
    let r = NewRegistrant {
        nid_hash: national_id_hash(&app.state.config.secret, &format!("BE:{nid}:{}", p.n)),
        country: "BE".into(),
        birth_ymd: i64::from(p.birth_year) * 10_000 + 303,
        title: None,
        first_name: format!("First{}", p.n),
        last_name: format!("Last{}", p.n),
        email,
        phone: p.phone.map(str::to_string),
        language: "en".into(),
        centers: p.centers,
        availability: p.availability,
        confirm_hash: token_hash(&confirm),
        confirm_expires_at: i64::MAX / 2,
        me_hash: token_hash(&random_token()),
        me_expires_at: i64::MAX / 2,
        message: None::<NewMessage>,
        confirmed_at: None,
    };
    let out = store
        .insert_registrations(vec![r], confirmed_at)
        .await
        .unwrap();
    let standby_store::InsertOutcome::Created(id) = out[0] else {
        panic!("duplicate person {}", p.n)
    };
    store
        .confirm_registrant(
            &token_hash(&confirm),
            &token_hash(&random_token()),
            confirmed_at,
        )
        .await
        .unwrap();
    id
}

/// An offer window of tomorrow 09:00-17:00 UTC, as RFC 3339.
pub fn tomorrow() -> (String, String) {
    ("2026-11-25T09:00:00Z".into(), "2026-11-25T17:00:00Z".into())
}

pub async fn offer(app: &TestApp, w: &World, doses: i64, response_seconds: i64) -> i64 {
    let (s, e) = tomorrow();
    let (status, body) = call(
        app,
        reqwest::Method::POST,
        &format!("/api/v1/centers/{}/offers", w.center),
        &w.admin,
        Some(json!({"vaccine": "PFZ", "doses": doses, "starts_at": s, "ends_at": e, "response_seconds": response_seconds})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().parse().unwrap()
}

pub async fn offer_state(app: &TestApp, w: &World, id: i64) -> Value {
    let (s, v) = call(
        app,
        reqwest::Method::GET,
        &format!("/api/v1/offers/{id}"),
        &w.admin,
        None,
    )
    .await;
    assert_eq!(s, 200);
    v
}

/// Invitation links found in the e-mail outbox folder.
pub fn invitation_links(app: &TestApp) -> Vec<String> {
    let mut links = Vec::new();
    for e in std::fs::read_dir(&app.outbox)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "eml") {
            let text = std::fs::read_to_string(&p).unwrap();
            if let Some(l) = text.split_whitespace().find(|w| w.contains("/i/")) {
                links.push(l.to_string());
            }
        }
    }
    links
}
