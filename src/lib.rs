//! Standby: a vaccination sign-up and reserve list that holds launch day.
//!
//! `router(state)` builds the HTTP application and `serve(listener, state)`
//! runs it; tests call both on port 0 with a fresh database.

pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod fuzzing;
pub mod i18n;
pub mod metrics;
pub mod notify;
pub mod security;
pub mod server;
pub mod services;
pub mod web;

pub use app::{App, AppState};
pub use web::router;

use std::sync::Arc;

/// Serves until `shutdown` resolves.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve_until(
        listener,
        router(state),
        server::Timeouts::default(),
        shutdown,
    )
    .await
}

/// Serves until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    serve_until(listener, state, std::future::pending()).await
}

/// Starts the background workers: one dispatcher per message channel and
/// the invitation engine.
pub fn spawn_workers(state: &AppState) -> anyhow::Result<()> {
    let email: Arc<dyn notify::Channel> =
        Arc::new(notify::email::EmailChannel::new(&state.config)?);
    let sms: Arc<dyn notify::Channel> = Arc::new(notify::sms::SmsChannel::new(&state.config)?);
    let background = &state.background;
    background.spawn(notify::run_channel(
        state.clone(),
        email,
        state.config.email_rate,
        state.config.email_in_flight,
    ));
    background.spawn(notify::run_channel(
        state.clone(),
        sms,
        state.config.sms_rate,
        state.config.sms_in_flight,
    ));
    background.spawn(services::engine::run(state.clone()));
    Ok(())
}

/// Installs the TLS crypto provider once (ring; see STYLE.md on build speed).
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Connects to the configured database and applies migrations.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<standby_store::SqlStore>> {
    use standby_store::Store;
    let store = standby_store::connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))?;
    store
        .migrate()
        .await
        .map_err(|e| anyhow::anyhow!("migrating the database failed: {e}"))?;
    Ok(Arc::new(store))
}
