//! Standby's storage: one [`Store`] trait, implemented once over SQLite and
//! PostgreSQL. The SQL is written once with `$1…$N` placeholders and run on
//! whichever pool is configured (the [`on_db!`] dispatch); dialect code lives
//! in [`dialect`] and only where the engines really differ (claiming work,
//! starting a write transaction).

mod dialect;
mod records;
mod sql;

pub use records::*;
pub use sql::{ME_TOKEN_LIFETIME_MS, SqlStore};

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
    #[error("unsupported database URL (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything Standby keeps. Each method that changes state is one
/// transaction and writes its audit record in that same transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    async fn migrate(&self) -> Result<()>;
    async fn ping(&self) -> Result<()>;

    // Registrants
    /// Inserts a batch in one transaction (group commit). Duplicates of a
    /// national ID, already stored or earlier in the batch, create nothing.
    async fn insert_registrations(
        &self,
        batch: &[NewRegistrant],
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
    async fn registrant_raw_row(&self, id: i64) -> Result<Option<Vec<(String, Option<String>)>>>;
    async fn stats(&self) -> Result<Stats>;

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
