//! The pages in headless Chromium (Debian's chromium and chromium-driver),
//! driven over the W3C WebDriver protocol, with JavaScript switched off and
//! a phone-sized window.

use crate::helpers::*;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Driver {
    child: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // End the WebDriver session first, so chromedriver closes Chromium;
        // killing chromedriver alone leaves Chromium running. Plain blocking
        // HTTP: this also runs while a failed test unwinds.
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://").to_string();
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Option<String> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
}

impl Driver {
    async fn start() -> Option<Driver> {
        standby::init_tls();
        let path = chromedriver();
        if !require(path.is_some(), "chromium-driver") {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(path.unwrap())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if http.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-component-update", "--disable-sync", "--window-size=390,844",
                         format!("--user-data-dir={}", profile.path().display())],
                "prefs": {"profile.managed_default_content_settings.javascript": 2}
            }
        }}});
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {resp}"))
            .to_string();
        Some(Driver {
            child,
            base,
            session,
            http,
            _profile: profile,
        })
    }

    async fn try_cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, String> {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let r = self
            .http
            .request(method, url)
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        match v["value"].get("error") {
            Some(_) => Err(format!("WebDriver {path}: {v}")),
            None => Ok(v["value"].clone()),
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        self.try_cmd(method, path, &body).await.unwrap()
    }

    /// Waits (up to 10 s) for the page to show `expected`, across a navigation.
    async fn wait_for(&self, expected: &str) -> String {
        let mut last = String::new();
        for _ in 0..300 {
            if let Ok(el) = self
                .try_cmd(
                    reqwest::Method::POST,
                    "/element",
                    &json!({"using": "css selector", "value": "body"}),
                )
                .await
            {
                let id = el
                    .as_object()
                    .and_then(|o| o.values().next())
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if let Ok(Value::String(text)) = self
                    .try_cmd(
                        reqwest::Method::GET,
                        &format!("/element/{id}/text"),
                        &json!({}),
                    )
                    .await
                {
                    if text.contains(expected) {
                        return text;
                    }
                    last = text;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never showed {expected:?}; it shows:\n{last}");
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v.as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            json!({}),
        )
        .await;
    }

    async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let png = self
            .cmd(reqwest::Method::GET, "/screenshot", json!({}))
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

#[tokio::test]
async fn a_newcomer_signs_up_confirms_and_sees_the_stats_in_chromium_without_javascript() {
    let Some(d) = Driver::start().await else {
        return;
    };
    let app = spawn_app().await;
    d.goto(&app.url("/?lang=en")).await;
    d.wait_for("Join the reserve list").await;
    // Submitting empty shows every error at once.
    d.click("button[type=submit]").await;
    let text = d.wait_for("Please correct the fields marked below").await;
    assert!(
        text.contains("You must agree to sign up") && text.contains("This field is required"),
        "{text}"
    );
    d.type_into("#national_id", &be_id(77)).await;
    d.type_into("#first_name", "Élise").await;
    d.type_into("#last_name", "<b>Martin</b>").await;
    d.type_into("#email", "elise@example.lu").await;
    d.type_into("input[name=avail_wed_from]", "14:00").await;
    d.type_into("input[name=avail_wed_to]", "18:00").await;
    d.click("#consent").await;
    if let Ok(dir) = std::env::var("STANDBY_SCREENSHOTS") {
        d.screenshot(&std::path::Path::new(&dir).join("signup-phone.png"))
            .await;
    }
    d.click("button[type=submit]").await;
    d.wait_for("Check your mailbox").await;

    let (confirm, me) = app.links_for("elise@example.lu").await;
    d.goto(&confirm).await;
    d.click("button[type=submit]").await;
    d.wait_for("You are on the list").await;
    d.goto(&app.url("/stats")).await;
    let stats = d.wait_for("Confirmed").await;
    assert!(stats.contains("Confirmed\n1"), "{stats}");

    d.goto(&me).await;
    d.wait_for("Status: on the list").await;
    d.click("input[value=pause] ~ button").await;
    d.wait_for("Status: paused").await;
}

#[tokio::test]
async fn staff_log_in_record_a_delivery_see_the_stock_and_check_a_person_in() {
    use crate::setup::*;
    let Some(d) = Driver::start().await else {
        return;
    };
    let app = spawn_app().await;
    let w = world(&app, 10).await;
    user(&app, "nurse@example.be", "staff", Some(w.center)).await;
    person(&app, Person::new(1), 1_000).await;
    let id = offer(&app, &w, 1, 600).await;
    crate::engine_wait(&app, &w, id).await;

    // The invited person accepts on the invitation page, without JavaScript.
    let link = invitation_links(&app).pop().unwrap();
    d.goto(&format!("{link}?lang=en")).await;
    d.wait_for("A dose is waiting for you").await;
    d.click("#accept").await;
    d.wait_for("Your appointment is confirmed").await;

    d.goto(&app.url("/login?lang=en")).await;
    d.type_into("#email", "nurse@example.be").await;
    d.type_into("#password", "correct horse battery staple")
        .await;
    d.click("button[type=submit]").await;
    let text = d.wait_for("Record a delivery").await;
    assert!(text.contains("Heysel"), "{text}");
    d.type_into("#delivery-doses", "25").await;
    d.click("#delivery-submit").await;
    let text = d.wait_for("Saved.").await;
    // 10 delivered + 25: 35 on hand, 1 reserved for the booking, 34 free.
    assert!(text.contains("PFZ 35 1 34 0"), "{text}");

    d.goto(&app.url(&format!(
        "/staff/centers/{}?date=2026-11-25&lang=en",
        w.center
    )))
    .await;
    let text = d.wait_for("First1 Last1").await;
    assert!(text.contains("booked"), "{text}");
    d.click("button.attend").await;
    let text = d.wait_for("attended").await;
    assert!(text.contains("PFZ 34 0 34 1"), "{text}");
    if let Ok(dir) = std::env::var("STANDBY_SCREENSHOTS") {
        d.screenshot(&std::path::Path::new(&dir).join("staff-centre.png"))
            .await;
    }
    // The other centre is out of bounds for this account.
    d.goto(&app.url(&format!("/staff/centers/{}?lang=en", w.center_b)))
        .await;
    d.wait_for("Something went wrong").await;
}
