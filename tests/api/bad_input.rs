//! Hostile and broken input: each answered with the contract's error,
//! nothing stored, and the server still serving.

use crate::helpers::*;
use serde_json::{Value, json};

async fn expect_error(app: &TestApp, resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let body: Value = resp.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(app.stats().await["registered"], 0, "nothing stored");
    assert_eq!(app.get_json("/healthz").await.0, 200, "still serving");
    body
}

#[tokio::test]
async fn malformed_bodies() {
    let app = spawn_app().await;
    let url = app.url("/api/v1/registrations");
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"national_id\": ")
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 400, "bad_request").await;
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 400, "bad_request").await;
    let r = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 415, "unsupported_media_type").await;
    let r = app.client.post(&url).body("{}").send().await.unwrap();
    expect_error(&app, r, 415, "unsupported_media_type").await;
    let mut big = registration(1);
    big["first_name"] = json!("x".repeat(17 * 1024));
    let r = app.post_json("/api/v1/registrations", &big).await;
    expect_error(&app, r, 413, "payload_too_large").await;
    let r = app
        .client
        .post(app.url("/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=".to_string() + &"b".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("<html"));
}

#[tokio::test]
async fn invalid_fields_are_all_named() {
    let app = spawn_app().await;
    let future = standby::demo::belgian_id(2026, 12, 31, 1);
    let cases: Vec<(&str, Value)> = vec![
        ("first_name", json!("Ann\u{0}e")),
        ("last_name", json!("Line\nbreak")),
        ("first_name", json!("x".repeat(10_000))),
        ("national_id", json!("85073003329")),
        ("national_id", json!(future)),
        (
            "national_id",
            json!("85073003328'; DROP TABLE registrants; --"),
        ),
        ("email", json!("a@b")),
        ("phone", json!("0470 12 34 56")),
        ("language", json!("es")),
        ("title", json!("dr")),
        ("country", json!("FR")),
        ("centers", json!(["1 OR 1=1"])),
        ("centers", json!([12345])),
        (
            "availability",
            json!([{"day": "mon", "from": "25:00", "to": "26:00"}]),
        ),
        ("availability", json!("always")),
        ("consent", json!(false)),
        ("consent", json!("yes")),
        ("first_name", json!(42)),
    ];
    for (field, value) in cases {
        let mut body = registration(1);
        body[field] = value.clone();
        let r = app.post_json("/api/v1/registrations", &body).await;
        let err = expect_error(&app, r, 422, "validation_failed").await;
        let fields = err["error"]["fields"].as_object().unwrap();
        assert!(fields.contains_key(field), "{field}={value}: {err}");
        assert_eq!(
            fields.len(),
            1,
            "{field}={value}: only that field is wrong: {err}"
        );
    }
    // Several at once, in the language asked for.
    let r = app
        .client
        .post(app.url("/api/v1/registrations"))
        .header("accept-language", "nl")
        .json(&json!({"consent": true}))
        .send()
        .await
        .unwrap();
    let err = expect_error(&app, r, 422, "validation_failed").await;
    assert_eq!(err["error"]["fields"]["email"], "Dit veld is verplicht.");
    assert_eq!(err["error"]["fields"].as_object().unwrap().len(), 4);
}

#[tokio::test]
async fn sql_metacharacters_and_markup_are_just_text() {
    let app = spawn_app().await;
    let mut body = registration(1);
    body["last_name"] = json!("Robert'); DROP TABLE registrants; --");
    body["first_name"] = json!("<script>alert('x')</script>");
    assert_eq!(
        app.post_json("/api/v1/registrations", &body).await.status(),
        202
    );
    assert_eq!(app.stats().await["registered"], 1);
    let mails = app.wait_for_emails(1).await;
    assert!(
        mails[0].contains("<script>alert('x')</script>"),
        "plain-text mail carries the name as written"
    );
    let row = app.store().registrant_raw_row(1).await.unwrap().unwrap();
    let last = row
        .iter()
        .find(|(c, _)| c == "last_name")
        .unwrap()
        .1
        .clone();
    assert_eq!(
        last.as_deref(),
        Some("Robert'); DROP TABLE registrants; --")
    );
}

#[tokio::test]
async fn unknown_routes_and_tokens() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/api/v1/nothing-here").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(app.get_json("/api/v1/me/not-a-token").await.0, 404);
    assert_eq!(
        app.get_json(&format!("/api/v1/me/{}", "a".repeat(43)))
            .await
            .0,
        404
    );
    let r = app
        .client
        .post(app.url(&format!("/confirm/{}", "b".repeat(43))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .client
        .get(app.url("/nowhere?lang=de"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Diese Seite gibt es nicht")
    );
}

#[tokio::test]
async fn one_client_sending_too_much_gets_429_with_retry_after() {
    let app = spawn_with(Options {
        env: vec![("STANDBY_CLIENT_RATE", "3".into())],
        ..Default::default()
    })
    .await;
    for n in 0..3 {
        assert_eq!(
            app.post_json("/api/v1/registrations", &registration(n))
                .await
                .status(),
            202
        );
    }
    let r = app
        .post_json("/api/v1/registrations", &registration(9))
        .await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "too_many_requests"
    );
    // Reading the public pages is not limited.
    assert_eq!(app.get_json("/api/v1/stats").await.0, 200);
    // The next minute, the client may sign up again.
    app.clock.advance_ms(60_000);
    assert_eq!(
        app.post_json("/api/v1/registrations", &registration(9))
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn hsts_behind_tls_and_secure_cookies() {
    let app = spawn_with(Options {
        env: vec![("STANDBY_PUBLIC_URL", "https://waitlist.example.lu".into())],
        ..Default::default()
    })
    .await;
    let r = app.client.get(app.url("/")).send().await.unwrap();
    assert!(
        r.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .starts_with("max-age=")
    );
    let token = crate::setup::user(&app, "a@example.be", "admin", None).await;
    assert_eq!(token.len(), standby::security::TOKEN_LEN);
    let r = app
        .client
        .post(app.url("/login"))
        .form(&[
            ("email", "a@example.be"),
            ("password", "correct horse battery staple"),
        ])
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let plain = spawn_app().await;
    let r = plain.client.get(plain.url("/")).send().await.unwrap();
    assert!(
        !r.headers().contains_key("strict-transport-security"),
        "no HSTS over plain HTTP"
    );
}

#[tokio::test]
async fn the_client_limit_holds_across_processes_sharing_a_database() {
    let env = || {
        vec![
            ("STANDBY_CLIENT_RATE", "4".to_string()),
            ("STANDBY_REUSE_PORT", "1".to_string()),
        ]
    };
    let a = spawn_with(Options {
        env: env(),
        ..Default::default()
    })
    .await;
    let b = spawn_with(Options {
        env: env(),
        database: Some(a.database_url.clone()),
        ..Default::default()
    })
    .await;
    for (app, n) in [(&a, 1), (&b, 2), (&a, 3), (&b, 4)] {
        assert_eq!(
            app.post_json("/api/v1/registrations", &registration(n))
                .await
                .status(),
            202
        );
    }
    // Four in this minute across both processes: the fifth is refused by either.
    let r = b.post_json("/api/v1/registrations", &registration(5)).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        a.post_json("/api/v1/registrations", &registration(6))
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn security_headers_on_every_answer() {
    let app = spawn_app().await;
    for path in ["/", "/api/v1/stats", "/nowhere"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'")
                && csp.contains("script-src 'self'")
                && !csp.contains("unsafe-inline")
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "same-origin");
    }
}

#[tokio::test]
async fn forms_posted_from_another_site_are_refused() {
    let app = spawn_app().await;
    let form = [
        ("national_id", be_id(1)),
        ("first_name", "A".into()),
        ("last_name", "B".into()),
        ("email", "a@example.be".into()),
        ("consent", "on".into()),
    ];
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = app
            .client
            .post(app.url("/"))
            .header(name, value)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
    }
    let me = format!("/me/{}", "a".repeat(43));
    let r = app
        .client
        .post(app.url(&me))
        .header("origin", "https://evil.example")
        .form(&[("action", "withdraw"), ("really", "on")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.stats().await["registered"], 0);
    // From our own page it goes through.
    let r = app
        .client
        .post(app.url("/"))
        .header("origin", app.base.clone())
        .header("sec-fetch-site", "same-origin")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.stats().await["registered"], 1);
}
