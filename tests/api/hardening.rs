//! Smaller findings of the attack from outside: every API error is the JSON
//! error, the bearer scheme is case-insensitive, staff pages are never
//! cached, and /metrics is not for everyone.

use crate::helpers::*;
use crate::setup::*;
use serde_json::Value;

async fn json_error(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(kind.starts_with("application/json"), "{status}: {kind}");
    let body: Value = r.json().await.expect("a JSON body");
    assert!(
        body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "{body}"
    );
    (status, body)
}

#[tokio::test]
async fn every_api_error_is_the_json_error() {
    let app = spawn_app().await;
    let w = world(&app, 1).await;
    let get = |path: String| app.client.get(app.url(&path)).bearer_auth(&w.admin).send();
    // A query string with a field twice.
    let (s, body) = json_error(
        get(format!(
            "/api/v1/centers/{}/appointments?date=2026-11-25&date=2026-11-26",
            w.center
        ))
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("query string"),
        "{body}"
    );
    // Path parameters that are not numbers, or not even text.
    for path in [
        "/api/v1/offers/abc",
        "/api/v1/centers/-1/stock",
        "/api/v1/offers/%FF",
    ] {
        let (s, body) = json_error(get(path.into()).await.unwrap()).await;
        assert!(matches!(s, 400 | 404), "{path}: {s} {body}");
    }
    // A method the route does not take, and a route that does not exist.
    let r = app
        .client
        .put(app.url("/api/v1/stats"))
        .send()
        .await
        .unwrap();
    let (s, body) = json_error(r).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (s, _) = json_error(get("/api/v1/nothing-here".into()).await.unwrap()).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_whatever_its_case() {
    let app = spawn_app().await;
    let w = world(&app, 0).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = app
            .client
            .get(app.url("/api/v1/users"))
            .header("authorization", format!("{scheme} {}", w.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    for header in [
        format!("Basic {}", w.admin),
        w.admin.clone(),
        "Bearer".into(),
    ] {
        let r = app
            .client
            .get(app.url("/api/v1/users"))
            .header("authorization", header.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{header}");
    }
}

#[tokio::test]
async fn staff_pages_are_never_stored_by_a_browser_or_a_proxy() {
    let app = spawn_app().await;
    let w = world(&app, 0).await;
    // A session cookie, from the log-in form.
    let r = app
        .client
        .post(app.url("/login"))
        .form(&[
            ("email", "admin@example.be"),
            ("password", "correct horse battery staple"),
        ])
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("standby_session="))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    for path in [
        "/staff".to_string(),
        format!("/staff/centers/{}", w.center),
        "/staff/admin".into(),
        "/staff/audit".into(),
    ] {
        let r = app
            .client
            .get(app.url(&path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
    }
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let token = "metrics-token-0123456789abcdef0123456789";
    let app = spawn_with(Options {
        env: vec![("STANDBY_METRICS_TOKEN", token.into())],
        ..Default::default()
    })
    .await;
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(
        r.status(),
        401,
        "loopback alone is not enough once a token is set"
    );
    let r = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("metrics-token-0123456789abcdef0123456780")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("standby_registrants"));
}
