//! Macros shared by the store's implementation files: the backend dispatch,
//! the audit record and the outbox insert, written once for both engines.

/// Runs the same code, and so the same SQL, on whichever pool is configured.
macro_rules! on_db {
    ($self:expr, |$pool:ident| $body:expr) => {
        match &$self.db {
            Db::Sqlite($pool) => $body,
            Db::Pg($pool) => $body,
        }
    };
}

pub(crate) const AUDIT: &str = "INSERT INTO audit_log (at, actor, action, subject_type, subject_id, detail) VALUES ($1, $2, $3, $4, $5, $6)";

/// Marks a claimed message handed over and drops what is no longer needed.
pub(crate) const MESSAGE_SENT: &str = "UPDATE outbox SET status = 'sent', sent_at = $3, body = NULL, recipient = NULL, claimed_by = NULL, claimed_until = NULL \
     WHERE id = $1 AND claimed_by = $2 AND status = 'sending' RETURNING invitation_id";
/// Starts an invitation's response window when its first message has left.
pub(crate) const START_INVITATION: &str = "UPDATE invitations SET status = 'sent', sent_at = $2, expires_at = $2 + (SELECT response_ms FROM offers WHERE offers.id = invitations.offer_id) \
     WHERE id = $1 AND status = 'queued'";

macro_rules! audit {
    ($tx:expr, $now:expr, $actor:expr, $action:expr, $stype:expr, $sid:expr, $detail:expr) => {
        sqlx::query($crate::macros::AUDIT)
            .bind($now)
            .bind($actor)
            .bind($action)
            .bind($stype)
            .bind($sid.to_string())
            .bind($detail)
            .execute(&mut *$tx)
            .await?
    };
}

macro_rules! insert_message {
    ($tx:expr, $m:expr, $registrant:expr, $now:expr) => {
        insert_message!($tx, $m, $registrant, None::<i64>, $now)
    };
    ($tx:expr, $m:expr, $registrant:expr, $invitation:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO outbox (reference, channel, kind, registrant_id, recipient, subject, body, status, next_attempt_at, created_at, invitation_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $8, $9)",
        )
        .bind(&$m.reference)
        .bind(&$m.channel)
        .bind(&$m.kind)
        .bind($registrant)
        .bind(&$m.recipient)
        .bind(&$m.subject)
        .bind(&$m.body)
        .bind($now)
        .bind($invitation)
        .execute(&mut *$tx)
        .await?
    };
}
