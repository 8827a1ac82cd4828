//! Sign-up: validate, deduplicate by keyed hash, store with group commit.
//!
//! Requests do not write to the database themselves: they hand their
//! registration to a writer task that commits whole batches in one
//! transaction, and answer once that commit is done. When the queue in front
//! of the writers is full, a sign-up is refused at once with 503 rather than
//! left to wait without bound.

use crate::app::AppState;
use crate::error::AppError;
use crate::i18n::field_message;
use crate::security::{national_id_hash, random_token, token_hash};
use crate::services::messages::ConfirmationMail;
use standby_domain::{Clock, FieldError, Language, NewRegistration, RegistrationInput};
use standby_store::{InsertOutcome, NewRegistrant, Store};
use std::sync::Arc;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

/// A confirmation link stays valid for 30 days.
pub const CONFIRM_TOKEN_LIFETIME_MS: i64 = 30 * 24 * 3600 * 1000;
/// Most registrations committed in one transaction.
pub const MAX_BATCH: usize = 2048;

type Job = (
    NewRegistrant,
    oneshot::Sender<Result<InsertOutcome, String>>,
);

#[derive(Clone)]
pub struct SignupWriter {
    tx: mpsc::Sender<Job>,
}

impl SignupWriter {
    pub fn start(
        background: &tokio::runtime::Handle,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        wake: Arc<Notify>,
        capacity: usize,
        writers: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers.max(1) {
            background.spawn(write_loop(
                rx.clone(),
                store.clone(),
                clock.clone(),
                wake.clone(),
            ));
        }
        SignupWriter { tx }
    }

    /// Stores one registration; returns once it is committed.
    pub async fn submit(&self, reg: NewRegistrant) -> Result<InsertOutcome, AppError> {
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send((reg, reply)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                crate::metrics::add(
                    "standby_shed_requests_total",
                    &[("reason", "signup_queue_full")],
                    1.0,
                );
                return Err(AppError::Overloaded { retry_after: 2 });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(anyhow::anyhow!("sign-up writer stopped").into());
            }
        }
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(anyhow::anyhow!("storing a sign-up batch failed: {e}").into()),
            Err(_) => Err(anyhow::anyhow!("sign-up writer dropped the request").into()),
        }
    }
}

async fn write_loop(
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
) {
    loop {
        let mut batch: Vec<Job> = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(job) => batch.push(job),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        let (regs, replies): (Vec<NewRegistrant>, Vec<_>) = batch.into_iter().unzip();
        let size = regs.len();
        let started = std::time::Instant::now();
        let result = store.insert_registrations(regs, clock.now_ms()).await;
        crate::metrics::add(
            "standby_signup_batch_seconds_sum",
            &[],
            started.elapsed().as_secs_f64(),
        );
        crate::metrics::add("standby_signup_batch_size_sum", &[], size as f64);
        tracing::debug!(
            size,
            duration_ms = started.elapsed().as_millis() as u64,
            "sign-up batch committed"
        );
        match result {
            Ok(outcomes) => {
                let created = outcomes
                    .iter()
                    .filter(|o| matches!(o, InsertOutcome::Created(_)))
                    .count();
                crate::metrics::add(
                    "standby_registrations_total",
                    &[("outcome", "created")],
                    created as f64,
                );
                crate::metrics::add(
                    "standby_registrations_total",
                    &[("outcome", "duplicate")],
                    (outcomes.len() - created) as f64,
                );
                crate::metrics::add("standby_signup_batches_total", &[], 1.0);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                if created > 0 {
                    wake.notify_waiters();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, size, "sign-up batch failed; nobody in it was told it was received");
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Field errors as (field, sentence in `lang`).
pub fn localized(errors: &standby_domain::FieldErrors, lang: Language) -> Vec<(String, String)> {
    errors
        .iter()
        .map(|(f, e)| (f.to_string(), field_message(lang, *e)))
        .collect()
}

/// Validates and stores a sign-up. The answer is the same whether the person
/// was new or already registered.
pub async fn sign_up(
    state: &AppState,
    mut input: RegistrationInput,
    lang: Language,
) -> Result<(), AppError> {
    // Unknown centres are reported together with every other field error.
    if let Ok(ids) = standby_domain::registration::parse_centers(&input.centers)
        && !ids.is_empty()
    {
        let known = state.centers().await?;
        if ids.iter().any(|id| !known.iter().any(|c| c.id == *id)) {
            input
                .type_errors
                .entry("centers")
                .or_insert(FieldError::UnknownCenter);
        }
    }
    let reg = match input.validate(state.config.country, state.today()) {
        Ok(r) => r,
        Err(errors) => return Err(AppError::Validation(localized(&errors, lang))),
    };
    let prepared = prepare(state, &reg);
    state.signups.submit(prepared).await?;
    Ok(())
}

fn prepare(state: &AppState, reg: &NewRegistration) -> NewRegistrant {
    let now = state.clock.now_ms();
    let confirm = random_token();
    let me = random_token();
    let message = ConfirmationMail {
        lang: reg.language,
        first_name: reg.first_name.as_str(),
        email: reg.email.as_str(),
        confirm_link: state.link(&format!("/confirm/{confirm}")),
        me_link: state.link(&format!("/me/{me}")),
    }
    .to_message();
    NewRegistrant {
        nid_hash: national_id_hash(&state.config.secret, &reg.national_id.canonical()),
        country: reg.national_id.country().as_str().into(),
        birth_ymd: reg.national_id.birth().latest_ymd(),
        title: reg.title.map(|t| t.as_str().to_string()),
        first_name: reg.first_name.as_str().into(),
        last_name: reg.last_name.as_str().into(),
        email: reg.email.as_str().into(),
        phone: reg.phone.as_ref().map(|p| p.as_str().to_string()),
        language: reg.language.as_str().into(),
        centers: reg.centers.clone(),
        availability: reg
            .availability
            .slots()
            .iter()
            .map(|s| {
                (
                    i64::from(s.day.index()),
                    i64::from(s.from_min),
                    i64::from(s.to_min),
                )
            })
            .collect(),
        confirm_hash: token_hash(&confirm),
        confirm_expires_at: now + CONFIRM_TOKEN_LIFETIME_MS,
        me_hash: token_hash(&me),
        me_expires_at: now + standby_store::ME_TOKEN_LIFETIME_MS,
        message: Some(message),
        confirmed_at: None,
    }
}
