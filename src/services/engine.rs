//! The invitation engine: releasing doses, waves of invitations sized to the
//! doses left, acceptance first come first served, expiry driven by the
//! clock, and closing. All state is in the database, so a restart resumes
//! and several processes share the work.

use crate::app::AppState;
use crate::error::AppError;
use crate::security::{plausible_token, random_token, token_hash};
use crate::services::auth::Staff;
use crate::services::messages::{self, Place};
use crate::services::staff::{Problems, doses_field, known_center};
use jiff::Timestamp;
use serde_json::{Value, json};
use standby_domain::Language;
use standby_domain::invitation::{
    birth_bounds, invitations_to_create, wave_factor, weekly_windows, ymd,
};
use standby_domain::schedule::{QuietHours, offer_still_invites, silence_counts};
use standby_store::{
    AcceptOutcome, AppointmentRecord, CandidateQuery, Contact, DeclineOutcome, InvitationCounts,
    NewInvitation, NewOffer, OfferRecord, PauseRule, Rendered, SilenceContext,
};
use std::time::Duration;

/// Answers within this past window teach the wave factor.
pub const LEARNING_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Consecutive counted silences further apart than this start again.
pub const SILENCE_WINDOW_MS: i64 = 14 * DAY_MS;

/// A centre's quiet hours: its own, or the configured default.
pub fn quiet_hours_of(state: &AppState, own: Option<&str>) -> Option<QuietHours> {
    match own.map(QuietHours::parse) {
        Some(Ok(q)) => q,
        _ => state.config.quiet_hours,
    }
}

/// Does a silence count against its person? Only when the invitation left
/// within their availability and outside the centre's quiet hours.
pub fn silence_counts_for(state: &AppState, c: &SilenceContext) -> bool {
    let tz = jiff::tz::TimeZone::get(&c.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let Ok(sent_at) = Timestamp::from_millisecond(c.sent_at) else {
        return false;
    };
    silence_counts(
        sent_at,
        &tz,
        quiet_hours_of(state, c.quiet_hours.as_deref()),
        &c.slots,
    )
}

pub fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn parse_time(p: &mut Problems, field: &str, v: Option<&str>) -> i64 {
    match v.map(str::parse::<Timestamp>) {
        Some(Ok(t)) => t.as_millisecond(),
        Some(Err(_)) => {
            p.add(
                field,
                "not an RFC 3339 timestamp such as 2026-11-24T14:00:00+01:00",
            );
            0
        }
        None => {
            p.add(field, "required");
            0
        }
    }
}

pub fn offer_json(o: &OfferRecord, c: &InvitationCounts) -> Value {
    json!({
        "id": o.id.to_string(),
        "status": o.status,
        "center": o.center_id.to_string(),
        "vaccine": o.vaccine,
        "doses": o.doses,
        "booked": o.booked,
        "starts_at": rfc3339(o.starts_at),
        "ends_at": rfc3339(o.ends_at),
        "response_seconds": o.response_ms / 1000,
        "invitations": c,
    })
}

pub struct OfferInput<'a> {
    pub vaccine: Option<&'a str>,
    pub doses: Option<i64>,
    pub starts_at: Option<&'a str>,
    pub ends_at: Option<&'a str>,
    pub response_seconds: Option<i64>,
}

pub async fn release(
    state: &AppState,
    staff: &Staff,
    center_id: i64,
    input: OfferInput<'_>,
) -> Result<OfferRecord, AppError> {
    known_center(state, staff, center_id).await?;
    let mut p = Problems::default();
    let vaccine = input.vaccine.unwrap_or("").trim().to_string();
    if vaccine.is_empty() {
        p.add("vaccine", "required");
    } else if !state
        .store
        .list_vaccines()
        .await?
        .iter()
        .any(|v| v.code == vaccine)
    {
        p.add("vaccine", "unknown vaccine code");
    }
    let doses = doses_field(&mut p, input.doses);
    let starts_at = parse_time(&mut p, "starts_at", input.starts_at);
    let ends_at = parse_time(&mut p, "ends_at", input.ends_at);
    if starts_at != 0 && ends_at != 0 && ends_at <= starts_at {
        p.add("ends_at", "must be after starts_at");
    }
    if ends_at != 0 && ends_at <= state.clock.now_ms() {
        p.add("ends_at", "must be in the future");
    }
    let response_seconds = input.response_seconds.unwrap_or(1800);
    if !(10..=7 * 24 * 3600).contains(&response_seconds) {
        p.add("response_seconds", "must be from 10 to 604800");
    }
    p.into_result()?;
    let offer = NewOffer {
        center_id,
        vaccine,
        doses,
        starts_at,
        ends_at,
        response_ms: response_seconds * 1000,
    };
    match state
        .store
        .create_offer(&offer, &staff.actor(), state.clock.now_ms())
        .await
    {
        Ok(o) => {
            state.engine_wake.notify_waiters();
            Ok(o)
        }
        Err(standby_store::StoreError::Conflict(_)) => Err(AppError::Conflict {
            code: "insufficient_stock",
            message: "more doses than the unreserved stock of this vaccine".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

pub async fn offer_for(
    state: &AppState,
    staff: &Staff,
    id: i64,
) -> Result<(OfferRecord, InvitationCounts), AppError> {
    let (o, c) = state.store.offer(id).await?.ok_or(AppError::NotFound)?;
    staff.require_center(o.center_id)?;
    Ok((o, c))
}

pub async fn close(state: &AppState, staff: &Staff, id: i64) -> Result<OfferRecord, AppError> {
    offer_for(state, staff, id).await?;
    Ok(state
        .store
        .close_offer(id, &staff.actor(), state.clock.now_ms())
        .await?)
}

fn lang(code: &str) -> Language {
    Language::parse(code).unwrap_or_default()
}

/// One wave step for one offer: invites as many people as the wave allows.
pub async fn top_up(state: &AppState, offer_id: i64) -> anyhow::Result<i64> {
    let now = state.clock.now_ms();
    let Some(ws) = state
        .store
        .wave_state(offer_id, now - LEARNING_WINDOW_MS)
        .await?
    else {
        return Ok(0);
    };
    let o = &ws.offer;
    if o.status != "open" {
        return Ok(0);
    }
    // Nobody is invited who could not answer and still come in time.
    if !offer_still_invites(now, o.ends_at, o.response_ms, state.config.travel_margin_ms) {
        return Ok(0);
    }
    let factor = wave_factor(
        ws.recent_accepted.max(0) as u64,
        ws.recent_answered.max(0) as u64,
    );
    // Only channels that work carry a wave: with e-mail down, only people
    // with a phone are invited (the others keep their place), and
    // invitations stuck on the failing channel do not hold the wave back.
    let working = state.circuits.working();
    if working.is_empty() {
        return Ok(0);
    }
    let wanted = invitations_to_create(
        o.doses - o.booked,
        factor,
        ws.counts.sent,
        ws.pending,
        standby_store::queued_on_working(&ws.queued_by_channel, &working),
    );
    if wanted == 0 {
        return Ok(0);
    }
    let Some(center) = state.store.center(o.center_id).await? else {
        return Ok(0);
    };
    let tz = jiff::tz::TimeZone::get(&center.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let Some(vaccine) = state
        .store
        .list_vaccines()
        .await?
        .into_iter()
        .find(|v| v.code == o.vaccine)
    else {
        return Ok(0);
    };
    let today = state.clock.now().to_zoned_datetime(tz.clone()).date();
    let (birth_lo, birth_hi) = birth_bounds(today, vaccine.min_age, vaccine.max_age);
    let starts = Timestamp::from_millisecond(o.starts_at)?;
    let ends = Timestamp::from_millisecond(o.ends_at)?;
    let query = CandidateQuery {
        offer_id,
        center_id: o.center_id,
        today_ymd: ymd(today),
        birth_lo,
        birth_hi,
        windows: weekly_windows(starts, ends, &tz),
        limit: wanted,
        since: now - DAY_MS,
        per_day: state.config.invitations_per_day,
        need_phone: !working.contains(&"email"),
    };
    let candidates = state.store.candidates(&query).await?;
    if candidates.is_empty() {
        return Ok(0);
    }
    let place = Place {
        center: &center.name,
        address: &center.address,
        window: messages::window_text(o.starts_at, o.ends_at, &center.time_zone),
    };
    let minutes = (o.response_ms / 60_000).max(1);
    let invitations: Vec<NewInvitation> = candidates
        .iter()
        .map(|c| {
            let token = random_token();
            let me = random_token();
            let code = short_code();
            let msgs = messages::invitation(
                lang(&c.language),
                &c.first_name,
                &c.email,
                c.phone.as_deref(),
                &place,
                minutes,
                &state.link(&format!("/i/{token}")),
                &state.link(&format!("/me/{me}")),
                &code,
            );
            NewInvitation {
                registrant_id: c.registrant_id,
                token_hash: token_hash(&token),
                me_token_hash: token_hash(&me),
                messages: msgs,
                short_code: c.phone.is_some().then_some(code),
            }
        })
        .collect();
    let stored = state
        .store
        .insert_invitations(offer_id, factor, &working, &invitations, now)
        .await?;
    if stored > 0 {
        crate::metrics::add("standby_invitations_created_total", &[], stored as f64);
        state.outbox_wake.notify_waiters();
    }
    Ok(stored)
}

/// One pass of the engine: expire overdue invitations, then top up every open offer.
pub async fn tick(state: &AppState) -> anyhow::Result<()> {
    let now = state.clock.now_ms();
    // People age: once a day the queue's age bands are brought up to date.
    let today = ymd(state.today());
    if state.bands_day.load(std::sync::atomic::Ordering::Relaxed) != today {
        let changed = state.store.refresh_bands(today).await?;
        state
            .bands_day
            .store(today, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(changed, "age bands refreshed");
    }
    let render = |c: &Contact, _: &()| {
        let me = random_token();
        Rendered {
            messages: messages::paused(
                lang(&c.language),
                &c.first_name,
                c.email.as_deref(),
                &state.link(&format!("/me/{me}")),
            ),
            me_token_hash: token_hash(&me),
        }
    };
    // Offers whose window has passed close: their unbooked doses go back to
    // the stock (in the ledger) and unanswered invitations are withdrawn.
    for offer in state.store.ended_offers(now).await? {
        let closed = state.store.close_offer(offer, "engine", now).await?;
        crate::metrics::add("standby_offers_ended_total", &[], 1.0);
        crate::metrics::add(
            "standby_doses_returned_total",
            &[("reason", "offer_ended")],
            (closed.doses - closed.booked).max(0) as f64,
        );
    }
    let judge = |c: &SilenceContext| silence_counts_for(state, c);
    let pause = PauseRule {
        after: state.config.pause_after_silences,
        window_ms: SILENCE_WINDOW_MS,
    };
    let expired = state
        .store
        .expire_invitations(now, 500, pause, &judge, &render)
        .await?;
    if expired > 0 {
        crate::metrics::add("standby_invitations_expired_total", &[], expired as f64);
        state.outbox_wake.notify_waiters();
    }
    let mut quiet_until: std::collections::HashMap<i64, i64> = Default::default();
    for offer in state.store.open_offers().await? {
        let Some((o, _)) = state.store.offer(offer).await? else {
            continue;
        };
        // During a centre's quiet hours nobody is invited, and invitations
        // already queued wait (their clock does not run until they leave).
        let until = match quiet_until.get(&o.center_id) {
            Some(until) => *until,
            None => {
                let until = match state.store.center(o.center_id).await? {
                    Some(c) => quiet_end(state, &c, now),
                    None => now,
                };
                if until > now {
                    state
                        .store
                        .defer_invitation_messages(o.center_id, until)
                        .await?;
                }
                quiet_until.insert(o.center_id, until);
                until
            }
        };
        if until > now {
            continue;
        }
        top_up(state, offer).await?;
    }
    let purged = state
        .store
        .purge_personal_data(now - state.config.retention_ms, now)
        .await?;
    if purged > 0 {
        tracing::info!(count = purged, "personal data past retention erased");
    }
    Ok(())
}

/// Six random digits: the code an invitation SMS carries. Guessing it takes
/// the person's phone as well (the reply must come from it), and a person
/// has one open invitation at a time.
pub fn short_code() -> String {
    use rand::Rng;
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

/// The gateway forwarded a reply from `phone`: a code of the person's open
/// invitation in it accepts that invitation, as its link would. What could
/// not book is answered by SMS (full, expired, closed). `None`: no
/// invitation of that phone with that code (nothing changes, nothing is said).
pub async fn accept_by_reply(
    state: &AppState,
    phone: &str,
    body: &str,
) -> Result<Option<&'static str>, AppError> {
    let codes = body
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| w.len() == 6);
    for code in codes {
        let Some(m) = state.store.invitation_by_reply(phone, code).await? else {
            continue;
        };
        let answer = match accept_hash(state, &m.token_hash).await {
            Ok(_) => return Ok(Some("booked")),
            Err(AppError::Conflict {
                code: "offer_filled",
                ..
            }) => ("full", "sms.reply.full"),
            Err(AppError::Gone(_)) => ("expired", "sms.reply.expired"),
            Err(AppError::InvitationClosed) => ("closed", "sms.reply.closed"),
            // Already answered (a repeated reply): the first answer stands,
            // and was confirmed already.
            Err(AppError::Conflict { .. }) => return Ok(Some("answered")),
            Err(e) => return Err(e),
        };
        let reply = messages::reply_sms(lang(&m.language), answer.1, phone, m.registrant_id);
        state
            .store
            .enqueue_message(&reply, state.clock.now_ms())
            .await?;
        state.outbox_wake.notify_waiters();
        return Ok(Some(answer.0));
    }
    Ok(None)
}

/// When the centre's quiet hours that hold `now` end (`now` when it is not quiet).
pub fn quiet_end(state: &AppState, center: &standby_store::CenterRecord, now: i64) -> i64 {
    let Some(quiet) = quiet_hours_of(state, center.quiet_hours.as_deref()) else {
        return now;
    };
    let tz = jiff::tz::TimeZone::get(&center.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    match Timestamp::from_millisecond(now) {
        Ok(at) => quiet.ends_after(at, &tz).as_millisecond(),
        Err(_) => now,
    }
}

/// Runs the engine until the process ends: every second, or sooner when woken.
pub async fn run(state: AppState) {
    loop {
        if let Err(e) = tick(&state).await {
            tracing::error!(error = %format!("{e:#}"), "invitation engine pass failed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), state.engine_wake.notified()).await;
    }
}

pub fn invitation_json(i: &standby_store::InvitationRecord) -> Value {
    json!({
        "status": i.status,
        "center": { "id": i.center_id.to_string(), "name": i.center_name, "address": i.center_address },
        "starts_at": rfc3339(i.starts_at),
        "ends_at": rfc3339(i.ends_at),
        "expires_at": i.expires_at.map(rfc3339),
    })
}

pub async fn invitation(
    state: &AppState,
    token: &str,
) -> Result<standby_store::InvitationRecord, AppError> {
    if !plausible_token(token) {
        return Err(AppError::NotFound);
    }
    state
        .store
        .invitation_by_token(&token_hash(token))
        .await?
        .ok_or(AppError::NotFound)
}

pub fn appointment_json(a: &AppointmentRecord) -> Value {
    json!({
        "id": a.id.to_string(),
        "center": a.center_id.to_string(),
        "vaccine": a.vaccine,
        "starts_at": rfc3339(a.starts_at),
        "ends_at": rfc3339(a.ends_at),
        "status": a.status,
    })
}

pub async fn accept(state: &AppState, token: &str) -> Result<AppointmentRecord, AppError> {
    if !plausible_token(token) {
        return Err(AppError::NotFound);
    }
    accept_hash(state, &token_hash(token)).await
}

/// Accepts the invitation whose token hashes to `hash` (its link, or a
/// reply quoting its code).
async fn accept_hash(state: &AppState, hash: &str) -> Result<AppointmentRecord, AppError> {
    let inv = state
        .store
        .invitation_by_token(hash)
        .await?
        .ok_or(AppError::NotFound)?;
    let place_center = state
        .store
        .center(inv.center_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let render = |c: &Contact, a: &AppointmentRecord| {
        let me = random_token();
        let place = Place {
            center: &place_center.name,
            address: &place_center.address,
            window: messages::window_text(a.starts_at, a.ends_at, &place_center.time_zone),
        };
        Rendered {
            messages: messages::booking(
                lang(&c.language),
                &c.first_name,
                c.email.as_deref(),
                c.phone.as_deref(),
                &place,
                &state.link(&format!("/me/{me}")),
            ),
            me_token_hash: token_hash(&me),
        }
    };
    let outcome = state
        .store
        .accept_invitation(hash, state.clock.now_ms(), &render)
        .await?;
    state.engine_wake.notify_waiters();
    state.outbox_wake.notify_waiters();
    match outcome {
        AcceptOutcome::Booked(a) => {
            crate::metrics::add("standby_bookings_total", &[], 1.0);
            Ok(a)
        }
        AcceptOutcome::OfferFilled => Err(AppError::Conflict {
            code: "offer_filled",
            message: "all doses of this offer are taken; you keep your place on the list".into(),
        }),
        AcceptOutcome::Expired => Err(AppError::Gone(
            "the time to answer this invitation has passed".into(),
        )),
        AcceptOutcome::Closed => Err(AppError::InvitationClosed),
        AcceptOutcome::Answered(s) => Err(AppError::Conflict {
            code: "already_answered",
            message: format!("this invitation is already {s}"),
        }),
        AcceptOutcome::Unknown => Err(AppError::NotFound),
    }
}

pub async fn decline(state: &AppState, token: &str) -> Result<(), AppError> {
    invitation(state, token).await?;
    let outcome = state
        .store
        .decline_invitation(&token_hash(token), state.clock.now_ms())
        .await?;
    state.engine_wake.notify_waiters();
    match outcome {
        DeclineOutcome::Declined => Ok(()),
        DeclineOutcome::Expired => Err(AppError::Gone(
            "the time to answer this invitation has passed".into(),
        )),
        DeclineOutcome::Answered(s) => Err(AppError::Conflict {
            code: "already_answered",
            message: format!("this invitation is already {s}"),
        }),
        DeclineOutcome::Unknown => Err(AppError::NotFound),
    }
}

/// The day's appointments of a centre, `date` in the centre's time zone.
pub async fn appointments_on(
    state: &AppState,
    staff: &Staff,
    center_id: i64,
    date: Option<&str>,
) -> Result<Vec<AppointmentRecord>, AppError> {
    let center = known_center(state, staff, center_id).await?;
    let tz = jiff::tz::TimeZone::get(&center.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let day = match date {
        Some(d) => d.parse::<jiff::civil::Date>().map_err(|_| {
            AppError::Validation(vec![("date".into(), "not a date YYYY-MM-DD".into())])
        })?,
        None => state.clock.now().to_zoned_datetime(tz.clone()).date(),
    };
    let from = day
        .to_zoned_datetime(tz.clone())
        .map_err(anyhow::Error::from)?
        .timestamp()
        .as_millisecond();
    let to = day
        .tomorrow()
        .map_err(anyhow::Error::from)?
        .to_zoned_datetime(tz)
        .map_err(anyhow::Error::from)?
        .timestamp()
        .as_millisecond();
    Ok(state.store.appointments(center_id, from, to).await?)
}

/// Finds a centre's appointments by national ID (through its keyed hash) or by name.
pub async fn search_appointments(
    state: &AppState,
    staff: &Staff,
    center_id: i64,
    q: &str,
) -> Result<Vec<AppointmentRecord>, AppError> {
    known_center(state, staff, center_id).await?;
    let q = q.trim();
    if q.is_empty() || q.chars().count() > 100 {
        return Err(AppError::Validation(vec![(
            "q".into(),
            "give a national ID or a name (up to 100 characters)".into(),
        )]));
    }
    let today = state.today();
    let nid = [standby_domain::Country::Be, standby_domain::Country::Lu]
        .into_iter()
        .find_map(|c| standby_domain::NationalId::parse(c, q, today).ok())
        .map(|id| crate::security::national_id_hash(&state.config.secret, &id.canonical()));
    let name = if nid.is_none() { Some(q) } else { None };
    Ok(state
        .store
        .find_appointments(center_id, nid.as_ref(), name)
        .await?)
}

pub async fn set_appointment_status(
    state: &AppState,
    staff: &Staff,
    id: i64,
    status: Option<&str>,
) -> Result<AppointmentRecord, AppError> {
    let a = state
        .store
        .appointment(id)
        .await?
        .ok_or(AppError::NotFound)?;
    staff.require_center(a.center_id)?;
    let status = status.unwrap_or("");
    if !matches!(status, "attended" | "no_show" | "cancelled") {
        return Err(AppError::Validation(vec![(
            "status".into(),
            "must be attended, no_show or cancelled".into(),
        )]));
    }
    match state
        .store
        .set_appointment_status(id, status, &staff.actor(), state.clock.now_ms())
        .await
    {
        Ok(a) => {
            state.engine_wake.notify_waiters();
            Ok(a)
        }
        Err(standby_store::StoreError::Conflict(code)) => Err(AppError::Conflict {
            code,
            message: "this appointment is already closed".into(),
        }),
        Err(e) => Err(e.into()),
    }
}
