//! API description, data protection (export, retention) and metrics.

use crate::helpers::*;
use serde_json::Value;

/// (method, path) of every `/api/v1` route the router declares.
fn declared_routes() -> Vec<(String, String)> {
    let src: String = include_str!("../../src/web/mod.rs")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = Vec::new();
    for segment in src.split(".route(").skip(1) {
        let segment = segment.split(".fallback(").next().unwrap();
        let path = segment.split('"').nth(1).unwrap().to_string();
        if !path.starts_with("/api/") {
            continue;
        }
        for method in ["get", "post", "patch", "delete"] {
            if segment.contains(&format!(", {method}(")) || segment.contains(&format!(".{method}("))
            {
                out.push((method.to_string(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_only_those() {
    let app = spawn_app().await;
    let (status, doc) = app.get_json("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let declared = declared_routes();
    assert!(declared.len() > 25, "{declared:?}");
    for (method, path) in &declared {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not in openapi.json"));
        assert!(
            item.get(method).is_some(),
            "{method} {path} is not in openapi.json"
        );
    }
    for (path, item) in paths {
        for method in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "parameters")
        {
            assert!(
                declared.iter().any(|(m, p)| m == method && p == path),
                "openapi.json describes {method} {path}, which the router lacks"
            );
        }
    }
    // Every $ref resolves.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/").skip(1) {
        let name = r.split('"').next().unwrap();
        let (kind, key) = name.split_once('/').unwrap();
        assert!(
            doc["components"][kind][key].is_object(),
            "dangling $ref {name}"
        );
    }
}

#[tokio::test]
async fn a_registrant_can_export_everything_kept_about_them() {
    let app = spawn_app().await;
    let me = app.registered_and_confirmed(8).await;
    let (status, export) = app
        .get_json(&format!("{}/export", me.replace("/me/", "/api/v1/me/")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(export["registrant"]["email"], "person8@example.be");
    assert_eq!(export["registrant"]["status"], "waiting");
    assert!(
        export["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["kind"] == "confirmation")
    );
    assert!(
        !export.to_string().contains(&be_id(8)),
        "the national ID is not kept, so not exported"
    );
    assert_eq!(
        app.get_json(&format!("/api/v1/me/{}/export", "x".repeat(43)))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn personal_data_of_the_vaccinated_is_purged_after_the_retention_period() {
    use crate::setup::*;
    let app = spawn_with(Options {
        env: vec![("STANDBY_RETENTION_DAYS", "30".into())],
        workers: true,
        ..Default::default()
    })
    .await;
    let w = world(&app, 10).await;
    let vaccinated = person(
        &app,
        Person {
            phone: Some("+32470000001"),
            ..Person::new(1)
        },
        1_000,
    )
    .await;
    // Too young for this vaccine, so never invited: stays waiting.
    let waiting = person(
        &app,
        Person {
            birth_year: 2015,
            ..Person::new(2)
        },
        2_000,
    )
    .await;
    let id = offer(&app, &w, 1, 600).await;
    crate::engine_wait(&app, &w, id).await;
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
    let booked: Value = r.json().await.unwrap();
    let appt = booked["appointment"]["id"].as_str().unwrap().to_string();
    let (s, _) = call(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/appointments/{appt}/status"),
        &w.admin,
        Some(serde_json::json!({"status": "attended"})),
    )
    .await;
    assert_eq!(s, 200);
    let personal = |row: Vec<(String, Option<String>)>| {
        row.into_iter()
            .filter(|(c, v)| !matches!(c.as_str(), "status" | "language") && v.is_some())
            .count()
    };
    app.clock.advance_ms(29 * 24 * 3600 * 1000);
    standby::services::engine::tick(&app.state).await.unwrap();
    assert!(
        personal(
            app.store()
                .registrant_raw_row(vaccinated)
                .await
                .unwrap()
                .unwrap()
        ) > 0,
        "kept for 30 days"
    );
    app.clock.advance_ms(2 * 24 * 3600 * 1000);
    standby::services::engine::tick(&app.state).await.unwrap();
    let row = app
        .store()
        .registrant_raw_row(vaccinated)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(personal(row.clone()), 0, "erased after 30 days: {row:?}");
    let row = app
        .store()
        .registrant_raw_row(vaccinated)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.iter()
            .find(|(c, _)| c == "status")
            .unwrap()
            .1
            .as_deref(),
        Some("vaccinated"),
        "the figure stays counted"
    );
    assert!(
        personal(
            app.store()
                .registrant_raw_row(waiting)
                .await
                .unwrap()
                .unwrap()
        ) > 0,
        "someone still waiting is untouched"
    );
    assert!(
        app.store()
            .audit_trail(100)
            .await
            .unwrap()
            .iter()
            .any(|a| a.action == "registrant.purged")
    );
}

#[tokio::test]
async fn metrics_in_prometheus_format() {
    let app = spawn_app().await;
    assert_eq!(
        app.post_json("/api/v1/registrations", &registration(1))
            .await
            .status(),
        202
    );
    app.wait_for_emails(1).await;
    let text = app.get_text("/metrics").await;
    for needle in [
        "standby_http_requests_total{route=\"/api/v1/registrations\",method=\"POST\",status=\"202\"}",
        "standby_http_request_duration_seconds_sum",
        "standby_registrants{status=\"registered\"} 1",
        "standby_outbox_messages{channel=\"email\"",
        "standby_doses_available 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // The tails, not only the means: latency histograms (process-wide, so
    // other tests' requests may be counted too; this one's at least).
    for name in [
        "standby_http_latency_seconds",
        "standby_signup_store_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} histogram")),
            "no {name} in\n{text}"
        );
        let count: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}_count in\n{text}"));
        assert!(count >= 1, "{name} counted nothing");
        assert!(text.contains(&format!("{name}_bucket{{le=\"+Inf\"}} {count}\n")));
    }
    // Nothing personal in the metrics.
    assert!(!text.contains("person1@example.be") && !text.contains(&be_id(1)));
}

#[tokio::test]
async fn metrics_show_how_long_the_oldest_message_has_waited() {
    let app = spawn_with(Options {
        workers: false,
        ..Default::default()
    })
    .await;
    assert_eq!(
        app.post_json("/api/v1/registrations", &registration(1))
            .await
            .status(),
        202
    );
    app.clock.advance_ms(90_000);
    let text = app.get_text("/metrics").await;
    assert!(
        text.contains("standby_outbox_oldest_waiting_seconds{channel=\"email\"} 90.000"),
        "{text}"
    );
    assert!(text.contains("standby_outbox_messages{channel=\"email\",state=\"queued\"} 1"));
}
