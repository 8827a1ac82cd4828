//! JSON handlers under `/api/v1`, plus health and metrics.

use super::extract::{JsonBody, Lang};
use crate::app::AppState;
use crate::error::AppError;
use crate::services::{registrant, signup};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use standby_domain::registration::RawSlot;
use standby_domain::{FieldError, FieldErrors, RegistrationInput};

/// Reads the fields of a JSON object, recording a wrong type as a field error
/// instead of failing the whole request.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    errors: FieldErrors,
}

impl<'a> Fields<'a> {
    fn new(v: &'a Value) -> Result<Self, AppError> {
        match v {
            Value::Object(map) => Ok(Fields {
                map,
                errors: FieldErrors::new(),
            }),
            _ => Err(AppError::BadRequest(
                "the body must be a JSON object".into(),
            )),
        }
    }

    fn present(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    fn string(&mut self, name: &'static str) -> Option<String> {
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) if name == "national_id" => Some(n.to_string()),
            Some(_) => {
                self.errors.insert(name, FieldError::WrongType);
                None
            }
        }
    }

    fn id_list(&mut self, name: &'static str) -> Option<Vec<String>> {
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let ids: Option<Vec<String>> = items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect();
                if ids.is_none() {
                    self.errors.insert(name, FieldError::WrongType);
                }
                ids
            }
            Some(_) => {
                self.errors.insert(name, FieldError::WrongType);
                None
            }
        }
    }

    fn slots(&mut self, name: &'static str) -> Option<Vec<RawSlot>> {
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let slots: Option<Vec<RawSlot>> = items
                    .iter()
                    .map(|v| {
                        let o = v.as_object()?;
                        let get = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
                        Some(RawSlot {
                            day: get("day")?,
                            from: get("from")?,
                            to: get("to")?,
                        })
                    })
                    .collect();
                if slots.is_none() {
                    self.errors.insert(name, FieldError::WrongType);
                }
                slots
            }
            Some(_) => {
                self.errors.insert(name, FieldError::WrongType);
                None
            }
        }
    }
}

pub fn registration_input(body: &Value) -> Result<RegistrationInput, AppError> {
    let mut f = Fields::new(body)?;
    let consent = match f.map.get("consent") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            f.errors.insert("consent", FieldError::WrongType);
            false
        }
    };
    Ok(RegistrationInput {
        country: f.string("country"),
        national_id: f.string("national_id"),
        title: f.string("title"),
        first_name: f.string("first_name"),
        last_name: f.string("last_name"),
        email: f.string("email"),
        phone: f.string("phone"),
        language: f.string("language"),
        centers: f.id_list("centers").unwrap_or_default(),
        availability: f.slots("availability").unwrap_or_default(),
        consent,
        type_errors: f.errors,
    })
}

pub async fn register(
    State(state): State<AppState>,
    Lang(lang): Lang,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let input = registration_input(&body)?;
    signup::sign_up(&state, input, lang).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "status": "received" }))).into_response())
}

pub async fn me_get(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<registrant::MeView>, AppError> {
    let r = registrant::by_me_token(&state, &token).await?;
    Ok(Json(registrant::MeView::from(&r)))
}

fn me_change(body: &Value) -> Result<registrant::MeChangeInput, AppError> {
    let mut f = Fields::new(body)?;
    let phone = if f.present("phone") {
        Some(f.string("phone"))
    } else {
        None
    };
    Ok(registrant::MeChangeInput {
        language: f.string("language"),
        centers: f
            .id_list("centers")
            .or_else(|| f.present("centers").then(Vec::new)),
        availability: f
            .slots("availability")
            .or_else(|| f.present("availability").then(Vec::new)),
        phone,
        status: f.string("status"),
        type_errors: f.errors,
    })
}

pub async fn me_patch(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Lang(lang): Lang,
    JsonBody(body): JsonBody,
) -> Result<Json<registrant::MeView>, AppError> {
    let r = registrant::by_me_token(&state, &token).await?;
    let change = me_change(&body)?;
    let r = registrant::update(&state, &r, change, lang).await?;
    Ok(Json(registrant::MeView::from(&r)))
}

pub async fn me_delete(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<Value>, AppError> {
    let r = registrant::by_me_token(&state, &token).await?;
    registrant::withdraw(&state, &r).await?;
    Ok(Json(json!({ "status": "withdrawn" })))
}

pub async fn me_export(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let r = registrant::by_me_token(&state, &token).await?;
    let export = state.store.export_registrant(r.id).await?;
    Ok((
        [(
            axum::http::header::CONTENT_DISPOSITION,
            "attachment; filename=\"standby-export.json\"",
        )],
        Json(export),
    )
        .into_response())
}

pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

pub async fn stats(State(state): State<AppState>) -> Result<Json<standby_store::Stats>, AppError> {
    Ok(Json(state.store.stats().await?))
}

pub async fn centers(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let list = state.centers().await?;
    Ok(Json(Value::Array(
        list.iter()
            .map(|c| json!({ "id": c.id.to_string(), "name": c.name, "address": c.address, "postal_code": c.postal_code, "time_zone": c.time_zone }))
            .collect(),
    )))
}

pub async fn vaccines(
    State(state): State<AppState>,
) -> Result<Json<Vec<standby_store::VaccineRecord>>, AppError> {
    Ok(Json(state.store.list_vaccines().await?))
}

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "database not answering");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": { "code": "database_unavailable", "message": "the database does not answer" } })))
                .into_response()
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, AppError> {
    let mut out = String::new();
    crate::metrics::render_counters(&mut out);
    crate::metrics::render_histograms(&mut out);
    let stats = state.store.stats().await?;
    out.push_str("# TYPE standby_registrants gauge\n");
    for (status, n) in [
        ("registered", stats.registered),
        ("confirmed", stats.confirmed),
        ("waiting", stats.waiting),
        ("invited", stats.invited),
        ("booked", stats.booked),
        ("vaccinated", stats.vaccinated),
    ] {
        out.push_str(&format!("standby_registrants{{status=\"{status}\"}} {n}\n"));
    }
    out.push_str(&format!(
        "# TYPE standby_doses_available gauge\nstandby_doses_available {}\n",
        stats.doses_available
    ));
    out.push_str("# TYPE standby_outbox_messages gauge\n");
    for (channel, status, n) in state.store.outbox_counts().await? {
        out.push_str(&format!(
            "standby_outbox_messages{{channel=\"{channel}\",state=\"{status}\"}} {n}\n"
        ));
    }
    out.push_str("# TYPE standby_outbox_oldest_waiting_seconds gauge\n");
    let now = state.clock.now_ms();
    for (channel, at) in state.store.outbox_oldest_waiting().await? {
        let age = (now - at).max(0) as f64 / 1000.0;
        out.push_str(&format!(
            "standby_outbox_oldest_waiting_seconds{{channel=\"{channel}\"}} {age:.3}\n"
        ));
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response())
}
