use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn sign_up_confirm_and_see_the_stats_move() {
    let app = spawn_app().await;
    let body = registration(1);
    let r = app.post_json("/api/v1/registrations", &body).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "received"})
    );
    let stats = app.stats().await;
    assert_eq!(
        (stats["registered"].as_i64(), stats["confirmed"].as_i64()),
        (Some(1), Some(0))
    );

    let (confirm, me) = app.links_for("person1@example.be").await;
    assert!(confirm.starts_with(&app.url("/confirm/")) && me.starts_with(&app.url("/me/")));

    // Following the link (a mail scanner does) shows a button and confirms nobody.
    let page = app.client.get(&confirm).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\""));
    assert_eq!(app.stats().await["confirmed"], 0);

    let r = app.client.post(&confirm).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let stats = app.stats().await;
    assert_eq!(
        (stats["confirmed"].as_i64(), stats["waiting"].as_i64()),
        (Some(1), Some(1))
    );
    let (_, me_view) = app
        .get_json(&me.replace(&app.base, "").replace("/me/", "/api/v1/me/"))
        .await;
    assert_eq!(me_view["status"], "waiting");

    // Repeating the confirmation changes nothing.
    let again = app.client.post(&confirm).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(app.stats().await, stats);
}

#[tokio::test]
async fn a_repeated_national_id_makes_no_second_entry_and_the_answer_tells_nothing() {
    let app = spawn_app().await;
    let first = app
        .post_json("/api/v1/registrations", &registration(7))
        .await;
    let (s1, b1) = (first.status(), first.text().await.unwrap());
    // Same person, other formatting, other e-mail.
    let mut again = registration(7);
    let id = again["national_id"].as_str().unwrap().to_string();
    again["national_id"] = json!(format!(
        "{}.{}.{}-{}.{}",
        &id[0..2],
        &id[2..4],
        &id[4..6],
        &id[6..9],
        &id[9..]
    ));
    again["email"] = json!("someone-else@example.be");
    let second = app.post_json("/api/v1/registrations", &again).await;
    assert_eq!((second.status(), second.text().await.unwrap()), (s1, b1));
    assert_eq!(app.stats().await["registered"], 1);
    app.wait_for_emails(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mails = app.wait_for_emails(1).await;
    assert_eq!(mails.len(), 1, "no second confirmation e-mail");
    assert!(mails[0].contains("To: person7@example.be"));
}

#[tokio::test]
async fn simultaneous_sign_ups_of_one_person_make_one_entry() {
    let app = spawn_app().await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = app.client.clone();
        let url = app.url("/api/v1/registrations");
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&registration(3))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 202);
    }
    assert_eq!(app.stats().await["registered"], 1);
}

#[tokio::test]
async fn luxembourg_matricule_and_country_default() {
    let app = spawn_with(Options {
        env: vec![("STANDBY_COUNTRY", "LU".into())],
        ..Default::default()
    })
    .await;
    let mut body = registration(1);
    body["national_id"] = json!("1893 1201 057 32");
    assert_eq!(
        app.post_json("/api/v1/registrations", &body).await.status(),
        202
    );
    body["national_id"] = json!("1893120105733");
    let r = app.post_json("/api/v1/registrations", &body).await;
    assert_eq!(r.status(), 422);
    let err: serde_json::Value = r.json().await.unwrap();
    assert!(err["error"]["fields"]["national_id"].is_string());
    body["country"] = json!("BE");
    body["national_id"] = json!(be_id(5));
    assert_eq!(
        app.post_json("/api/v1/registrations", &body).await.status(),
        202
    );
    assert_eq!(app.stats().await["registered"], 2);
}

#[tokio::test]
async fn national_ids_are_never_stored_in_clear() {
    let app = spawn_app().await;
    let body = registration(11);
    let id = body["national_id"].as_str().unwrap().to_string();
    assert_eq!(
        app.post_json("/api/v1/registrations", &body).await.status(),
        202
    );
    app.wait_for_emails(1).await;
    let row = app
        .store()
        .registrant_raw_row(1)
        .await
        .unwrap()
        .expect("row 1");
    for (col, value) in &row {
        assert!(
            !value.clone().unwrap_or_default().contains(&id),
            "{col} holds the national ID"
        );
    }
    let hash = row
        .iter()
        .find(|(c, _)| c == "nid_hash")
        .unwrap()
        .1
        .clone()
        .unwrap();
    assert_eq!(hash.len(), 32);
    if app.database_url.starts_with("sqlite") {
        // Not in the database file, its WAL, or anywhere else in the folder.
        for entry in walk(app.tmp.path()) {
            let bytes = std::fs::read(&entry).unwrap();
            assert!(
                !bytes.windows(id.len()).any(|w| w == id.as_bytes()),
                "{} holds the national ID",
                entry.display()
            );
        }
    }
    for record in app.store().audit_trail(100).await.unwrap() {
        assert!(!record.detail.contains(&id) && !record.subject_id.contains(&id));
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[tokio::test]
async fn the_html_form_signs_up_without_javascript() {
    let app = spawn_app().await;
    let page = app.client.get(app.url("/?lang=en")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("lang=en")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("<form method=\"post\" action=\"/\"") && !html.contains("<script"));
    let css = app
        .client
        .get(app.url("/static/style.css"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        html.len() + css.len() < 15 * 1024,
        "page and CSS weigh {} bytes",
        html.len() + css.len()
    );

    let form = [
        ("form_lang", "en"),
        ("country", "BE"),
        ("national_id", &be_id(21)),
        ("title", "mx"),
        ("first_name", "Sam"),
        ("last_name", "Peeters"),
        ("email", "sam@example.be"),
        ("phone", ""),
        ("language", "nl"),
        ("avail_mon_from", "09:00"),
        ("avail_mon_to", "12:00"),
        ("consent", "on"),
    ];
    let r = app
        .client
        .post(app.url("/"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Check your mailbox"));
    let (_, me) = app.links_for("sam@example.be").await;
    let (_, view) = app
        .get_json(&me.replace(&app.base, "").replace("/me/", "/api/v1/me/"))
        .await;
    assert_eq!(view["language"], "nl");
    assert_eq!(
        view["availability"],
        json!([{"day": "mon", "from": "09:00", "to": "12:00"}])
    );
}

#[tokio::test]
async fn form_errors_are_all_shown_in_the_visitors_language_with_values_kept_and_escaped() {
    let app = spawn_app().await;
    let form = [
        ("national_id", "12345678901"),
        ("first_name", ""),
        ("last_name", "<script>alert(1)</script>"),
        ("email", "not-an-address"),
        ("avail_tue_from", "18:00"),
        ("avail_tue_to", "09:00"),
    ];
    let r = app
        .client
        .post(app.url("/"))
        .header("accept-language", "de-LU,de;q=0.9")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    for msg in [
        "Die Prüfziffern stimmen nicht",
        "Dieses Feld ist erforderlich",
        "Ungültige E-Mail-Adresse",
        "Der Beginn muss vor dem Ende liegen",
        "Sie müssen zustimmen",
    ] {
        assert!(html.contains(msg), "missing {msg}");
    }
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") || html.contains("&#60;script&#62;")
    );
    assert!(!html.contains("<script>alert(1)"));
    assert!(html.contains("value=\"12345678901\""));
    assert_eq!(app.stats().await["registered"], 0);
}

#[tokio::test]
async fn pages_exist_in_four_languages_without_missing_texts() {
    let app = spawn_app().await;
    for (lang, word) in [
        ("fr", "Inscription"),
        ("nl", "Inschrijving"),
        ("de", "Anmeldung"),
        ("en", "Join the reserve list"),
    ] {
        for path in ["/", "/stats"] {
            let html = app.get_text(&format!("{path}?lang={lang}")).await;
            assert!(
                html.contains(&format!("<html lang=\"{lang}\"")),
                "{path} {lang}"
            );
            assert!(
                !html.contains('⟦'),
                "{path} {lang} has a missing translation"
            );
            if path == "/" {
                assert!(html.contains(word), "{lang}");
            }
        }
    }
    // The cookie remembers the choice.
    let html = app
        .client
        .get(app.url("/"))
        .header("cookie", "lang=nl")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<html lang=\"nl\""));
}

#[tokio::test]
async fn stats_page_and_health() {
    let app = spawn_app().await;
    assert_eq!(
        app.post_json("/api/v1/registrations", &registration(2))
            .await
            .status(),
        202
    );
    let html = app.get_text("/stats?lang=en").await;
    assert!(html.contains("<dd id=\"stats.registered\">1</dd>"));
    assert_eq!(app.get_json("/healthz").await.0, 200);
    assert_eq!(app.get_json("/readyz").await.0, 200);
    let metrics = app.get_text("/metrics").await;
    assert!(metrics.contains("standby_registrants{status=\"registered\"} 1"));
}

#[tokio::test]
async fn a_full_signup_queue_answers_503_at_once() {
    // No writer can keep up with a queue of one while the database is locked.
    let app = spawn_with(Options {
        env: vec![("STANDBY_SIGNUP_QUEUE", "1".into())],
        ..Default::default()
    })
    .await;
    let mut tasks = Vec::new();
    for n in 0..200 {
        let client = app.client.clone();
        let url = app.url("/api/v1/registrations");
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&registration(100 + n))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers().get("retry-after").is_some(),
            )
        }));
    }
    let mut accepted = 0;
    let mut shed = 0;
    for t in tasks {
        match t.await.unwrap() {
            (202, _) => accepted += 1,
            (503, true) => shed += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(shed > 0, "some requests are shed with 503 and Retry-After");
    assert_eq!(
        app.stats().await["registered"],
        accepted,
        "every 202 is stored, nothing else"
    );
}
