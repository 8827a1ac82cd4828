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
use standby_store::{
    BatchObserver, BatchReport, InsertOutcome, NewRegistrant, NowMs, RegistrationQueue, Store,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

/// A confirmation link stays valid for 30 days.
pub const CONFIRM_TOKEN_LIFETIME_MS: i64 = 30 * 24 * 3600 * 1000;
/// Most registrations committed in one transaction.
pub const MAX_BATCH: usize = standby_store::MAX_BATCH;

type Job = (
    NewRegistrant,
    oneshot::Sender<Result<InsertOutcome, String>>,
);

/// Where a sign-up goes to be stored.
#[derive(Clone)]
enum Route {
    /// The backend's own queue (SQLite's writer thread); `queued` counts
    /// what it holds, so admission works as with a bounded channel.
    Direct {
        queue: Arc<dyn RegistrationQueue>,
        queued: Arc<AtomicUsize>,
        capacity: usize,
    },
    /// Writer tasks here batch from a bounded channel (PostgreSQL).
    Tasks(mpsc::Sender<Job>),
}

#[derive(Clone)]
pub struct SignupWriter {
    route: Route,
}

/// Counts one queued sign-up until its answer is given.
struct Queued(Arc<AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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
        let now_clock = clock.clone();
        let observed_wake = wake.clone();
        let now: NowMs = Arc::new(move || now_clock.now_ms());
        let observer: BatchObserver = Arc::new(move |report: &BatchReport| {
            record_batch(
                report.size,
                report.created,
                report.duration,
                report.error.is_none(),
            );
            if report.created > 0 {
                observed_wake.notify_waiters();
            }
        });
        if let Some(queue) = store.registration_queue(now, observer) {
            return SignupWriter {
                route: Route::Direct {
                    queue,
                    queued: Arc::new(AtomicUsize::new(0)),
                    capacity: capacity.max(1),
                },
            };
        }
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
        SignupWriter {
            route: Route::Tasks(tx),
        }
    }

    /// Stores one registration; returns once it is committed.
    pub async fn submit(&self, reg: NewRegistrant) -> Result<InsertOutcome, AppError> {
        let (reply, answer) = oneshot::channel();
        let queued_at = std::time::Instant::now();
        match &self.route {
            Route::Direct {
                queue,
                queued,
                capacity,
            } => {
                if queued.fetch_add(1, Ordering::AcqRel) >= *capacity {
                    queued.fetch_sub(1, Ordering::AcqRel);
                    return Err(shed());
                }
                let held = Queued(queued.clone());
                queue.push(
                    reg,
                    Box::new(move |outcome| {
                        drop(held);
                        let _ = reply.send(outcome);
                    }),
                );
            }
            Route::Tasks(tx) => match tx.try_send((reg, reply)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => return Err(shed()),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(anyhow::anyhow!("sign-up writer stopped").into());
                }
            },
        }
        let answer = answer.await;
        crate::metrics::SIGNUP_STORE_LATENCY.record(queued_at.elapsed());
        match answer {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(anyhow::anyhow!("storing a sign-up batch failed: {e}").into()),
            Err(_) => Err(anyhow::anyhow!("sign-up writer dropped the request").into()),
        }
    }
}

/// The queue in front of the writer is full: answer 503 at once.
fn shed() -> AppError {
    crate::metrics::add(
        "standby_shed_requests_total",
        &[("reason", "signup_queue_full")],
        1.0,
    );
    AppError::Overloaded { retry_after: 2 }
}

/// Metrics of one committed (or failed) batch.
fn record_batch(size: usize, created: usize, duration: std::time::Duration, ok: bool) {
    crate::metrics::add(
        "standby_signup_batch_seconds_sum",
        &[],
        duration.as_secs_f64(),
    );
    crate::metrics::add("standby_signup_batch_size_sum", &[], size as f64);
    if !ok {
        return;
    }
    crate::metrics::add(
        "standby_registrations_total",
        &[("outcome", "created")],
        created as f64,
    );
    crate::metrics::add(
        "standby_registrations_total",
        &[("outcome", "duplicate")],
        (size - created) as f64,
    );
    crate::metrics::add("standby_signup_batches_total", &[], 1.0);
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
                record_batch(size, created, started.elapsed(), true);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                if created > 0 {
                    wake.notify_waiters();
                }
            }
            Err(e) => {
                record_batch(size, 0, started.elapsed(), false);
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
        confirm_link: state.link_to(&["/confirm/", &confirm]),
        me_link: state.link_to(&["/me/", &me]),
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
