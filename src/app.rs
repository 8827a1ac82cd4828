//! The application state shared by handlers and background workers.

use crate::config::Config;
use crate::security::ClientLimiter;
use crate::services::signup::SignupWriter;
use standby_domain::{Clock, Language};
use standby_store::{CenterRecord, Store};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub type AppState = Arc<App>;

/// A rendered empty sign-up form: its language, the centre list it shows.
type CachedForm = (Language, Arc<Vec<CenterRecord>>, bytes::Bytes);

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub signups: SignupWriter,
    pub limiter: ClientLimiter,
    /// Woken whenever a message is queued, so dispatchers need not poll fast.
    pub outbox_wake: Arc<Notify>,
    /// Woken when an offer changes, so the engine tops up without waiting.
    pub engine_wake: Notify,
    /// Names this process in outbox claims.
    pub worker_id: String,
    /// Where background work runs (sign-up writers, dispatchers, engine,
    /// upkeep). `standby serve` gives it a runtime of its own, so that a
    /// flood of HTTP requests cannot keep it waiting for a thread while it
    /// holds the database's write lock.
    pub background: tokio::runtime::Handle,
    /// The day (YYYYMMDD) the age bands of the queue were last brought up to date.
    pub bands_day: std::sync::atomic::AtomicI64,
    /// Which message channels work, as this process's dispatchers found.
    pub circuits: crate::notify::circuit::Circuits,
    centers: Mutex<Option<(Instant, Arc<Vec<CenterRecord>>)>>,
    /// The empty sign-up form per language, with the centre list it shows.
    signup_forms: Mutex<Vec<CachedForm>>,
}

/// How often the database's upkeep runs. On SQLite it checkpoints the log
/// and syncs what each pass copied into the database file: a quarter of a
/// second's worth of pages is a sync short enough to pass unnoticed beside
/// the log's own (a second's worth made the p99 of a 1,000-connection surge
/// 54-76 ms instead of 52-55 ms; BENCHMARKS.md, eighth session).
const UPKEEP_EVERY: Duration = Duration::from_millis(250);

impl App {
    /// Builds the state and starts the sign-up writers. Background
    /// dispatchers are started separately by [`crate::spawn_workers`].
    pub fn new(config: Config, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> AppState {
        Self::with_background(config, store, clock, tokio::runtime::Handle::current())
    }

    /// Like [`App::new`], with background work spawned on `background`.
    pub fn with_background(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        background: tokio::runtime::Handle,
    ) -> AppState {
        let outbox_wake = Arc::new(Notify::new());
        let writers = match store.backend() {
            standby_store::Backend::Sqlite => 1,
            standby_store::Backend::Postgres => 4,
        };
        let upkeep = store.clone();
        let upkeep_clock = clock.clone();
        background.spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP_EVERY).await;
                if let Err(e) = upkeep.maintenance(upkeep_clock.now_ms()).await {
                    tracing::warn!(error = %e, "database upkeep failed");
                }
            }
        });
        let signups = SignupWriter::start(
            &background,
            store.clone(),
            clock.clone(),
            outbox_wake.clone(),
            config.signup_queue,
            writers,
        );
        Arc::new(App {
            limiter: ClientLimiter::new(config.client_rate),
            worker_id: format!(
                "{}-{}",
                std::process::id(),
                crate::security::random_reference("w")
            ),
            config,
            store,
            clock,
            signups,
            outbox_wake,
            engine_wake: Notify::new(),
            background,
            bands_day: std::sync::atomic::AtomicI64::new(0),
            circuits: Default::default(),
            centers: Mutex::new(None),
            signup_forms: Mutex::new(Vec::new()),
        })
    }

    /// Centres change rarely; sign-ups check against a copy at most 5 s old.
    pub async fn centers(&self) -> Result<Arc<Vec<CenterRecord>>, standby_store::StoreError> {
        if let Some((at, list)) = self.centers.lock().expect("centres lock").as_ref()
            && at.elapsed() < Duration::from_secs(5)
        {
            return Ok(list.clone());
        }
        let list = Arc::new(self.store.list_centers().await?);
        *self.centers.lock().expect("centres lock") = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// The empty sign-up form in `lang`: the page every visitor loads first,
    /// the same for all until the centres change, so on launch day it is
    /// rendered once per language and centre list instead of per visit.
    pub fn signup_form<E>(
        &self,
        lang: Language,
        centers: &Arc<Vec<CenterRecord>>,
        render: impl FnOnce() -> Result<String, E>,
    ) -> Result<bytes::Bytes, E> {
        let cached = self
            .signup_forms
            .lock()
            .expect("form cache lock")
            .iter()
            .find(|(l, c, _)| *l == lang && Arc::ptr_eq(c, centers))
            .map(|(_, _, page)| page.clone());
        if let Some(page) = cached {
            return Ok(page);
        }
        let page = bytes::Bytes::from(render()?);
        let mut forms = self.signup_forms.lock().expect("form cache lock");
        // Other languages' pages stay if they show the same centre list.
        forms.retain(|(l, c, _)| *l != lang && Arc::ptr_eq(c, centers));
        forms.push((lang, centers.clone(), page.clone()));
        Ok(page)
    }

    pub fn forget_centers(&self) {
        *self.centers.lock().expect("centres lock") = None;
    }

    pub fn today(&self) -> jiff::civil::Date {
        jiff::tz::Offset::UTC.to_datetime(self.clock.now()).date()
    }

    pub fn link(&self, path: &str) -> String {
        self.link_to(&[path])
    }

    /// A link to the path made of `parts`, built in one allocation (every
    /// sign-up makes two).
    pub fn link_to(&self, parts: &[&str]) -> String {
        let base = &self.config.public_url;
        let mut link =
            String::with_capacity(base.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        link.push_str(base);
        for part in parts {
            link.push_str(part);
        }
        link
    }
}
