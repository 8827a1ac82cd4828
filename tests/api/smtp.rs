//! E-mail over a real SMTP server on loopback (Python's aiosmtpd).

use crate::helpers::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Sink {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn aiosmtpd_available() -> bool {
    Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn start_sink(port: u16) -> Sink {
    start_sink_stalling(port, 0.0).await
}

pub async fn start_sink_stalling(port: u16, stall_seconds: f64) -> Sink {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py");
    let child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(dir.path())
        .arg(stall_seconds.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let sink = Sink { child, dir };
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return sink;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sink);
    panic!("SMTP sink did not start");
}

#[tokio::test]
async fn confirmation_mail_goes_over_smtp() {
    if !require(aiosmtpd_available(), "python3 with aiosmtpd") {
        return;
    }
    let port = free_port();
    let sink = start_sink(port).await;
    let app = spawn_with(Options {
        env: vec![("STANDBY_EMAIL", format!("smtp://127.0.0.1:{port}"))],
        ..Default::default()
    })
    .await;
    assert_eq!(
        app.post_json("/api/v1/registrations", &registration(1))
            .await
            .status(),
        202
    );
    let mails = wait_for_files(sink.dir.path(), "eml", 1).await;
    assert!(mails[0].contains("To: person1@example.be"));
    let confirm = find_link(&mails[0], "/confirm/");
    assert_eq!(
        app.client.post(&confirm).send().await.unwrap().status(),
        200
    );
    assert_eq!(app.stats().await["confirmed"], 1);
    for _ in 0..300 {
        if app.store().outbox_counts().await.unwrap()
            == vec![("email".to_string(), "sent".to_string(), 1)]
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the message was not recorded as sent");
}

#[tokio::test]
async fn mail_waits_while_smtp_is_down_and_leaves_once_it_is_back() {
    if !require(aiosmtpd_available(), "python3 with aiosmtpd") {
        return;
    }
    let port = free_port();
    let app = spawn_with(Options {
        env: vec![("STANDBY_EMAIL", format!("smtp://127.0.0.1:{port}"))],
        ..Default::default()
    })
    .await;
    assert_eq!(
        app.post_json("/api/v1/registrations", &registration(2))
            .await
            .status(),
        202
    );
    // Nobody listens: the message is retried later, not lost.
    let mut queued = false;
    for _ in 0..300 {
        let counts = app.store().outbox_counts().await.unwrap();
        if counts == vec![("email".to_string(), "queued".to_string(), 1)] {
            queued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        queued,
        "the failed attempt leaves the message queued for a retry"
    );
    let sink = start_sink(port).await;
    app.clock.advance_ms(3_600_000);
    let mails = wait_for_files(sink.dir.path(), "eml", 1).await;
    assert!(mails[0].contains("To: person2@example.be"));
    assert!(mails[0].contains("Message-ID: <confirm-"));
}
