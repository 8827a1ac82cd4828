//! Confirmation and self-service (`/confirm/{token}`, `/me/{token}`).

use crate::app::AppState;
use crate::error::AppError;
use crate::security::{plausible_token, random_token, token_hash};
use serde::Serialize;
use standby_domain::availability::fmt_hhmm;
use standby_domain::registration::{
    RawSlot, parse_availability, parse_centers, parse_language, parse_phone,
};
use standby_domain::{FieldError, FieldErrors, Language, Weekday};
use standby_store::{ConfirmOutcome, RegistrantChange, RegistrantRecord, TokenPurpose};

pub enum Confirmation {
    /// Newly confirmed; a fresh self-service link to show.
    Confirmed {
        me_token: String,
    },
    AlreadyConfirmed,
    Expired,
    Unknown,
}

pub async fn confirm(state: &AppState, token: &str) -> Result<Confirmation, AppError> {
    if !plausible_token(token) {
        return Ok(Confirmation::Unknown);
    }
    let me = random_token();
    let outcome = state
        .store
        .confirm_registrant(&token_hash(token), &token_hash(&me), state.clock.now_ms())
        .await?;
    Ok(match outcome {
        ConfirmOutcome::Confirmed(_) => {
            crate::metrics::add("standby_confirmations_total", &[], 1.0);
            Confirmation::Confirmed { me_token: me }
        }
        ConfirmOutcome::AlreadyConfirmed(_) => Confirmation::AlreadyConfirmed,
        ConfirmOutcome::Expired => Confirmation::Expired,
        ConfirmOutcome::Unknown => Confirmation::Unknown,
    })
}

/// Is this confirmation link one we know (without confirming anything)?
pub async fn confirm_link_known(state: &AppState, token: &str) -> Result<bool, AppError> {
    if !plausible_token(token) {
        return Ok(false);
    }
    Ok(state
        .store
        .registrant_by_token(
            TokenPurpose::Confirm,
            &token_hash(token),
            state.clock.now_ms(),
        )
        .await?
        .is_some())
}

pub async fn by_me_token(state: &AppState, token: &str) -> Result<RegistrantRecord, AppError> {
    if !plausible_token(token) {
        return Err(AppError::NotFound);
    }
    state
        .store
        .registrant_by_token(TokenPurpose::Me, &token_hash(token), state.clock.now_ms())
        .await?
        .ok_or(AppError::NotFound)
}

#[derive(Debug, Serialize)]
pub struct SlotView {
    pub day: &'static str,
    pub from: String,
    pub to: String,
}

/// What `GET /api/v1/me/{token}` shows.
#[derive(Debug, Serialize)]
pub struct MeView {
    pub status: String,
    pub language: String,
    pub centers: Vec<String>,
    pub availability: Vec<SlotView>,
    pub phone: Option<String>,
}

impl From<&RegistrantRecord> for MeView {
    fn from(r: &RegistrantRecord) -> Self {
        MeView {
            status: r.status.clone(),
            language: r.language.clone(),
            centers: r.centers.iter().map(i64::to_string).collect(),
            availability: r
                .availability
                .iter()
                .filter_map(|(d, f, t)| {
                    let day = Weekday::from_index(i16::try_from(*d).ok()?)?;
                    Some(SlotView {
                        day: day.as_str(),
                        from: fmt_hhmm(*f as i16),
                        to: fmt_hhmm(*t as i16),
                    })
                })
                .collect(),
            phone: r.phone.clone(),
        }
    }
}

/// A self-service change as received. `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct MeChangeInput {
    pub language: Option<String>,
    pub centers: Option<Vec<String>>,
    pub availability: Option<Vec<RawSlot>>,
    /// `Some(None)` or `Some(Some(""))` removes the phone.
    pub phone: Option<Option<String>>,
    /// `paused` or `waiting`.
    pub status: Option<String>,
    pub type_errors: FieldErrors,
}

pub async fn update(
    state: &AppState,
    r: &RegistrantRecord,
    input: MeChangeInput,
    lang: Language,
) -> Result<RegistrantRecord, AppError> {
    let mut errors = input.type_errors.clone();
    let mut change = RegistrantChange::default();
    if let Some(l) = &input.language {
        match parse_language(&Some(l.clone())) {
            Ok(l) => change.language = Some(l.as_str().into()),
            Err(e) => {
                errors.insert("language", e);
            }
        }
    }
    if let Some(c) = &input.centers {
        match parse_centers(c) {
            Ok(ids) => {
                let known = state.centers().await?;
                if ids.iter().any(|id| !known.iter().any(|k| k.id == *id)) {
                    errors.insert("centers", FieldError::UnknownCenter);
                } else {
                    change.centers = Some(ids);
                }
            }
            Err(e) => {
                errors.insert("centers", e);
            }
        }
    }
    if let Some(a) = &input.availability {
        match parse_availability(a) {
            Ok(av) => {
                change.availability = Some(
                    av.slots()
                        .iter()
                        .map(|s| {
                            (
                                i64::from(s.day.index()),
                                i64::from(s.from_min),
                                i64::from(s.to_min),
                            )
                        })
                        .collect(),
                )
            }
            Err(e) => {
                errors.insert("availability", e);
            }
        }
    }
    if let Some(p) = &input.phone {
        match parse_phone(p) {
            Ok(p) => change.phone = Some(p.map(|p| p.as_str().to_string())),
            Err(e) => {
                errors.insert("phone", e);
            }
        }
    }
    if let Some(s) = &input.status {
        match s.as_str() {
            "paused" => change.paused = Some(true),
            "waiting" => change.paused = Some(false),
            _ => {
                errors.insert("status", FieldError::InvalidChoice);
            }
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Validation(crate::services::signup::localized(
            &errors, lang,
        )));
    }
    match state
        .store
        .update_registrant(r.id, &change, state.clock.now_ms())
        .await
    {
        Ok(r) => {
            // A pause may have withdrawn an open invitation.
            state.engine_wake.notify_waiters();
            Ok(r)
        }
        Err(standby_store::StoreError::Conflict(code)) => Err(AppError::Conflict {
            code,
            message: match code {
                "withdrawn" => "this registration was withdrawn".into(),
                "cannot_pause" => "only a person waiting on the list can pause".into(),
                "cannot_resume" => "only a paused registration can come back to the list".into(),
                other => other.replace('_', " "),
            },
        }),
        Err(e) => Err(e.into()),
    }
}

pub async fn withdraw(state: &AppState, r: &RegistrantRecord) -> Result<(), AppError> {
    state
        .store
        .withdraw_registrant(r.id, state.clock.now_ms())
        .await?;
    // An invitation withdrawn or a dose given back: the offer invites again.
    state.engine_wake.notify_waiters();
    Ok(())
}
