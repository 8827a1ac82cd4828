//! Staff and invitation handlers under `/api/v1`.

use super::extract::{JsonBody, client_ip, peer_addr};
use crate::app::AppState;
use crate::error::AppError;
use crate::services::auth::{self, Staff};
use crate::services::engine::{self, OfferInput, appointment_json, offer_json};
use crate::services::staff;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use standby_store::{Store, TokenPurpose};

/// Reads typed fields from a JSON object; a wrong type is a field error.
pub struct Obj<'a> {
    v: &'a serde_json::Map<String, Value>,
    errors: Vec<(String, String)>,
}

impl<'a> Obj<'a> {
    pub fn new(v: &'a Value) -> Result<Self, AppError> {
        v.as_object()
            .map(|v| Obj {
                v,
                errors: Vec::new(),
            })
            .ok_or_else(|| AppError::BadRequest("the body must be a JSON object".into()))
    }

    pub fn str(&mut self, k: &str) -> Option<&'a str> {
        match self.v.get(k) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                self.errors.push((k.into(), "must be a string".into()));
                None
            }
        }
    }

    pub fn int(&mut self, k: &str) -> Option<i64> {
        match self.v.get(k) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
            Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() && k == "center" => {
                s.trim().parse().ok()
            }
            Some(_) => {
                self.errors
                    .push((k.into(), "must be a whole number".into()));
                None
            }
        }
    }

    pub fn done(self) -> Result<(), AppError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(self.errors))
        }
    }
}

fn id(raw: &str) -> Result<i64, AppError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or(AppError::NotFound)
}

pub async fn login(State(state): State<AppState>, req: Request) -> Result<Json<Value>, AppError> {
    let (parts, body) = req.into_parts();
    let ip = client_ip(
        &parts.headers,
        peer_addr(&parts),
        &state.config.trusted_proxies,
    )
    .map(|i| i.to_string())
    .unwrap_or_default();
    let JsonBody(body) = <JsonBody as axum::extract::FromRequest<AppState>>::from_request(
        Request::from_parts(parts, body),
        &state,
    )
    .await?;
    let mut o = Obj::new(&body)?;
    let email = o.str("email").unwrap_or("").to_string();
    let password = o.str("password").unwrap_or("").to_string();
    o.done()?;
    let signed = auth::log_in(&state, &email, &password, &ip, TokenPurpose::Api).await?;
    Ok(Json(
        json!({ "token": signed.token, "expires_at": engine::rfc3339(signed.expires_at) }),
    ))
}

pub async fn logout(State(state): State<AppState>, staff: Staff) -> Result<StatusCode, AppError> {
    auth::log_out(&state, &staff).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_center(
    State(state): State<AppState>,
    staff: Staff,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let mut o = Obj::new(&body)?;
    let (n, a, p, t, q) = (
        o.str("name"),
        o.str("address"),
        o.str("postal_code"),
        o.str("time_zone"),
        o.str("quiet_hours"),
    );
    o.done()?;
    let c = staff::create_center(&state, &staff, n, a, p, t, q).await?;
    let quiet = c
        .quiet_hours
        .clone()
        .unwrap_or_else(|| state.config.quiet_hours_text());
    Ok((StatusCode::CREATED, Json(json!({ "id": c.id.to_string(), "name": c.name, "address": c.address, "postal_code": c.postal_code, "time_zone": c.time_zone, "quiet_hours": quiet })))
        .into_response())
}

pub async fn create_vaccine(
    State(state): State<AppState>,
    staff: Staff,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let mut o = Obj::new(&body)?;
    let (c, n, min, max) = (
        o.str("code"),
        o.str("name"),
        o.int("min_age"),
        o.int("max_age"),
    );
    o.done()?;
    let v = staff::create_vaccine(&state, &staff, c, n, min, max).await?;
    Ok((StatusCode::CREATED, Json(json!(v))).into_response())
}

pub async fn delivery(
    State(state): State<AppState>,
    staff: Staff,
    Path(center): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let center = id(&center)?;
    let mut o = Obj::new(&body)?;
    let (v, d) = (o.str("vaccine"), o.int("doses"));
    o.done()?;
    staff::record_delivery(&state, &staff, center, v, d).await?;
    stock_response(&state, center, StatusCode::CREATED).await
}

pub async fn adjustment(
    State(state): State<AppState>,
    staff: Staff,
    Path(center): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let center = id(&center)?;
    let mut o = Obj::new(&body)?;
    let (v, k, d) = (o.str("vaccine"), o.str("kind"), o.int("doses"));
    o.done()?;
    staff::adjust_stock(&state, &staff, center, v, k, d).await?;
    stock_response(&state, center, StatusCode::CREATED).await
}

async fn stock_response(
    state: &AppState,
    center: i64,
    status: StatusCode,
) -> Result<Response, AppError> {
    let stock = state.store.stock(center).await?;
    Ok((status, Json(json!(stock))).into_response())
}

pub async fn stock(
    State(state): State<AppState>,
    staff: Staff,
    Path(center): Path<String>,
) -> Result<Response, AppError> {
    let center = id(&center)?;
    staff::known_center(&state, &staff, center).await?;
    stock_response(&state, center, StatusCode::OK).await
}

pub async fn create_offer(
    State(state): State<AppState>,
    staff: Staff,
    Path(center): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let center = id(&center)?;
    let mut o = Obj::new(&body)?;
    let input = OfferInput {
        vaccine: o.str("vaccine"),
        doses: o.int("doses"),
        starts_at: o.str("starts_at"),
        ends_at: o.str("ends_at"),
        response_seconds: o.int("response_seconds"),
    };
    o.done()?;
    let offer = engine::release(&state, &staff, center, input).await?;
    Ok((
        StatusCode::CREATED,
        Json(offer_json(&offer, &Default::default())),
    )
        .into_response())
}

pub async fn get_offer(
    State(state): State<AppState>,
    staff: Staff,
    Path(offer): Path<String>,
) -> Result<Json<Value>, AppError> {
    let (o, c) = engine::offer_for(&state, &staff, id(&offer)?).await?;
    Ok(Json(offer_json(&o, &c)))
}

pub async fn close_offer(
    State(state): State<AppState>,
    staff: Staff,
    Path(offer): Path<String>,
) -> Result<Json<Value>, AppError> {
    let id = id(&offer)?;
    engine::close(&state, &staff, id).await?;
    let (o, c) = engine::offer_for(&state, &staff, id).await?;
    Ok(Json(offer_json(&o, &c)))
}

#[derive(serde::Deserialize)]
pub struct DayQuery {
    date: Option<String>,
    q: Option<String>,
}

pub async fn appointments(
    State(state): State<AppState>,
    staff: Staff,
    Path(center): Path<String>,
    super::extract::ApiQuery(q): super::extract::ApiQuery<DayQuery>,
) -> Result<Json<Value>, AppError> {
    let center = id(&center)?;
    let list = match q.q.as_deref() {
        Some(search) => engine::search_appointments(&state, &staff, center, search).await?,
        None => engine::appointments_on(&state, &staff, center, q.date.as_deref()).await?,
    };
    Ok(Json(Value::Array(
        list.iter()
            .map(|a| {
                let mut v = appointment_json(a);
                v["first_name"] = json!(a.first_name);
                v["last_name"] = json!(a.last_name);
                v
            })
            .collect(),
    )))
}

pub async fn appointment_status(
    State(state): State<AppState>,
    staff: Staff,
    Path(appt): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, AppError> {
    let mut o = Obj::new(&body)?;
    let status = o.str("status");
    o.done()?;
    let a = engine::set_appointment_status(&state, &staff, id(&appt)?, status).await?;
    Ok(Json(appointment_json(&a)))
}

pub async fn create_user(
    State(state): State<AppState>,
    staff: Staff,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let mut o = Obj::new(&body)?;
    let (e, p, r, c) = (
        o.str("email"),
        o.str("password"),
        o.str("role"),
        o.int("center"),
    );
    o.done()?;
    let id = staff::create_user(&state, &staff, e, p, r, c).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id.to_string() }))).into_response())
}

pub async fn users(State(state): State<AppState>, staff: Staff) -> Result<Json<Value>, AppError> {
    staff.require_admin()?;
    let list = state.store.list_users().await?;
    Ok(Json(json!(list.iter().map(|u| json!({"id": u.id.to_string(), "email": u.email, "role": u.role, "center": u.center_id.map(|c| c.to_string())})).collect::<Vec<_>>())))
}

pub async fn audit(State(state): State<AppState>, staff: Staff) -> Result<Json<Value>, AppError> {
    staff.require_admin()?;
    let store: &dyn Store = state.store.as_ref();
    let list = store.audit_trail(500).await?;
    Ok(Json(json!(list.iter().map(|a| json!({"at": engine::rfc3339(a.at), "actor": a.actor, "action": a.action, "subject_type": a.subject_type, "subject_id": a.subject_id, "detail": a.detail})).collect::<Vec<_>>())))
}

pub async fn invitation(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<Value>, AppError> {
    let inv = engine::invitation(&state, &token).await?;
    Ok(Json(engine::invitation_json(&inv)))
}

pub async fn accept(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<Value>, AppError> {
    let a = engine::accept(&state, &token).await?;
    Ok(Json(
        json!({ "status": "booked", "appointment": appointment_json(&a) }),
    ))
}

pub async fn decline(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<Value>, AppError> {
    engine::decline(&state, &token).await?;
    Ok(Json(json!({ "status": "declined" })))
}

/// How far a receipt's signed time may be from the server's clock.
pub const RECEIPT_SKEW_MS: i64 = 300_000;

/// `POST /api/v1/receipts/sms`: a gateway's signed delivery receipt. The
/// signature covers the timestamp and the body, so a receipt cannot be
/// replayed after five minutes; within them a repeat changes nothing.
/// Checks a gateway's signature over a request's exact bytes, before
/// anything is parsed: `X-Standby-Timestamp` within [`RECEIPT_SKEW_MS`] of
/// the server's clock, and `X-Standby-Signature` the HMAC-SHA256 under
/// `STANDBY_RECEIPT_SECRET` of the timestamp, a dot and the body.
fn verify_gateway(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<(), AppError> {
    let Some(secret) = state.config.receipt_secret.as_deref() else {
        return Err(AppError::Unauthorized);
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim()
    };
    let timestamp = header("x-standby-timestamp");
    let now = state.clock.now_ms();
    let fresh = timestamp
        .parse::<i64>()
        .ok()
        .and_then(|t| t.checked_mul(1000))
        .is_some_and(|t| (t - now).abs() <= RECEIPT_SKEW_MS);
    let mut signed = Vec::with_capacity(timestamp.len() + 1 + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    if !fresh
        || !crate::security::verify_hmac_hex(
            secret.as_bytes(),
            &signed,
            header("x-standby-signature"),
        )
    {
        return Err(AppError::Unauthorized);
    }
    Ok(())
}

pub async fn sms_receipt(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    super::extract::RawBody(body): super::extract::RawBody,
) -> Result<Json<Value>, AppError> {
    verify_gateway(&state, &headers, &body)?;
    let now = state.clock.now_ms();
    let v = super::extract::parse_json(&body)?;
    let mut o = Obj::new(&v)?;
    let reference = o.str("reference").unwrap_or("").to_string();
    let status = o.str("status").unwrap_or("").to_string();
    o.done()?;
    let mut problems = crate::services::staff::Problems::default();
    if reference.is_empty() || reference.len() > 200 {
        problems.add("reference", "required, at most 200 characters");
    }
    let delivered = match status.as_str() {
        "delivered" => true,
        "failed" => false,
        _ => {
            problems.add("status", "must be delivered or failed");
            false
        }
    };
    problems.into_result()?;
    match state
        .store
        .message_receipt(&reference, delivered, now)
        .await?
    {
        standby_store::ReceiptOutcome::Unknown => Err(AppError::NotFound),
        standby_store::ReceiptOutcome::Unchanged => Ok(Json(json!({ "status": "unchanged" }))),
        standby_store::ReceiptOutcome::Recorded => {
            state.engine_wake.notify_waiters();
            Ok(Json(json!({ "status": "recorded" })))
        }
    }
}

/// `POST /api/v1/inbound/sms`: a person's reply, forwarded by the gateway
/// and signed as receipts are. A reply quoting the code of the sender's open
/// invitation accepts it, as its link would; the person is answered by SMS.
pub async fn inbound_sms(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    super::extract::RawBody(body): super::extract::RawBody,
) -> Result<Json<Value>, AppError> {
    verify_gateway(&state, &headers, &body)?;
    let v = super::extract::parse_json(&body)?;
    let mut o = Obj::new(&v)?;
    let from = o.str("from").unwrap_or("").to_string();
    let text = o.str("body").unwrap_or("").to_string();
    o.done()?;
    let mut problems = crate::services::staff::Problems::default();
    let phone = match standby_domain::Phone::parse(&from) {
        Ok(p) => Some(p),
        Err(_) => {
            problems.add("from", "an international phone number such as +32470123456");
            None
        }
    };
    if text.chars().count() > 1_600 {
        problems.add("body", "at most 1600 characters");
    }
    problems.into_result()?;
    let Some(phone) = phone else {
        return Err(AppError::BadRequest("no phone".into()));
    };
    let outcome = engine::accept_by_reply(&state, phone.as_str(), &text).await?;
    Ok(Json(json!({ "status": outcome.unwrap_or("ignored") })))
}
