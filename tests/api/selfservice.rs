use crate::helpers::*;
use serde_json::{Value, json};

#[tokio::test]
async fn me_shows_and_changes_availability_centres_phone_and_language() {
    let app = spawn_app().await;
    let center = app
        .store()
        .create_center(
            &standby_store::NewCenter {
                name: "Heysel".into(),
                address: "Bruxelles".into(),
                postal_code: "1020".into(),
                time_zone: "Europe/Brussels".into(),
                quiet_hours: None,
            },
            "test",
            0,
        )
        .await
        .unwrap();
    app.state.forget_centers();
    let me = app.registered_and_confirmed(1).await;
    let api = me.replace("/me/", "/api/v1/me/");
    let (status, view) = app.get_json(&api).await;
    assert_eq!(status, 200);
    assert_eq!(
        view,
        json!({"status": "waiting", "language": "en", "centers": [], "availability": [], "phone": null})
    );

    let patch = json!({
        "language": "de",
        "centers": [center.id.to_string()],
        "availability": [{"day": "sat", "from": "10:00", "to": "12:00"}, {"day": "sat", "from": "11:00", "to": "13:30"}],
        "phone": "+352 621 123 456",
    });
    let r = app
        .client
        .patch(app.url(&api))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["language"], "de");
    assert_eq!(view["centers"], json!([center.id.to_string()]));
    assert_eq!(
        view["availability"],
        json!([{"day": "sat", "from": "10:00", "to": "13:30"}])
    );
    assert_eq!(view["phone"], "+352621123456");

    // Bad values name their fields and change nothing.
    let r = app
        .client
        .patch(app.url(&api))
        .json(&json!({"phone": "12", "centers": ["999"], "status": "vaccinated"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let err: Value = r.json().await.unwrap();
    let fields = err["error"]["fields"].as_object().unwrap();
    assert!(
        fields.contains_key("phone")
            && fields.contains_key("centers")
            && fields.contains_key("status")
    );
    assert_eq!(app.get_json(&api).await.1, view);

    // Removing the phone.
    let r = app
        .client
        .patch(app.url(&api))
        .json(&json!({"phone": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["phone"], Value::Null);
}

#[tokio::test]
async fn pause_resume_and_withdraw_which_erases_personal_data() {
    let app = spawn_app().await;
    let me = app.registered_and_confirmed(4).await;
    let api = me.replace("/me/", "/api/v1/me/");
    let r = app
        .client
        .patch(app.url(&api))
        .json(&json!({"status": "paused"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "paused");
    assert_eq!(app.stats().await["waiting"], 0);
    let r = app
        .client
        .patch(app.url(&api))
        .json(&json!({"status": "waiting"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "waiting");

    let r = app.client.delete(app.url(&api)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.get_json(&api).await.1["status"], "withdrawn");
    let row = app.store().registrant_raw_row(1).await.unwrap().unwrap();
    for (col, value) in row {
        match col.as_str() {
            "status" => assert_eq!(value.as_deref(), Some("withdrawn")),
            "language" => {}
            _ => assert_eq!(value, None, "{col} is erased"),
        }
    }
    assert_eq!(app.stats().await["registered"], 0);
    // Changes after withdrawal are refused.
    let r = app
        .client
        .patch(app.url(&api))
        .json(&json!({"language": "fr"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // The person may sign up again later.
    assert_eq!(
        app.post_json("/api/v1/registrations", &registration(4))
            .await
            .status(),
        202
    );
    assert_eq!(app.stats().await["registered"], 1);
}

#[tokio::test]
async fn the_me_page_works_with_plain_forms() {
    let app = spawn_app().await;
    let me = app.registered_and_confirmed(5).await;
    let html = app.get_text(&format!("{me}?lang=en")).await;
    assert!(html.contains("on the list"));
    let r = app
        .client
        .post(app.url(&me))
        .form(&[("action", "pause")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let html = app.get_text(&format!("{me}?saved=1&lang=en")).await;
    assert!(html.contains("paused") && html.contains("Changes saved"));
    let r = app
        .client
        .post(app.url(&me))
        .form(&[("action", "save"), ("phone", "abc"), ("language", "fr")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = app
        .client
        .post(app.url(&me))
        .form(&[("action", "withdraw")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "withdrawing needs the box ticked");
    let r = app
        .client
        .post(app.url(&me))
        .form(&[("action", "withdraw"), ("really", "on")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let html = app.get_text(&format!("{me}?lang=en")).await;
    assert!(html.contains("personal data is erased"));
}
