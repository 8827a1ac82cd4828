//! Standby's integration tests: one binary, the real application on
//! loopback, a real database (SQLite file, or PostgreSQL with
//! STANDBY_TEST_DATABASE_URL), real SMTP, headless Chromium.

mod bad_input;
mod browser;
mod cli;
mod connections;
mod crash;
mod engine;
mod erasure;
mod fairness;
mod fuzz_corpus;
mod gateway;
mod hardening;
mod helpers;
mod production;
mod qvax;
mod selfservice;
mod setup;
mod signup;
mod smtp;
mod staff;
mod store_contract;
mod withdrawal;

/// Waits until an offer has handed over at least one invitation.
pub async fn engine_wait(app: &helpers::TestApp, w: &setup::World, offer: i64) {
    for _ in 0..600 {
        if setup::offer_state(app, w, offer).await["invitations"]["sent"]
            .as_i64()
            .unwrap_or(0)
            > 0
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no invitation handed over for offer {offer}");
}
