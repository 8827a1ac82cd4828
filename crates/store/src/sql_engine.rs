//! [`EngineStore`] over either pool: offers, invitations, appointments.
//!
//! Guarantees enforced here, in the database, whatever the number of
//! processes: bookings never exceed doses (a conditional `UPDATE` of
//! `offers.booked`), one open invitation per person (a partial unique index),
//! the response window starts at hand-over (set by `message_sent`), and
//! every change writes its audit record and messages in the same transaction.

use crate::dialect::Dialect;
use crate::records::*;
use crate::sql::{Db, SqlStore};
use crate::{EngineStore, Result, StoreError};
use async_trait::async_trait;
use sqlx::Row;
use standby_domain::invitation::invitations_to_create;

const OFFER_COLUMNS: &str =
    "id, center_id, vaccine, doses, booked, starts_at, ends_at, response_ms, status, created_at";
const SELECT_OFFER: &str = "SELECT id, center_id, vaccine, doses, booked, starts_at, ends_at, response_ms, status, created_at FROM offers WHERE id = $1";

const APPOINTMENT_SELECT: &str = "SELECT a.id, a.offer_id, a.registrant_id, a.center_id, a.vaccine, a.starts_at, a.ends_at, a.status, r.first_name, r.last_name \
     FROM appointments a JOIN registrants r ON r.id = a.registrant_id";
// One appointment by id.
const SELECT_APPOINTMENT: &str = concat!(
    "SELECT a.id, a.offer_id, a.registrant_id, a.center_id, a.vaccine, a.starts_at, a.ends_at, a.status, r.first_name, r.last_name \
     FROM appointments a JOIN registrants r ON r.id = a.registrant_id",
    " WHERE a.id = $1"
);

macro_rules! offer_from_row {
    ($r:expr) => {
        OfferRecord {
            id: $r.try_get("id")?,
            center_id: $r.try_get("center_id")?,
            vaccine: $r.try_get("vaccine")?,
            doses: $r.try_get("doses")?,
            booked: $r.try_get("booked")?,
            starts_at: $r.try_get("starts_at")?,
            ends_at: $r.try_get("ends_at")?,
            response_ms: $r.try_get("response_ms")?,
            status: $r.try_get("status")?,
            created_at: $r.try_get("created_at")?,
        }
    };
}

macro_rules! appointment_from_row {
    ($r:expr) => {
        AppointmentRecord {
            id: $r.try_get(0)?,
            offer_id: $r.try_get(1)?,
            registrant_id: $r.try_get(2)?,
            center_id: $r.try_get(3)?,
            vaccine: $r.try_get(4)?,
            starts_at: $r.try_get(5)?,
            ends_at: $r.try_get(6)?,
            status: $r.try_get(7)?,
            first_name: $r.try_get(8)?,
            last_name: $r.try_get(9)?,
        }
    };
}

macro_rules! invitation_counts {
    ($conn:expr, $offer:expr) => {{
        let rows = sqlx::query(
            "SELECT status, COUNT(*) FROM invitations WHERE offer_id = $1 GROUP BY status",
        )
        .bind($offer)
        .fetch_all(&mut *$conn)
        .await?;
        let mut c = InvitationCounts::default();
        for r in rows {
            let status: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            match status.as_str() {
                "queued" => c.queued = n,
                "sent" => c.sent = n,
                "accepted" => c.accepted = n,
                "declined" => c.declined = n,
                "expired" => c.expired = n,
                "undeliverable" => c.undeliverable = n,
                "withdrawn" => c.withdrawn = n,
                _ => {}
            }
        }
        c
    }};
}

/// Per channel, queued invitations of an offer with a message still waiting on it.
const QUEUED_BY_CHANNEL: &str = "SELECT m.channel, COUNT(DISTINCT i.id) FROM invitations i JOIN outbox m ON m.invitation_id = i.id \
     WHERE i.offer_id = $1 AND i.status = 'queued' AND m.status IN ('queued', 'sending') GROUP BY m.channel";

macro_rules! queued_by_channel {
    ($conn:expr, $offer:expr) => {{
        sqlx::query(QUEUED_BY_CHANNEL)
            .bind($offer)
            .fetch_all(&mut *$conn)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?
    }};
}

/// Queued invitations of an offer none of whose messages has failed a try yet.
const PENDING: &str = "SELECT COUNT(*) FROM invitations i WHERE i.offer_id = $1 AND i.status = 'queued' \
     AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.invitation_id = i.id AND (o.last_error IS NOT NULL OR o.status = 'failed'))";

macro_rules! contact {
    ($conn:expr, $id:expr) => {{
        let r = sqlx::query(
            "SELECT id, language, first_name, email, phone FROM registrants WHERE id = $1",
        )
        .bind($id)
        .fetch_one(&mut *$conn)
        .await?;
        Contact {
            registrant_id: r.try_get(0)?,
            language: r.try_get(1)?,
            first_name: r.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
            email: r.try_get(3)?,
            phone: r.try_get(4)?,
        }
    }};
}

macro_rules! store_rendered {
    ($tx:expr, $rendered:expr, $registrant:expr, $now:expr) => {
        sqlx::query("INSERT INTO tokens (hash, purpose, subject_id, created_at, expires_at) VALUES ($1, 'me', $2, $3, $4)")
            .bind(&$rendered.me_token_hash)
            .bind($registrant)
            .bind($now)
            .bind($now + crate::sql::ME_TOKEN_LIFETIME_MS)
            .execute(&mut *$tx)
            .await?;
        for m in &$rendered.messages {
            insert_message!($tx, m, Some($registrant), $now);
        }
    };
}

/// Ends an offer (filled or closed): open invitations are withdrawn, their
/// unsent messages withdrawn unsent, and their people go back to the list
/// with no penalty.
macro_rules! end_offer {
    ($tx:expr, $offer:expr, $status:expr, $now:expr) => {
        // Lock order everywhere: offer, outbox, invitation, registrant.
        sqlx::query("UPDATE offers SET status = $2, closed_at = $3 WHERE id = $1 AND status = 'open'").bind($offer).bind($status).bind($now).execute(&mut *$tx).await?;
        sqlx::query(
            "UPDATE outbox SET status = 'withdrawn', body = NULL, recipient = NULL, last_error = NULL WHERE status IN ('queued', 'sending') AND invitation_id IN \
             (SELECT id FROM invitations WHERE offer_id = $1 AND status IN ('queued', 'sent'))",
        )
        .bind($offer)
        .execute(&mut *$tx)
        .await?;
        sqlx::query("UPDATE invitations SET status = 'withdrawn', answered_at = $2 WHERE offer_id = $1 AND status IN ('queued', 'sent')")
            .bind($offer)
            .bind($now)
            .execute(&mut *$tx)
            .await?;
        sqlx::query(
            "UPDATE registrants SET status = 'waiting', status_changed_at = $2 WHERE status = 'invited' AND id IN \
             (SELECT registrant_id FROM invitations WHERE offer_id = $1 AND status = 'withdrawn' AND answered_at = $2)",
        )
        .bind($offer)
        .bind($now)
        .execute(&mut *$tx)
        .await?;
    };
}

/// Gives the unbooked doses of an ended offer back to the free stock.
macro_rules! release_unbooked {
    ($tx:expr, $offer:expr, $actor:expr, $now:expr) => {{
        let r = sqlx::query("SELECT center_id, vaccine, doses - booked FROM offers WHERE id = $1").bind($offer).fetch_one(&mut *$tx).await?;
        let (center, vaccine, left): (i64, String, i64) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        if left > 0 {
            sqlx::query("UPDATE stock SET reserved = reserved - $3 WHERE center_id = $1 AND vaccine = $2").bind(center).bind(&vaccine).bind(left).execute(&mut *$tx).await?;
            sqlx::query("INSERT INTO stock_ledger (center_id, vaccine, kind, doses, actor, at) VALUES ($1, $2, 'released', $3, $4, $5)")
                .bind(center)
                .bind(&vaccine)
                .bind(left)
                .bind($actor)
                .bind($now)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

/// The answer to accepting a withdrawn invitation: the offer filled (the
/// person keeps their place), or the invitation closed for another reason
/// (the person withdrew or paused, staff closed the offer).
macro_rules! withdrawn_outcome {
    ($tx:expr, $offer:expr) => {{
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM offers WHERE id = $1")
            .bind($offer)
            .fetch_optional(&mut *$tx)
            .await?;
        Ok(if status.as_deref() == Some("filled") {
            AcceptOutcome::OfferFilled
        } else {
            AcceptOutcome::Closed
        })
    }};
}

#[async_trait]
impl EngineStore for SqlStore {
    async fn create_offer(&self, o: &NewOffer, actor: &str, now: i64) -> Result<OfferRecord> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query("UPDATE stock SET reserved = reserved + $3 WHERE center_id = $1 AND vaccine = $2 AND on_hand - reserved >= $3")
                .bind(o.center_id)
                .bind(&o.vaccine)
                .bind(o.doses)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::Conflict("insufficient_stock"));
            }
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO offers (center_id, vaccine, doses, booked, starts_at, ends_at, response_ms, status, created_by, created_at) \
                 VALUES ($1, $2, $3, 0, $4, $5, $6, 'open', $7, $8) RETURNING id",
            )
            .bind(o.center_id)
            .bind(&o.vaccine)
            .bind(o.doses)
            .bind(o.starts_at)
            .bind(o.ends_at)
            .bind(o.response_ms)
            .bind(actor)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO stock_ledger (center_id, vaccine, kind, doses, actor, at) VALUES ($1, $2, 'reserved', $3, $4, $5)")
                .bind(o.center_id)
                .bind(&o.vaccine)
                .bind(o.doses)
                .bind(actor)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let detail = format!("{{\"vaccine\":{:?},\"doses\":{}}}", o.vaccine, o.doses);
            audit!(tx, now, actor, "offer.created", "offer", id, detail);
            tx.commit().await?;
            Ok(OfferRecord {
                id,
                center_id: o.center_id,
                vaccine: o.vaccine.clone(),
                doses: o.doses,
                booked: 0,
                starts_at: o.starts_at,
                ends_at: o.ends_at,
                response_ms: o.response_ms,
                status: "open".into(),
                created_at: now,
            })
        })
    }

    async fn offer(&self, id: i64) -> Result<Option<(OfferRecord, InvitationCounts)>> {
        on_db!(self, |p| {
            let mut conn = p.acquire().await?;
            let Some(r) = sqlx::query(SELECT_OFFER)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
            else {
                return Ok(None);
            };
            let offer = offer_from_row!(r);
            let counts = invitation_counts!(conn, id);
            Ok(Some((offer, counts)))
        })
    }

    async fn offers_of_center(
        &self,
        center_id: i64,
        since: i64,
    ) -> Result<Vec<(OfferRecord, InvitationCounts)>> {
        on_db!(self, |p| {
            let mut conn = p.acquire().await?;
            let sql = format!(
                "SELECT {OFFER_COLUMNS} FROM offers WHERE center_id = $1 AND (status = 'open' OR created_at >= $2) ORDER BY id DESC LIMIT 50"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(center_id)
                .bind(since)
                .fetch_all(&mut *conn)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let offer = offer_from_row!(r);
                let counts = invitation_counts!(conn, offer.id);
                out.push((offer, counts));
            }
            Ok(out)
        })
    }

    async fn open_offers(&self) -> Result<Vec<i64>> {
        on_db!(self, |p| Ok(sqlx::query_scalar(
            "SELECT id FROM offers WHERE status = 'open' ORDER BY id"
        )
        .fetch_all(p)
        .await?))
    }

    async fn wave_state(&self, offer_id: i64, since: i64) -> Result<Option<WaveState>> {
        on_db!(self, |p| {
            let mut conn = p.acquire().await?;
            let Some(r) = sqlx::query(SELECT_OFFER)
                .bind(offer_id)
                .fetch_optional(&mut *conn)
                .await?
            else {
                return Ok(None);
            };
            let offer = offer_from_row!(r);
            let counts = invitation_counts!(conn, offer_id);
            let pending: i64 = sqlx::query_scalar(PENDING)
                .bind(offer_id)
                .fetch_one(&mut *conn)
                .await?;
            let recent = sqlx::query(
                "SELECT COALESCE(SUM(CASE WHEN i.status = 'accepted' THEN 1 ELSE 0 END), 0), COUNT(*) FROM invitations i JOIN offers o ON o.id = i.offer_id \
                 WHERE o.center_id = $1 AND i.status IN ('accepted', 'declined', 'expired') AND i.answered_at >= $2",
            )
            .bind(offer.center_id)
            .bind(since)
            .fetch_one(&mut *conn)
            .await?;
            let recent_accepted: i64 = recent.try_get(0)?;
            let recent_answered: i64 = recent.try_get(1)?;
            let queued_by_channel = queued_by_channel!(conn, offer_id);
            Ok(Some(WaveState {
                offer,
                counts,
                pending,
                recent_accepted,
                recent_answered,
                queued_by_channel,
            }))
        })
    }

    async fn candidates(&self, q: &CandidateQuery) -> Result<Vec<Candidate>> {
        // Walks the queue index (status, band DESC, invited_count,
        // confirmed_at, id) in order and stops at the limit; the filters are
        // cheap per row. Within an age band the least invited come first.
        // The daily cap is only looked up for someone handed over `per_day`
        // invitations or more in all: a waiting person's invitations of the
        // last 24 hours all left (an unsent one would still be open), so
        // fewer in all means fewer that day.
        const SQL: &str = "SELECT r.id, r.language, r.first_name, r.email, r.phone FROM registrants r \
            WHERE r.status = 'waiting' AND r.birth_ymd > $1 AND r.birth_ymd <= $2 \
            AND (r.any_center = 1 OR EXISTS (SELECT 1 FROM registrant_centers c WHERE c.registrant_id = r.id AND c.center_id = $3)) \
            AND (r.any_time = 1 OR EXISTS (SELECT 1 FROM registrant_availability a WHERE a.registrant_id = r.id AND ( \
                    (a.day = 0 AND a.from_min < $5 AND $4 < a.to_min) OR (a.day = 1 AND a.from_min < $7 AND $6 < a.to_min) \
                 OR (a.day = 2 AND a.from_min < $9 AND $8 < a.to_min) OR (a.day = 3 AND a.from_min < $11 AND $10 < a.to_min) \
                 OR (a.day = 4 AND a.from_min < $13 AND $12 < a.to_min) OR (a.day = 5 AND a.from_min < $15 AND $14 < a.to_min) \
                 OR (a.day = 6 AND a.from_min < $17 AND $16 < a.to_min)))) \
            AND NOT EXISTS (SELECT 1 FROM invitations i WHERE i.offer_id = $18 AND i.registrant_id = r.id) \
            AND (r.invited_count < $21 OR (SELECT COUNT(*) FROM invitations i WHERE i.registrant_id = r.id AND i.created_at > $20 \
                 AND (i.status <> 'withdrawn' OR i.sent_at IS NOT NULL)) < $21) \
            AND ($22 = 0 OR r.phone IS NOT NULL) \
            ORDER BY r.band DESC, r.invited_count, r.confirmed_at, r.id LIMIT $19";
        on_db!(self, |p| {
            let mut query = sqlx::query(SQL)
                .bind(q.birth_lo)
                .bind(q.birth_hi)
                .bind(q.center_id);
            for (from, to) in q.windows {
                query = query.bind(i64::from(from)).bind(i64::from(to));
            }
            let rows = query
                .bind(q.offer_id)
                .bind(q.limit)
                .bind(q.since)
                .bind(q.per_day)
                .bind(i64::from(q.need_phone))
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(Candidate {
                        registrant_id: r.try_get(0)?,
                        language: r.try_get(1)?,
                        first_name: r.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                        email: r.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                        phone: r.try_get(4)?,
                    })
                })
                .collect()
        })
    }

    async fn insert_invitations(
        &self,
        offer_id: i64,
        factor: f64,
        working: &[&str],
        invitations: &[NewInvitation],
        now: i64,
    ) -> Result<i64> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let Some(o) = sqlx::query(p.lock_offer_sql())
                .bind(offer_id)
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Ok(0);
            };
            let status: String = o.try_get(0)?;
            let left: i64 = o.try_get::<i64, _>(1)? - o.try_get::<i64, _>(2)?;
            if status != "open" {
                return Ok(0);
            }
            let counts = invitation_counts!(tx, offer_id);
            let pending: i64 = sqlx::query_scalar(PENDING)
                .bind(offer_id)
                .fetch_one(&mut *tx)
                .await?;
            let queued = queued_on_working(&queued_by_channel!(tx, offer_id), working);
            let allowed = invitations_to_create(left, factor, counts.sent, pending, queued);
            let mut stored = 0;
            for inv in invitations {
                if stored >= allowed {
                    break;
                }
                let took = sqlx::query("UPDATE registrants SET status = 'invited', status_changed_at = $2 WHERE id = $1 AND status = 'waiting'")
                    .bind(inv.registrant_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if took == 0 {
                    continue;
                }
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO invitations (offer_id, registrant_id, token_hash, status, created_at, short_code) VALUES ($1, $2, $3, 'queued', $4, $5) \
                     ON CONFLICT DO NOTHING RETURNING id",
                )
                .bind(offer_id)
                .bind(inv.registrant_id)
                .bind(&inv.token_hash)
                .bind(now)
                .bind(&inv.short_code)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(id) = id else {
                    sqlx::query("UPDATE registrants SET status = 'waiting' WHERE id = $1 AND status = 'invited'").bind(inv.registrant_id).execute(&mut *tx).await?;
                    continue;
                };
                sqlx::query("INSERT INTO tokens (hash, purpose, subject_id, created_at, expires_at) VALUES ($1, 'me', $2, $3, $4)")
                    .bind(&inv.me_token_hash)
                    .bind(inv.registrant_id)
                    .bind(now)
                    .bind(now + crate::sql::ME_TOKEN_LIFETIME_MS)
                    .execute(&mut *tx)
                    .await?;
                for m in &inv.messages {
                    insert_message!(tx, m, Some(inv.registrant_id), Some(id), now);
                }
                audit!(
                    tx,
                    now,
                    "engine",
                    "invitation.created",
                    "invitation",
                    id,
                    format!("{{\"offer\":{offer_id}}}")
                );
                stored += 1;
            }
            tx.commit().await?;
            Ok(stored)
        })
    }

    async fn invitation_by_token(&self, hash: &str) -> Result<Option<InvitationRecord>> {
        on_db!(self, |p| {
            let row = sqlx::query(
                "SELECT i.id, i.offer_id, i.registrant_id, i.status, o.center_id, c.name, c.address, c.time_zone, o.starts_at, o.ends_at, i.expires_at, r.language \
                 FROM invitations i JOIN offers o ON o.id = i.offer_id JOIN centers c ON c.id = o.center_id JOIN registrants r ON r.id = i.registrant_id \
                 WHERE i.token_hash = $1",
            )
            .bind(hash)
            .fetch_optional(p)
            .await?;
            row.map(|r| {
                Ok(InvitationRecord {
                    id: r.try_get(0)?,
                    offer_id: r.try_get(1)?,
                    registrant_id: r.try_get(2)?,
                    status: r.try_get(3)?,
                    center_id: r.try_get(4)?,
                    center_name: r.try_get(5)?,
                    center_address: r.try_get(6)?,
                    time_zone: r.try_get(7)?,
                    starts_at: r.try_get(8)?,
                    ends_at: r.try_get(9)?,
                    expires_at: r.try_get(10)?,
                    language: r.try_get(11)?,
                })
            })
            .transpose()
        })
    }

    async fn accept_invitation(
        &self,
        hash: &str,
        now: i64,
        render: Renderer<'_, AppointmentRecord>,
    ) -> Result<AcceptOutcome> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let Some(r) = sqlx::query("SELECT id, status, expires_at, offer_id, registrant_id FROM invitations WHERE token_hash = $1").bind(hash).fetch_optional(&mut *tx).await?
            else {
                return Ok(AcceptOutcome::Unknown);
            };
            let (id, status, expires_at, offer_id, registrant): (
                i64,
                String,
                Option<i64>,
                i64,
                i64,
            ) = (
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            );
            match status.as_str() {
                "queued" | "sent" if expires_at.is_some_and(|e| e <= now) => {
                    return Ok(AcceptOutcome::Expired);
                }
                "queued" | "sent" => {}
                "expired" => return Ok(AcceptOutcome::Expired),
                "withdrawn" => return withdrawn_outcome!(tx, offer_id),
                other => return Ok(AcceptOutcome::Answered(other.to_string())),
            }
            // Locks in one order everywhere: the offer, then its invitations.
            sqlx::query(p.lock_offer_sql())
                .bind(offer_id)
                .fetch_optional(&mut *tx)
                .await?;
            // Answered meanwhile (a concurrent accept of the same link waited
            // on the offer's lock, as this one did): say so, as before.
            let now_status: String =
                sqlx::query_scalar("SELECT status FROM invitations WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            match now_status.as_str() {
                "queued" | "sent" => {}
                "withdrawn" => return withdrawn_outcome!(tx, offer_id),
                "expired" => return Ok(AcceptOutcome::Expired),
                _ => return Ok(AcceptOutcome::Answered(now_status)),
            }
            // The person's state, read under the offer's lock (a withdrawal
            // or a pause takes it too): only someone still invited books.
            let person: Option<String> =
                sqlx::query_scalar("SELECT status FROM registrants WHERE id = $1")
                    .bind(registrant)
                    .fetch_optional(&mut *tx)
                    .await?;
            if person.as_deref() != Some("invited") {
                return Ok(AcceptOutcome::Closed);
            }
            // Its messages not yet handed over need not leave any more.
            sqlx::query("UPDATE outbox SET status = 'withdrawn', body = NULL, recipient = NULL, last_error = NULL WHERE invitation_id = $1 AND status = 'queued'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            // Claim the invitation: a concurrent answer to the same one waits
            // on this row and then finds it answered.
            let claimed: Option<i64> = sqlx::query_scalar("UPDATE invitations SET status = 'accepted', answered_at = $2 WHERE id = $1 AND status IN ('queued', 'sent') RETURNING id")
                .bind(id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if claimed.is_none() {
                let status: String =
                    sqlx::query_scalar("SELECT status FROM invitations WHERE id = $1")
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?;
                if status == "withdrawn" {
                    return withdrawn_outcome!(tx, offer_id);
                }
                return Ok(AcceptOutcome::Answered(status));
            }
            let booked = sqlx::query("UPDATE offers SET booked = booked + 1 WHERE id = $1 AND status = 'open' AND booked < doses")
                .bind(offer_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if booked == 0 {
                // The doses are gone: no penalty, the person keeps their place.
                sqlx::query(
                    "UPDATE invitations SET status = 'withdrawn', answered_at = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE registrants SET status = 'waiting', status_changed_at = $2 WHERE id = $1 AND status = 'invited'").bind(registrant).bind(now).execute(&mut *tx).await?;
                audit!(
                    tx,
                    now,
                    "registrant",
                    "invitation.offer_filled",
                    "invitation",
                    id,
                    "{}"
                );
                tx.commit().await?;
                return Ok(AcceptOutcome::OfferFilled);
            }
            let o = sqlx::query("SELECT center_id, vaccine, starts_at, ends_at, doses, booked FROM offers WHERE id = $1").bind(offer_id).fetch_one(&mut *tx).await?;
            let (center_id, vaccine, starts_at, ends_at, doses, now_booked): (
                i64,
                String,
                i64,
                i64,
                i64,
                i64,
            ) = (
                o.try_get(0)?,
                o.try_get(1)?,
                o.try_get(2)?,
                o.try_get(3)?,
                o.try_get(4)?,
                o.try_get(5)?,
            );
            let appointment_id: i64 = sqlx::query_scalar(
                "INSERT INTO appointments (offer_id, invitation_id, registrant_id, center_id, vaccine, starts_at, ends_at, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'booked', $8, $8) RETURNING id",
            )
            .bind(offer_id)
            .bind(id)
            .bind(registrant)
            .bind(center_id)
            .bind(&vaccine)
            .bind(starts_at)
            .bind(ends_at)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("UPDATE registrants SET status = 'booked', status_changed_at = $2, ignored_invitations = 0 WHERE id = $1").bind(registrant).bind(now).execute(&mut *tx).await?;
            let appointment = AppointmentRecord {
                id: appointment_id,
                offer_id,
                registrant_id: registrant,
                center_id,
                vaccine,
                starts_at,
                ends_at,
                status: "booked".into(),
                first_name: None,
                last_name: None,
            };
            let contact = contact!(tx, registrant);
            let rendered = render(&contact, &appointment);
            store_rendered!(tx, rendered, registrant, now);
            audit!(
                tx,
                now,
                "registrant",
                "invitation.accepted",
                "invitation",
                id,
                format!("{{\"appointment\":{appointment_id}}}")
            );
            if now_booked >= doses {
                end_offer!(tx, offer_id, "filled", now);
                audit!(tx, now, "engine", "offer.filled", "offer", offer_id, "{}");
            }
            tx.commit().await?;
            Ok(AcceptOutcome::Booked(appointment))
        })
    }

    async fn decline_invitation(&self, hash: &str, now: i64) -> Result<DeclineOutcome> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let Some(r) = sqlx::query("SELECT id, status, expires_at, registrant_id FROM invitations WHERE token_hash = $1").bind(hash).fetch_optional(&mut *tx).await? else {
                return Ok(DeclineOutcome::Unknown);
            };
            let (id, status, expires_at, registrant): (i64, String, Option<i64>, i64) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            match status.as_str() {
                "queued" | "sent" if expires_at.is_some_and(|e| e <= now) => {
                    return Ok(DeclineOutcome::Expired);
                }
                "queued" | "sent" => {}
                "expired" => return Ok(DeclineOutcome::Expired),
                other => return Ok(DeclineOutcome::Answered(other.to_string())),
            }
            sqlx::query("UPDATE outbox SET status = 'withdrawn', body = NULL, recipient = NULL, last_error = NULL WHERE invitation_id = $1 AND status = 'queued'").bind(id).execute(&mut *tx).await?;
            let claimed: Option<i64> = sqlx::query_scalar("UPDATE invitations SET status = 'declined', answered_at = $2 WHERE id = $1 AND status IN ('queued', 'sent') RETURNING id")
                .bind(id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if claimed.is_none() {
                let status: String =
                    sqlx::query_scalar("SELECT status FROM invitations WHERE id = $1")
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?;
                return Ok(DeclineOutcome::Answered(status));
            }
            // An answer, so the silences before it are no longer consecutive.
            sqlx::query("UPDATE registrants SET status = 'waiting', status_changed_at = $2, ignored_invitations = 0 WHERE id = $1 AND status = 'invited'").bind(registrant).bind(now).execute(&mut *tx).await?;
            audit!(
                tx,
                now,
                "registrant",
                "invitation.declined",
                "invitation",
                id,
                "{}"
            );
            tx.commit().await?;
            Ok(DeclineOutcome::Declined)
        })
    }

    async fn expire_invitations(
        &self,
        now: i64,
        limit: i64,
        pause: PauseRule,
        judge: SilenceJudge<'_>,
        render: Renderer<'_, ()>,
    ) -> Result<i64> {
        on_db!(self, |p| {
            let due: Vec<i64> = sqlx::query_scalar("SELECT id FROM invitations WHERE status = 'sent' AND expires_at <= $1 ORDER BY expires_at LIMIT $2")
                .bind(now)
                .bind(limit)
                .fetch_all(p)
                .await?;
            let mut expired = 0;
            for id in due {
                let mut tx = p.begin_write().await?;
                // Only a handed-over invitation (status 'sent', deadline set at hand-over) can expire.
                let row = sqlx::query(
                    "UPDATE invitations SET status = 'expired', answered_at = $2 WHERE id = $1 AND status = 'sent' AND expires_at <= $2 RETURNING registrant_id, sent_at",
                )
                .bind(id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else { continue };
                let (reg, sent_at): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                let c = sqlx::query(
                    "SELECT r.any_time, c.time_zone, c.quiet_hours, r.ignored_invitations, r.last_silence_at FROM invitations i \
                     JOIN offers o ON o.id = i.offer_id JOIN centers c ON c.id = o.center_id JOIN registrants r ON r.id = i.registrant_id WHERE i.id = $1",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                let (any_time, time_zone, quiet_hours, ignored, last_silence): (
                    i64,
                    String,
                    Option<String>,
                    i64,
                    Option<i64>,
                ) = (
                    c.try_get(0)?,
                    c.try_get(1)?,
                    c.try_get(2)?,
                    c.try_get(3)?,
                    c.try_get(4)?,
                );
                let slots = if any_time == 1 {
                    Vec::new()
                } else {
                    sqlx::query("SELECT day, from_min, to_min FROM registrant_availability WHERE registrant_id = $1")
                        .bind(reg)
                        .fetch_all(&mut *tx)
                        .await?
                        .iter()
                        .map(|s| {
                            let (d, f, t): (i64, i64, i64) = (s.try_get(0)?, s.try_get(1)?, s.try_get(2)?);
                            Ok((d as i16, f as i16, t as i16))
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()?
                };
                let counts = judge(&SilenceContext {
                    sent_at,
                    time_zone,
                    quiet_hours,
                    slots,
                });
                sqlx::query("UPDATE invitations SET strike = $2 WHERE id = $1")
                    .bind(id)
                    .bind(i64::from(counts))
                    .execute(&mut *tx)
                    .await?;
                let mut paused = false;
                if counts {
                    let silences = standby_domain::schedule::next_silence_count(
                        ignored,
                        last_silence,
                        now,
                        pause.window_ms,
                    );
                    sqlx::query("UPDATE registrants SET ignored_invitations = $2, last_silence_at = $3 WHERE id = $1")
                        .bind(reg)
                        .bind(silences)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    paused = silences >= pause.after;
                }
                let next = if paused { "paused" } else { "waiting" };
                let n = sqlx::query("UPDATE registrants SET status = $2, status_changed_at = $3 WHERE id = $1 AND status = 'invited'")
                    .bind(reg)
                    .bind(next)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if paused && n == 1 {
                    let contact = contact!(tx, reg);
                    let rendered = render(&contact, &());
                    store_rendered!(tx, rendered, reg, now);
                }
                audit!(
                    tx,
                    now,
                    "engine",
                    "invitation.expired",
                    "invitation",
                    id,
                    format!("{{\"counted\":{counts},\"paused\":{}}}", paused && n == 1)
                );
                tx.commit().await?;
                expired += 1;
            }
            Ok(expired)
        })
    }

    async fn invitation_by_reply(&self, phone: &str, code: &str) -> Result<Option<ReplyMatch>> {
        on_db!(self, |p| {
            let row = sqlx::query(
                "SELECT i.token_hash, i.registrant_id, r.language FROM invitations i JOIN registrants r ON r.id = i.registrant_id \
                 WHERE i.short_code = $2 AND r.phone = $1 ORDER BY i.id DESC LIMIT 1",
            )
            .bind(phone)
            .bind(code)
            .fetch_optional(p)
            .await?;
            row.map(|r| {
                Ok(ReplyMatch {
                    token_hash: r.try_get(0)?,
                    registrant_id: r.try_get(1)?,
                    language: r.try_get(2)?,
                })
            })
            .transpose()
        })
    }

    async fn ended_offers(&self, now: i64) -> Result<Vec<i64>> {
        on_db!(self, |p| Ok(sqlx::query_scalar(
            "SELECT id FROM offers WHERE status IN ('open', 'filled') AND ends_at <= $1 ORDER BY id"
        )
        .bind(now)
        .fetch_all(p)
        .await?))
    }

    async fn defer_invitation_messages(&self, center_id: i64, until: i64) -> Result<u64> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query(
                "UPDATE outbox SET next_attempt_at = $2 WHERE status = 'queued' AND kind = 'invitation' AND next_attempt_at < $2 \
                 AND invitation_id IN (SELECT i.id FROM invitations i JOIN offers o ON o.id = i.offer_id \
                 WHERE o.center_id = $1 AND o.status = 'open' AND i.status = 'queued')",
            )
            .bind(center_id)
            .bind(until)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(n)
        })
    }

    async fn close_offer(&self, id: i64, actor: &str, now: i64) -> Result<OfferRecord> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let Some(o) = sqlx::query(p.lock_offer_sql())
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Err(StoreError::NotFound);
            };
            let status: String = o.try_get(0)?;
            if status == "open" {
                end_offer!(tx, id, "closed", now);
            }
            if status != "closed" {
                sqlx::query("UPDATE offers SET status = 'closed', closed_at = COALESCE(closed_at, $2) WHERE id = $1").bind(id).bind(now).execute(&mut *tx).await?;
                release_unbooked!(tx, id, actor, now);
                audit!(tx, now, actor, "offer.closed", "offer", id, "{}");
            }
            let r = sqlx::query(SELECT_OFFER)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            let offer = offer_from_row!(r);
            tx.commit().await?;
            Ok(offer)
        })
    }

    async fn invitations_of_offer(
        &self,
        offer_id: i64,
    ) -> Result<Vec<(i64, String, Option<i64>, Option<i64>)>> {
        on_db!(self, |p| {
            let rows = sqlx::query("SELECT registrant_id, status, sent_at, expires_at FROM invitations WHERE offer_id = $1 ORDER BY id").bind(offer_id).fetch_all(p).await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect()
        })
    }

    async fn appointments(
        &self,
        center_id: i64,
        from: i64,
        to: i64,
    ) -> Result<Vec<AppointmentRecord>> {
        on_db!(self, |p| {
            let sql = format!(
                "{APPOINTMENT_SELECT} WHERE a.center_id = $1 AND a.starts_at < $3 AND a.ends_at > $2 ORDER BY a.starts_at, r.last_name, a.id"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(center_id)
                .bind(from)
                .bind(to)
                .fetch_all(p)
                .await?;
            rows.iter().map(|r| Ok(appointment_from_row!(r))).collect()
        })
    }

    async fn find_appointments(
        &self,
        center_id: i64,
        nid_hash: Option<&NidKey>,
        name: Option<&str>,
    ) -> Result<Vec<AppointmentRecord>> {
        on_db!(self, |p| {
            let sql = format!(
                "{APPOINTMENT_SELECT} WHERE a.center_id = $1 AND (r.nid_hash = $2 OR (CAST($3 AS TEXT) IS NOT NULL AND \
                 (LOWER(r.last_name) LIKE $3 OR LOWER(r.first_name) LIKE $3))) ORDER BY a.starts_at DESC LIMIT 50"
            );
            let pattern = name.map(|n| format!("%{}%", n.to_lowercase().replace(['%', '_'], "")));
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(center_id)
                .bind(nid_hash.map(|k| k.0.to_vec()))
                .bind(pattern)
                .fetch_all(p)
                .await?;
            rows.iter().map(|r| Ok(appointment_from_row!(r))).collect()
        })
    }

    async fn appointment(&self, id: i64) -> Result<Option<AppointmentRecord>> {
        on_db!(self, |p| {
            let row = sqlx::query(SELECT_APPOINTMENT)
                .bind(id)
                .fetch_optional(p)
                .await?;
            row.map(|r| Ok(appointment_from_row!(r))).transpose()
        })
    }

    async fn set_appointment_status(
        &self,
        id: i64,
        status: &str,
        actor: &str,
        now: i64,
    ) -> Result<AppointmentRecord> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let Some(offer) =
                sqlx::query_scalar::<_, i64>("SELECT offer_id FROM appointments WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
            else {
                return Err(StoreError::NotFound);
            };
            // Lock order everywhere: the offer first.
            sqlx::query(p.lock_offer_sql())
                .bind(offer)
                .fetch_optional(&mut *tx)
                .await?;
            let r = sqlx::query(
                "SELECT status, center_id, vaccine, registrant_id FROM appointments WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            let (current, center, vaccine, registrant): (String, i64, String, i64) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            if current != "booked" {
                return Err(StoreError::Conflict("appointment_already_closed"));
            }
            let person = match status {
                "attended" | "no_show" => {
                    let (stock_sql, kind, person) = if status == "attended" {
                        (
                            "UPDATE stock SET on_hand = on_hand - 1, reserved = reserved - 1, administered = administered + 1 WHERE center_id = $1 AND vaccine = $2",
                            "administered",
                            "vaccinated",
                        )
                    } else {
                        // The time has passed: the dose goes back to the free stock.
                        (
                            "UPDATE stock SET reserved = reserved - 1 WHERE center_id = $1 AND vaccine = $2",
                            "released",
                            "waiting",
                        )
                    };
                    sqlx::query(stock_sql)
                        .bind(center)
                        .bind(&vaccine)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("INSERT INTO stock_ledger (center_id, vaccine, kind, doses, actor, at) VALUES ($1, $2, $3, 1, $4, $5)")
                        .bind(center)
                        .bind(&vaccine)
                        .bind(kind)
                        .bind(actor)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "UPDATE appointments SET status = $2, updated_at = $3 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(status)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    audit!(
                        tx,
                        now,
                        actor,
                        format!("appointment.{status}"),
                        "appointment",
                        id,
                        "{}"
                    );
                    person
                }
                // The dose goes back to the offer, which invites someone else.
                "cancelled" => {
                    cancel_booking!(tx, id, actor, now);
                    "waiting"
                }
                _ => return Err(StoreError::Conflict("invalid_status")),
            };
            sqlx::query("UPDATE registrants SET status = $2, status_changed_at = $3 WHERE id = $1 AND status = 'booked'")
                .bind(registrant)
                .bind(person)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let r = sqlx::query(SELECT_APPOINTMENT)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            let a = appointment_from_row!(r);
            tx.commit().await?;
            Ok(a)
        })
    }
}
