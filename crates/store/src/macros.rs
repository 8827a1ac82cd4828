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
pub(crate) const MESSAGE_SENT: &str = "UPDATE outbox SET status = 'sent', sent_at = $3, body = NULL, recipient = NULL, last_error = NULL, claimed_by = NULL, claimed_until = NULL \
     WHERE id = $1 AND claimed_by = $2 AND status = 'sending' RETURNING invitation_id";
/// Counts a hand-over in the person's invitations (the order within an age
/// band puts the least invited first).
pub(crate) const COUNT_INVITED: &str = "UPDATE registrants SET invited_count = invited_count + 1 WHERE id = (SELECT registrant_id FROM invitations WHERE id = $1)";
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
            "INSERT INTO outbox (reference, channel, kind, registrant_id, recipient, subject, body, status, next_attempt_at, created_at, invitation_id, priority) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $8, $9, $10)",
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
        .bind($crate::records::priority_of(&$m.kind))
        .execute(&mut *$tx)
        .await?
    };
}

/// Cancels a booked appointment (staff, or the person withdrawing) and gives
/// its dose back: to its offer, which invites again (a filled offer opens
/// again while what is left of its window is longer than its response
/// window), or, once the offer is closed or over, to the free stock. The
/// caller has locked the offer. Evaluates to the offer's id, or `None` when
/// the appointment was not booked (nothing changed).
macro_rules! cancel_booking {
    ($tx:expr, $appointment:expr, $actor:expr, $now:expr) => {{
        let row = sqlx::query(
            "SELECT a.offer_id, a.center_id, a.vaccine, o.status, o.ends_at, o.response_ms \
             FROM appointments a JOIN offers o ON o.id = a.offer_id WHERE a.id = $1 AND a.status = 'booked'",
        )
        .bind($appointment)
        .fetch_optional(&mut *$tx)
        .await?;
        match row {
            None => None,
            Some(r) => {
                let (offer, center, vaccine, offer_status, ends_at, response_ms): (i64, i64, String, String, i64, i64) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?);
                sqlx::query("UPDATE appointments SET status = 'cancelled', updated_at = $2 WHERE id = $1")
                    .bind($appointment)
                    .bind($now)
                    .execute(&mut *$tx)
                    .await?;
                sqlx::query("UPDATE offers SET booked = booked - 1 WHERE id = $1")
                    .bind(offer)
                    .execute(&mut *$tx)
                    .await?;
                // An open offer keeps the dose and invites again; a closed
                // one gave its unbooked doses back already, so this one goes
                // back to the stock now.
                let mut to_stock = offer_status == "closed";
                if offer_status == "filled" {
                    if ends_at - response_ms > $now {
                        sqlx::query("UPDATE offers SET status = 'open', closed_at = NULL WHERE id = $1")
                            .bind(offer)
                            .execute(&mut *$tx)
                            .await?;
                        audit!($tx, $now, $actor, "offer.reopened", "offer", offer, "{}");
                    } else {
                        sqlx::query("UPDATE offers SET status = 'closed' WHERE id = $1")
                            .bind(offer)
                            .execute(&mut *$tx)
                            .await?;
                        to_stock = true;
                    }
                }
                if to_stock {
                    sqlx::query("UPDATE stock SET reserved = reserved - 1 WHERE center_id = $1 AND vaccine = $2")
                        .bind(center)
                        .bind(&vaccine)
                        .execute(&mut *$tx)
                        .await?;
                    sqlx::query("INSERT INTO stock_ledger (center_id, vaccine, kind, doses, actor, at) VALUES ($1, $2, 'released', 1, $3, $4)")
                        .bind(center)
                        .bind(&vaccine)
                        .bind($actor)
                        .bind($now)
                        .execute(&mut *$tx)
                        .await?;
                }
                audit!($tx, $now, $actor, "appointment.cancelled", "appointment", $appointment, format!("{{\"offer\":{offer},\"dose_to\":\"{}\"}}", if to_stock { "stock" } else { "offer" }));
                Some(offer)
            }
        }
    }};
}

/// Locks, in id order, the offers of a registrant's open invitations and
/// booked appointments (lock order everywhere: offer first).
macro_rules! lock_offers_of_registrant {
    ($p:expr, $tx:expr, $registrant:expr) => {{
        let offers: Vec<i64> = sqlx::query_scalar(
            "SELECT offer_id FROM invitations WHERE registrant_id = $1 AND status IN ('queued', 'sent') \
             UNION SELECT offer_id FROM appointments WHERE registrant_id = $1 AND status = 'booked' ORDER BY 1",
        )
        .bind($registrant)
        .fetch_all(&mut *$tx)
        .await?;
        for offer in &offers {
            sqlx::query($p.lock_offer_sql())
                .bind(*offer)
                .fetch_optional(&mut *$tx)
                .await?;
        }
        offers
    }};
}

/// Withdraws a registrant's open invitations with no penalty, and their
/// messages not yet handed over. The caller has locked the offers.
macro_rules! withdraw_open_invitations {
    ($tx:expr, $registrant:expr, $now:expr) => {{
        sqlx::query(
            "UPDATE outbox SET status = 'withdrawn', body = NULL, recipient = NULL, last_error = NULL WHERE status IN ('queued', 'sending') AND invitation_id IN \
             (SELECT id FROM invitations WHERE registrant_id = $1 AND status IN ('queued', 'sent'))",
        )
        .bind($registrant)
        .execute(&mut *$tx)
        .await?;
        sqlx::query("UPDATE invitations SET status = 'withdrawn', answered_at = $2 WHERE registrant_id = $1 AND status IN ('queued', 'sent')")
            .bind($registrant)
            .bind($now)
            .execute(&mut *$tx)
            .await?
            .rows_affected()
    }};
}
