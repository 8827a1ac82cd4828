//! Staff accounts, roles and stock (CONTRACT section 4).

use crate::helpers::*;
use crate::setup::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn log_in_gives_a_bearer_token_and_bad_credentials_get_401() {
    let app = spawn_app().await;
    let token = user(&app, "boss@example.be", "admin", None).await;
    assert_eq!(token.len(), standby::security::TOKEN_LEN);
    let r = app
        .post_json(
            "/api/v1/login",
            &json!({"email": "boss@example.be", "password": "wrong password"}),
        )
        .await;
    assert_eq!(r.status(), 401);
    let r = app
        .post_json(
            "/api/v1/login",
            &json!({"email": "nobody@example.be", "password": "whatever it is"}),
        )
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        call(&app, Method::GET, "/api/v1/users", "not-a-token", None)
            .await
            .0,
        401
    );
    let r = app
        .client
        .get(app.url("/api/v1/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (s, users) = call(&app, Method::GET, "/api/v1/users", &token, None).await;
    assert_eq!(
        (s, users[0]["email"].as_str()),
        (200, Some("boss@example.be"))
    );
    // Signing out ends the token.
    assert_eq!(
        call(&app, Method::POST, "/api/v1/logout", &token, None)
            .await
            .0,
        204
    );
    assert_eq!(
        call(&app, Method::GET, "/api/v1/users", &token, None)
            .await
            .0,
        401
    );
}

/// A log-in from `client` (the app trusts 127.0.0.1 as its proxy): the status,
/// the Retry-After header, and the error's message.
async fn log_in_from(
    app: &TestApp,
    client: &str,
    email: &str,
    password: &str,
) -> (u16, Option<u64>, String) {
    let r = app
        .client
        .post(app.url("/api/v1/login"))
        .header("x-forwarded-for", client)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        retry,
        body["error"]["message"].as_str().unwrap_or("").to_string(),
    )
}

async fn behind_proxy() -> TestApp {
    spawn_with(Options {
        env: vec![("STANDBY_TRUSTED_PROXIES", "127.0.0.1".into())],
        ..Default::default()
    })
    .await
}

const RIGHT: &str = "correct horse battery staple";

#[tokio::test]
async fn successful_log_ins_never_count() {
    let app = behind_proxy().await;
    user(&app, "boss@example.be", "admin", None).await;
    for n in 0..25 {
        let (status, _, _) = log_in_from(&app, "203.0.113.5", "boss@example.be", RIGHT).await;
        assert_eq!(status, 200, "log-in {n}");
    }
}

#[tokio::test]
async fn failures_from_one_address_wait_longer_each_time_and_nobody_else_is_locked_out() {
    let app = behind_proxy().await;
    user(&app, "boss@example.be", "admin", None).await;
    let attacker = "203.0.113.9";
    for _ in 0..3 {
        assert_eq!(
            log_in_from(&app, attacker, "boss@example.be", "guess")
                .await
                .0,
            401
        );
    }
    // The fourth try waits 1 s, then 2 s after the next failure, and so on.
    let (status, retry, message) = log_in_from(&app, attacker, "boss@example.be", "guess").await;
    assert_eq!((status, retry), (429, Some(1)));
    assert!(
        message.contains("for this account from this address"),
        "{message}"
    );
    // The right password from the failing address waits too...
    assert_eq!(
        log_in_from(&app, attacker, "boss@example.be", RIGHT)
            .await
            .0,
        429
    );
    // ...but from an address that has not failed it is never refused.
    assert_eq!(
        log_in_from(&app, "198.51.100.7", "boss@example.be", RIGHT)
            .await
            .0,
        200
    );
    app.clock.advance_ms(1_000);
    assert_eq!(
        log_in_from(&app, attacker, "boss@example.be", "guess")
            .await
            .0,
        401
    );
    assert_eq!(
        log_in_from(&app, attacker, "boss@example.be", "guess")
            .await
            .1,
        Some(2)
    );
    app.clock.advance_ms(2_000);
    assert_eq!(
        log_in_from(&app, attacker, "boss@example.be", "guess")
            .await
            .0,
        401
    );
    assert_eq!(
        log_in_from(&app, attacker, "boss@example.be", "guess")
            .await
            .1,
        Some(4)
    );
    // Many failures later the wait stops growing at 15 minutes.
    for _ in 0..8 {
        app.clock.advance_ms(10 * 60 * 1000);
        assert_eq!(
            log_in_from(&app, attacker, "boss@example.be", "guess")
                .await
                .0,
            401
        );
    }
    assert_eq!(
        log_in_from(&app, attacker, "boss@example.be", "guess")
            .await
            .1,
        Some(900)
    );
    assert_eq!(
        log_in_from(&app, "198.51.100.7", "boss@example.be", RIGHT)
            .await
            .0,
        200
    );
    // After the wait, the right password goes through and the count is forgotten.
    app.clock.advance_ms(15 * 60 * 1000);
    assert_eq!(
        log_in_from(&app, attacker, "boss@example.be", RIGHT)
            .await
            .0,
        200
    );
    assert_eq!(
        log_in_from(&app, attacker, "boss@example.be", "typo")
            .await
            .0,
        401
    );
    assert_eq!(
        log_in_from(&app, attacker, "boss@example.be", RIGHT)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn one_address_failing_across_accounts_is_refused_for_every_account() {
    let app = behind_proxy().await;
    user(&app, "boss@example.be", "admin", None).await;
    let sprayer = "203.0.113.10";
    for n in 0..50 {
        let email = format!("guess{n}@example.be");
        assert_eq!(
            log_in_from(&app, sprayer, &email, "password1").await.0,
            401,
            "{email}"
        );
    }
    let (status, retry, message) =
        log_in_from(&app, sprayer, "other@example.be", "password1").await;
    assert_eq!(status, 429);
    assert_eq!(retry, Some(15 * 60));
    assert!(
        message.contains("from this address, whatever the account"),
        "{message}"
    );
    assert_eq!(
        log_in_from(&app, sprayer, "boss@example.be", RIGHT).await.0,
        429
    );
    // The account's owner, elsewhere, is not affected.
    assert_eq!(
        log_in_from(&app, "198.51.100.7", "boss@example.be", RIGHT)
            .await
            .0,
        200
    );
    app.clock.advance_ms(15 * 60 * 1000);
    assert_eq!(
        log_in_from(&app, sprayer, "boss@example.be", RIGHT).await.0,
        200
    );
}

#[tokio::test]
async fn staff_of_one_centre_get_the_404_of_a_missing_id_on_every_resource_of_another() {
    let app = spawn_app().await;
    let w = world(&app, 50).await;
    let nurse = user(&app, "nurse@example.be", "staff", Some(w.center_b)).await;
    let offer_a = offer(&app, &w, 2, 600).await;
    let (s, e) = tomorrow();
    let a = w.center;
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            format!("/api/v1/centers/{a}/deliveries"),
            Some(json!({"vaccine": "PFZ", "doses": 5})),
        ),
        (
            Method::POST,
            format!("/api/v1/centers/{a}/adjustments"),
            Some(json!({"vaccine": "PFZ", "kind": "wasted", "doses": 1})),
        ),
        (Method::GET, format!("/api/v1/centers/{a}/stock"), None),
        (
            Method::POST,
            format!("/api/v1/centers/{a}/offers"),
            Some(json!({"vaccine": "PFZ", "doses": 1, "starts_at": s, "ends_at": e})),
        ),
        (
            Method::GET,
            format!("/api/v1/centers/{a}/appointments?date=2026-11-25"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/centers/{a}/appointments?q=Last1"),
            None,
        ),
        (Method::GET, format!("/api/v1/offers/{offer_a}"), None),
        (
            Method::POST,
            format!("/api/v1/offers/{offer_a}/close"),
            None,
        ),
    ];
    // Another centre's ids get exactly the answer of ids that do not exist.
    let missing = 999_999;
    for (method, path, body) in routes {
        let (status, answer) = call(&app, method.clone(), &path, &nurse, body.clone()).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        let ghost = path
            .replace(&format!("/centers/{a}/"), &format!("/centers/{missing}/"))
            .replace(&format!("/offers/{offer_a}"), &format!("/offers/{missing}"));
        let (ghost_status, ghost_answer) = call(&app, method.clone(), &ghost, &nurse, body).await;
        assert_eq!(
            (status, &answer),
            (ghost_status, &ghost_answer),
            "{method} {path} answers as {ghost}"
        );
    }
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        // Admin-only routes.
        (
            Method::POST,
            "/api/v1/centers".into(),
            Some(
                json!({"name": "x", "address": "y", "postal_code": "1", "time_zone": "Europe/Brussels"}),
            ),
        ),
        (
            Method::POST,
            "/api/v1/vaccines".into(),
            Some(json!({"code": "X", "name": "x", "min_age": 0, "max_age": 120})),
        ),
        (Method::GET, "/api/v1/users".into(), None),
        (
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({"email": "x@example.be", "password": "long enough pw", "role": "admin"})),
        ),
        (Method::GET, "/api/v1/audit".into(), None),
    ];
    for (method, path, body) in routes {
        let (status, answer) = call(&app, method.clone(), &path, &nurse, body).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "forbidden");
    }
    // An appointment of centre A, whose status the nurse of B may not set.
    person(&app, Person::new(1), 1_000).await;
    crate::engine_wait(&app, &w, offer_a).await;
    let link = invitation_links(&app).pop().unwrap();
    let r = app
        .client
        .post(app.url(&format!(
            "/api/v1/invitations/{}/accept",
            link.rsplit('/').next().unwrap()
        )))
        .send()
        .await
        .unwrap();
    let appt: Value = r.json().await.unwrap();
    let appt_id = appt["appointment"]["id"].as_str().unwrap().to_string();
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/api/v1/appointments/{appt_id}/status"),
        &nurse,
        Some(json!({"status": "attended"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/appointments/999999/status",
        &nurse,
        Some(json!({"status": "attended"})),
    )
    .await;
    assert_eq!(status, 404);
    // Nothing changed at centre A; the nurse works normally at B.
    assert_eq!(
        call(
            &app,
            Method::GET,
            &format!("/api/v1/offers/{offer_a}"),
            &w.admin,
            None
        )
        .await
        .1["status"],
        "open"
    );
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/api/v1/centers/{}/deliveries", w.center_b),
        &nurse,
        Some(json!({"vaccine": "PFZ", "doses": 5})),
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn stock_never_goes_negative_under_concurrent_requests() {
    let app = spawn_app().await;
    let w = world(&app, 100).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = app.client.clone();
        let admin = w.admin.clone();
        let (s, e) = tomorrow();
        let url = if i % 2 == 0 {
            app.url(&format!("/api/v1/centers/{}/adjustments", w.center))
        } else {
            app.url(&format!("/api/v1/centers/{}/offers", w.center))
        };
        let body = if i % 2 == 0 {
            json!({"vaccine": "PFZ", "kind": "wasted", "doses": 10})
        } else {
            json!({"vaccine": "PFZ", "doses": 10, "starts_at": s, "ends_at": e})
        };
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(admin)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let s = t.await.unwrap();
        assert!(matches!(s, 201 | 409), "{s}");
        ok += usize::from(s == 201);
    }
    assert_eq!(ok, 10, "100 doses, 10 at a time");
    let (_, stock) = call(
        &app,
        Method::GET,
        &format!("/api/v1/centers/{}/stock", w.center),
        &w.admin,
        None,
    )
    .await;
    let on_hand = stock[0]["on_hand"].as_i64().unwrap();
    let reserved = stock[0]["reserved"].as_i64().unwrap();
    assert!(
        on_hand >= 0 && reserved <= on_hand && on_hand - reserved == 0,
        "{stock}"
    );
}

#[tokio::test]
async fn bad_staff_input_names_the_fields() {
    let app = spawn_app().await;
    let w = world(&app, 10).await;
    let (s, e) = call(
        &app,
        Method::POST,
        "/api/v1/centers",
        &w.admin,
        Some(json!({"name": "", "address": "x", "postal_code": "1", "time_zone": "Mars/Olympus"})),
    )
    .await;
    assert_eq!(s, 422);
    assert!(
        e["error"]["fields"]["name"].is_string() && e["error"]["fields"]["time_zone"].is_string()
    );
    let (s, e) = call(
        &app,
        Method::POST,
        &format!("/api/v1/centers/{}/deliveries", w.center),
        &w.admin,
        Some(json!({"vaccine": "NOPE", "doses": -3})),
    )
    .await;
    assert_eq!(s, 422);
    assert!(
        e["error"]["fields"]["vaccine"].is_string() && e["error"]["fields"]["doses"].is_string()
    );
    let (s, e) = call(&app, Method::POST, &format!("/api/v1/centers/{}/offers", w.center), &w.admin, Some(json!({"vaccine": "PFZ", "doses": "two", "starts_at": "tomorrow", "response_seconds": 5}))).await;
    assert_eq!(s, 422, "{e}");
    assert_eq!(
        call(
            &app,
            Method::POST,
            "/api/v1/vaccines",
            &w.admin,
            Some(json!({"code": "PFZ", "name": "again", "min_age": 0, "max_age": 10}))
        )
        .await
        .0,
        409
    );
    assert_eq!(
        call(&app, Method::GET, "/api/v1/offers/999", &w.admin, None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/api/v1/centers/abc/stock",
            &w.admin,
            None
        )
        .await
        .0,
        404
    );
    let (s, trail) = call(&app, Method::GET, "/api/v1/audit", &w.admin, None).await;
    assert_eq!(s, 200);
    assert!(
        trail
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "stock.delivered")
    );
}

#[tokio::test]
async fn check_in_finds_people_by_national_id_or_name_and_administers_a_dose() {
    let app = spawn_app().await;
    let w = world(&app, 20).await;
    let nid = crate::helpers::be_id(42);
    // A real sign-up, so the national ID's keyed hash is the one check-in looks for.
    let mut body = registration(42);
    body["last_name"] = json!("Vandenbroucke");
    assert_eq!(
        app.post_json("/api/v1/registrations", &body).await.status(),
        202
    );
    let (confirm, _) = app.links_for("person42@example.be").await;
    app.client.post(&confirm).send().await.unwrap();
    let id = offer(&app, &w, 1, 600).await;
    crate::engine_wait(&app, &w, id).await;
    let link = invitation_links(&app)
        .into_iter()
        .find(|l| l.contains("/i/"))
        .unwrap();
    let r = app
        .client
        .post(app.url(&format!(
            "/api/v1/invitations/{}/accept",
            link.rsplit('/').next().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let path = format!("/api/v1/centers/{}/appointments", w.center);
    let (_, today) = call(
        &app,
        Method::GET,
        &format!("{path}?date=2026-11-25"),
        &w.admin,
        None,
    )
    .await;
    assert_eq!(today.as_array().unwrap().len(), 1);
    assert_eq!(today[0]["last_name"], "Vandenbroucke");
    let spaced = format!(
        "{}.{}.{}-{}.{}",
        &nid[0..2],
        &nid[2..4],
        &nid[4..6],
        &nid[6..9],
        &nid[9..]
    );
    let (_, by_id) = call(
        &app,
        Method::GET,
        &format!("{path}?q={spaced}"),
        &w.admin,
        None,
    )
    .await;
    let (_, by_name) = call(
        &app,
        Method::GET,
        &format!("{path}?q=vandenbr"),
        &w.admin,
        None,
    )
    .await;
    assert_eq!(by_id, by_name);
    assert_eq!(by_id.as_array().unwrap().len(), 1);
    let appt = by_id[0]["id"].as_str().unwrap();
    let (s, a) = call(
        &app,
        Method::POST,
        &format!("/api/v1/appointments/{appt}/status"),
        &w.admin,
        Some(json!({"status": "attended"})),
    )
    .await;
    assert_eq!((s, a["status"].as_str()), (200, Some("attended")));
    let (_, stock) = call(
        &app,
        Method::GET,
        &format!("/api/v1/centers/{}/stock", w.center),
        &w.admin,
        None,
    )
    .await;
    assert_eq!(
        (
            stock[0]["on_hand"].as_i64(),
            stock[0]["reserved"].as_i64(),
            stock[0]["administered"].as_i64()
        ),
        (Some(19), Some(0), Some(1))
    );
    assert_eq!(app.stats().await["vaccinated"], 1);
    assert_eq!(
        call(
            &app,
            Method::POST,
            &format!("/api/v1/appointments/{appt}/status"),
            &w.admin,
            Some(json!({"status": "no_show"}))
        )
        .await
        .0,
        409
    );
}

/// Signs in through the log-in page; gives the session cookie and the CSRF token of the forms.
async fn page_session(app: &TestApp, email: &str) -> (String, String) {
    let r = app
        .client
        .post(app.url("/login"))
        .form(&[
            ("email", email),
            ("password", "correct horse battery staple"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let html = app
        .client
        .get(app.url("/staff/admin"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    (cookie, csrf)
}

#[tokio::test]
async fn staff_pages_need_a_session_and_a_csrf_token_and_speak_four_languages() {
    let app = spawn_app().await;
    let w = world(&app, 5).await;
    user(&app, "chief@example.be", "admin", None).await;
    // Without a session: sent to the log-in page.
    let r = app
        .client
        .get(app.url(&format!("/staff/centers/{}", w.center)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (303, "/login")
    );
    let r = app
        .client
        .post(app.url("/login"))
        .form(&[("email", "chief@example.be"), ("password", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (cookie, csrf) = page_session(&app, "chief@example.be").await;
    for lang in ["fr", "nl", "de", "en"] {
        for path in [
            format!("/staff/centers/{}", w.center),
            "/staff/admin".into(),
            "/staff/audit".into(),
            "/login".into(),
        ] {
            let r = app
                .client
                .get(app.url(&format!("{path}?lang={lang}")))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path} {lang}");
            let html = r.text().await.unwrap();
            assert!(
                html.contains(&format!("<html lang=\"{lang}\"")) && !html.contains('⟦'),
                "{path} {lang}"
            );
        }
    }
    // A form without the CSRF token, or with another, changes nothing.
    let path = format!("/staff/centers/{}/delivery", w.center);
    for token in ["", "forged-token"] {
        let r = app
            .client
            .post(app.url(&path))
            .header("cookie", &cookie)
            .form(&[("csrf", token), ("vaccine", "PFZ"), ("doses", "7")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    let (_, stock) = call(
        &app,
        Method::GET,
        &format!("/api/v1/centers/{}/stock", w.center),
        &w.admin,
        None,
    )
    .await;
    assert_eq!(stock[0]["on_hand"], 5);
    let r = app
        .client
        .post(app.url(&path))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("vaccine", "PFZ"), ("doses", "7")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (_, stock) = call(
        &app,
        Method::GET,
        &format!("/api/v1/centers/{}/stock", w.center),
        &w.admin,
        None,
    )
    .await;
    assert_eq!(stock[0]["on_hand"], 12);
    // The API refuses a cookie-authenticated change without the X-CSRF-Token header.
    let r = app
        .client
        .post(app.url(&format!("/api/v1/centers/{}/deliveries", w.center)))
        .header("cookie", &cookie)
        .json(&json!({"vaccine": "PFZ", "doses": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Signing out ends the session.
    let r = app
        .client
        .post(app.url("/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = app
        .client
        .get(app.url("/staff/admin"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn the_sign_up_form_shows_a_new_centre_at_once_in_every_language() {
    let app = spawn_app().await;
    let w = world(&app, 0).await;
    let form = |lang: &'static str| {
        let app = &app;
        async move {
            let page = app
                .client
                .get(app.url(&format!("/?lang={lang}")))
                .send()
                .await
                .unwrap();
            assert_eq!(page.status(), 200);
            page.text().await.unwrap()
        }
    };
    // Loaded twice in each language (the second from the cache), before.
    for lang in ["en", "fr", "en", "fr"] {
        assert!(!form(lang).await.contains("Centre Nouveau"), "{lang}");
    }
    let (s, _) = call(
        &app,
        Method::POST,
        "/api/v1/centers",
        &w.admin,
        Some(json!({"name": "Centre Nouveau", "address": "Rue 1", "postal_code": "1000", "time_zone": "Europe/Brussels"})),
    )
    .await;
    assert_eq!(s, 201);
    for lang in ["en", "fr", "nl", "de"] {
        let html = form(lang).await;
        assert!(html.contains("Centre Nouveau (Rue 1)"), "{lang}");
        assert!(html.contains(&format!("lang=\"{lang}\"")), "{lang}");
    }
}
