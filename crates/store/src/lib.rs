//! Standby's storage: one [`Store`] trait, implemented once over SQLite and
//! PostgreSQL. The SQL is written once with `$1…$N` placeholders and run on
//! whichever pool is configured (the [`on_db!`] dispatch); dialect code lives
//! in [`dialect`] and only where the engines really differ (claiming work,
//! starting a write transaction).

#[macro_use]
mod macros;
mod dialect;
mod records;
mod sql;
mod sql_engine;
mod sql_staff;
mod sqlite_log;
mod sqlite_writer;

pub use records::*;
pub use sql::{ME_TOKEN_LIFETIME_MS, SqlStore, sqlite_file};
pub use sqlite_writer::MAX_BATCH;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("not found")]
    NotFound,
    #[error("database error: {0}")]
    Writer(String),
    #[error("unsupported database URL (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything Standby keeps. Each method that changes state is one
/// transaction and writes its audit record in that same transaction.
/// Staff accounts, sessions, throttling and stock adjustments.
#[async_trait]
pub trait StaffStore: Send + Sync {
    async fn center(&self, id: i64) -> Result<Option<CenterRecord>>;
    async fn create_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        user_id: i64,
        csrf: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> Result<()>;
    async fn staff_by_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        now: i64,
    ) -> Result<Option<StaffSession>>;
    async fn delete_token(&self, hash: &str) -> Result<()>;
    /// Counts one hit in `key`'s current window; `false` once over `limit`.
    async fn throttle_hit(&self, key: &str, window_ms: i64, limit: i64, now: i64) -> Result<bool>;
    /// A failure count under `key`: how many in a row, and when the last
    /// was (ms); `None` when there is none.
    async fn failures(&self, key: &str) -> Result<Option<(i64, i64)>>;
    /// Counts a failure under `key` at `now`; a count whose last failure is
    /// older than `forget_after_ms` starts again at one. Returns the count.
    async fn add_failure(&self, key: &str, forget_after_ms: i64, now: i64) -> Result<i64>;
    /// Forgets the failures under `key` (a success).
    async fn clear_failures(&self, key: &str) -> Result<()>;
    /// Takes doses out of the unreserved stock (`wasted` or `returned`).
    async fn adjust_stock(
        &self,
        center_id: i64,
        vaccine: &str,
        kind: &str,
        doses: i64,
        actor: &str,
        now: i64,
    ) -> Result<()>;
    async fn list_users(&self) -> Result<Vec<UserSummary>>;
}

/// Offers, invitations and appointments: the invitation engine's state.
#[async_trait]
pub trait EngineStore: Send + Sync {
    /// Reserves the doses from unreserved stock; `Conflict("insufficient_stock")` otherwise.
    async fn create_offer(&self, o: &NewOffer, actor: &str, now: i64) -> Result<OfferRecord>;
    async fn offer(&self, id: i64) -> Result<Option<(OfferRecord, InvitationCounts)>>;
    async fn offers_of_center(
        &self,
        center_id: i64,
        since: i64,
    ) -> Result<Vec<(OfferRecord, InvitationCounts)>>;
    async fn open_offers(&self) -> Result<Vec<i64>>;
    async fn wave_state(&self, offer_id: i64, since: i64) -> Result<Option<WaveState>>;
    async fn candidates(&self, q: &CandidateQuery) -> Result<Vec<Candidate>>;
    /// Stores invitations while the offer, locked, still wants them (recounted
    /// under the lock with `factor`, the queue bounded on the `working`
    /// channels); returns how many were stored.
    async fn insert_invitations(
        &self,
        offer_id: i64,
        factor: f64,
        working: &[&str],
        invitations: &[NewInvitation],
        now: i64,
    ) -> Result<i64>;
    async fn invitation_by_token(&self, hash: &str) -> Result<Option<InvitationRecord>>;
    async fn accept_invitation(
        &self,
        hash: &str,
        now: i64,
        render: Renderer<'_, AppointmentRecord>,
    ) -> Result<AcceptOutcome>;
    async fn decline_invitation(&self, hash: &str, now: i64) -> Result<DeclineOutcome>;
    /// Expires handed-over invitations past their deadline; returns how many.
    /// A silence counts against its person only when `judge` says so; after
    /// `pause.after` counted ones in a row the person is paused and told
    /// (`render`).
    async fn expire_invitations(
        &self,
        now: i64,
        limit: i64,
        pause: PauseRule,
        judge: SilenceJudge<'_>,
        render: Renderer<'_, ()>,
    ) -> Result<i64>;
    /// The invitation an SMS reply from `phone` quoting `code` answers (the
    /// latest with that code; open or not, so a late reply can be told why).
    async fn invitation_by_reply(&self, phone: &str, code: &str) -> Result<Option<ReplyMatch>>;
    /// Offers still open or filled whose window has ended at `now`.
    async fn ended_offers(&self, now: i64) -> Result<Vec<i64>>;
    /// Queued invitation messages of a centre's offers wait until `until`
    /// (quiet hours); returns how many were put back.
    async fn defer_invitation_messages(&self, center_id: i64, until: i64) -> Result<u64>;
    async fn close_offer(&self, id: i64, actor: &str, now: i64) -> Result<OfferRecord>;
    /// Every invitation of an offer as (registrant, status, sent_at, expires_at).
    async fn invitations_of_offer(
        &self,
        offer_id: i64,
    ) -> Result<Vec<(i64, String, Option<i64>, Option<i64>)>>;
    async fn appointments(
        &self,
        center_id: i64,
        from: i64,
        to: i64,
    ) -> Result<Vec<AppointmentRecord>>;
    async fn find_appointments(
        &self,
        center_id: i64,
        nid_hash: Option<&NidKey>,
        name: Option<&str>,
    ) -> Result<Vec<AppointmentRecord>>;
    async fn appointment(&self, id: i64) -> Result<Option<AppointmentRecord>>;
    async fn set_appointment_status(
        &self,
        id: i64,
        status: &str,
        actor: &str,
        now: i64,
    ) -> Result<AppointmentRecord>;
}

/// The answer to one queued registration, called once its batch is
/// committed and on disk (or has failed). Runs on the backend's own thread
/// (SQLite: the log syncer, which answers a whole pass): keep it short.
pub type Reply = Box<dyn FnOnce(std::result::Result<InsertOutcome, String>) + Send>;
/// The current time in milliseconds, for dating a batch.
pub type NowMs = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;
/// Told of each batch a `RegistrationQueue` committed or failed.
pub type BatchObserver = std::sync::Arc<dyn Fn(&BatchReport) + Send + Sync>;

/// One batch of sign-ups, as a `RegistrationQueue` committed it.
#[derive(Debug, Clone)]
pub struct BatchReport {
    pub size: usize,
    pub created: usize,
    pub duration: std::time::Duration,
    /// Why the whole batch failed (its callers were told).
    pub error: Option<String>,
}

/// A backend's own sign-up queue: it gathers whatever is waiting into one
/// transaction and answers each registration after the commit.
pub trait RegistrationQueue: Send + Sync {
    fn push(&self, reg: NewRegistrant, reply: Reply);
}

#[async_trait]
pub trait Store: StaffStore + EngineStore + Send + Sync + 'static {
    fn backend(&self) -> Backend;
    async fn migrate(&self) -> Result<()>;
    async fn ping(&self) -> Result<()>;
    /// Brings every registrant's age band up to `today_ymd` (once a day).
    async fn refresh_bands(&self, today_ymd: i64) -> Result<i64>;
    /// Periodic upkeep (SQLite: a passive WAL checkpoint; day-old throttle
    /// windows dropped, judged by `now`, the injected clock's time). Called
    /// four times a second.
    async fn maintenance(&self, now: i64) -> Result<()>;
    /// SQLite on a file: extends the write-ahead log with zeros to `bytes`
    /// (at most a quarter of the free disk space) so that a surge's commits
    /// write over them instead of growing the file. Returns the bytes
    /// added; nothing to do on PostgreSQL.
    async fn lay_out_log(&self, bytes: u64) -> Result<u64>;

    // Registrants
    /// The backend's own sign-up queue, if it has one (SQLite: its writer
    /// thread takes sign-ups directly, with no task in between). `None`:
    /// the caller batches and calls `insert_registrations`.
    fn registration_queue(
        &self,
        _now: NowMs,
        _observer: BatchObserver,
    ) -> Option<std::sync::Arc<dyn RegistrationQueue>> {
        None
    }
    /// Inserts a batch in one transaction (group commit). Duplicates of a
    /// national ID, already stored or earlier in the batch, create nothing.
    async fn insert_registrations(
        &self,
        batch: Vec<NewRegistrant>,
        now: i64,
    ) -> Result<Vec<InsertOutcome>>;
    async fn confirm_registrant(
        &self,
        confirm_hash: &str,
        me_hash: &str,
        now: i64,
    ) -> Result<ConfirmOutcome>;
    async fn registrant_by_token(
        &self,
        purpose: TokenPurpose,
        hash: &str,
        now: i64,
    ) -> Result<Option<RegistrantRecord>>;
    async fn update_registrant(
        &self,
        id: i64,
        change: &RegistrantChange,
        now: i64,
    ) -> Result<RegistrantRecord>;
    async fn withdraw_registrant(&self, id: i64, now: i64) -> Result<()>;
    /// Everything kept about one registrant, for a data-protection export.
    async fn export_registrant(&self, id: i64) -> Result<serde_json::Value>;
    /// Erases the personal data of the vaccinated and withdrawn whose status
    /// is older than `before`; returns how many were purged.
    async fn purge_personal_data(&self, before: i64, now: i64) -> Result<i64>;
    async fn registrant_raw_row(&self, id: i64) -> Result<Option<Vec<(String, Option<String>)>>>;
    async fn stats(&self) -> Result<Stats>;
    /// Is a registrant with this national-ID hash on the list?
    async fn has_registrant(&self, nid_hash: &NidKey) -> Result<bool>;

    // Messages
    async fn enqueue_message(&self, msg: &NewMessage, now: i64) -> Result<()>;
    async fn claim_messages(
        &self,
        channel: &str,
        worker: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxMessage>>;
    async fn message_sent(&self, id: i64, worker: &str, now: i64) -> Result<()>;
    async fn message_retry(
        &self,
        id: i64,
        worker: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<()>;
    async fn message_failed(&self, id: i64, worker: &str, now: i64, error: &str) -> Result<()>;
    async fn next_message_due(&self, channel: &str) -> Result<Option<i64>>;
    async fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>>;
    /// Per channel, when the oldest message still waiting to leave was queued.
    async fn outbox_oldest_waiting(&self) -> Result<Vec<(String, i64)>>;
    /// Records a gateway's delivery receipt for an SMS. Receipts name SMS
    /// references only, and a message's delivery is set once: a repeat or a
    /// later contrary receipt changes nothing. A failed delivery of an
    /// invitation's only handed-over message makes the invitation
    /// undeliverable (no penalty) if it is still unanswered.
    async fn message_receipt(
        &self,
        reference: &str,
        delivered: bool,
        now: i64,
    ) -> Result<ReceiptOutcome>;
    /// Outbox rows of one kind as (reference, channel, status, attempts), for checks and tests.
    async fn messages_of_kind(&self, kind: &str) -> Result<Vec<(String, String, String, i64)>>;

    // Centres, vaccines, stock, staff
    async fn create_center(&self, c: &NewCenter, actor: &str, now: i64) -> Result<CenterRecord>;
    async fn list_centers(&self) -> Result<Vec<CenterRecord>>;
    async fn known_centers(&self, ids: &[i64]) -> Result<Vec<i64>>;
    async fn create_vaccine(&self, v: &VaccineRecord, actor: &str, now: i64) -> Result<()>;
    async fn list_vaccines(&self) -> Result<Vec<VaccineRecord>>;
    async fn record_delivery(
        &self,
        center_id: i64,
        vaccine: &str,
        doses: i64,
        actor: &str,
        now: i64,
    ) -> Result<()>;
    async fn stock(&self, center_id: i64) -> Result<Vec<StockRecord>>;
    async fn create_user(&self, u: &NewUser, actor: &str, now: i64) -> Result<i64>;
    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>>;
    async fn admin_exists(&self) -> Result<bool>;
    async fn audit_trail(&self, limit: i64) -> Result<Vec<AuditRecord>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Opens (creating a SQLite file if missing) the database named by `url`.
pub async fn connect(url: &str) -> Result<SqlStore> {
    SqlStore::connect(url).await
}
