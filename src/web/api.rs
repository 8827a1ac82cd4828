//! JSON handlers under `/api/v1`, plus health and metrics.

use super::extract::{JsonBody, JsonBytes, Lang};
use crate::app::AppState;
use crate::error::AppError;
use crate::services::{registrant, signup};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
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
        string_value(self.map.get(name), name, &mut self.errors)
    }

    fn id_list(&mut self, name: &'static str) -> Option<Vec<String>> {
        id_list_value(self.map.get(name), name, &mut self.errors)
    }

    fn slots(&mut self, name: &'static str) -> Option<Vec<RawSlot>> {
        slots_value(self.map.get(name), name, &mut self.errors)
    }
}

fn string_value(v: Option<&Value>, name: &'static str, errors: &mut FieldErrors) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) if name == "national_id" => Some(n.to_string()),
        Some(_) => {
            errors.insert(name, FieldError::WrongType);
            None
        }
    }
}

/// A list field: absent or null is no list; anything but an array, or an
/// array with an item `item` cannot read, is a wrong type.
fn list_value<T>(
    v: Option<&Value>,
    name: &'static str,
    errors: &mut FieldErrors,
    item: impl Fn(&Value) -> Option<T>,
) -> Option<Vec<T>> {
    let list = match v {
        None | Some(Value::Null) => return None,
        Some(Value::Array(items)) => items.iter().map(item).collect(),
        Some(_) => None,
    };
    if list.is_none() {
        errors.insert(name, FieldError::WrongType);
    }
    list
}

fn id_list_value(
    v: Option<&Value>,
    name: &'static str,
    errors: &mut FieldErrors,
) -> Option<Vec<String>> {
    list_value(v, name, errors, |v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn slots_value(
    v: Option<&Value>,
    name: &'static str,
    errors: &mut FieldErrors,
) -> Option<Vec<RawSlot>> {
    list_value(v, name, errors, |v| {
        let o = v.as_object()?;
        let get = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
        Some(RawSlot {
            day: get("day")?,
            from: get("from")?,
            to: get("to")?,
        })
    })
}

fn consent_value(v: Option<&Value>, errors: &mut FieldErrors) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.insert("consent", FieldError::WrongType);
            false
        }
    }
}

pub fn registration_input(body: &Value) -> Result<RegistrationInput, AppError> {
    let mut f = Fields::new(body)?;
    let consent = consent_value(f.map.get("consent"), &mut f.errors);
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

/// A JSON value where the API expects text, read without building a
/// `Value`: the sign-up's eight text fields.
#[derive(Default)]
enum Loose {
    #[default]
    Absent,
    Text(String),
    /// A number, as `serde_json` prints it (a national ID may come as one).
    Number(String),
    /// Anything else: a wrong type.
    Other,
}

impl<'de> serde::Deserialize<'de> for Loose {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Loose;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Loose, E> {
                Ok(Loose::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Loose, E> {
                Ok(Loose::Text(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Loose, E> {
                Ok(Loose::Number(serde_json::Number::from(v).to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Loose, E> {
                Ok(Loose::Number(serde_json::Number::from(v).to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Loose, E> {
                Ok(serde_json::Number::from_f64(v)
                    .map_or(Loose::Other, |n| Loose::Number(n.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Loose, E> {
                Ok(Loose::Absent)
            }
            fn visit_none<E>(self) -> Result<Loose, E> {
                Ok(Loose::Absent)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
        }
        d.deserialize_any(V)
    }
}

impl Loose {
    /// As [`string_value`] reads the same JSON value.
    fn take(self, name: &'static str, errors: &mut FieldErrors) -> Option<String> {
        match self {
            Loose::Absent => None,
            Loose::Text(s) => Some(s),
            Loose::Number(n) if name == "national_id" => Some(n),
            Loose::Number(_) | Loose::Other => {
                errors.insert(name, FieldError::WrongType);
                None
            }
        }
    }
}

/// The sign-up body read straight into its fields (unknown ones skipped).
#[derive(serde::Deserialize)]
struct RegistrationBody {
    #[serde(default)]
    country: Loose,
    #[serde(default)]
    national_id: Loose,
    #[serde(default)]
    title: Loose,
    #[serde(default)]
    first_name: Loose,
    #[serde(default)]
    last_name: Loose,
    #[serde(default)]
    email: Loose,
    #[serde(default)]
    phone: Loose,
    #[serde(default)]
    language: Loose,
    #[serde(default)]
    centers: Option<Value>,
    #[serde(default)]
    availability: Option<Value>,
    #[serde(default)]
    consent: Option<Value>,
}

/// Reads a sign-up body. Every sign-up comes through here, so the usual body
/// goes straight into its fields, without building a `Value` (3.4 % fewer
/// instructions per sign-up: BENCHMARKS.md, tenth session); any body that
/// does not (not an object, malformed, a field given twice) is read by
/// [`registration_input`], so the answer is exactly the one it gives. The fuzz target `registration_json` checks that
/// both readings agree.
pub fn registration_input_from(bytes: &[u8]) -> Result<RegistrationInput, AppError> {
    // Only an object: serde would also read a struct from an array.
    let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let Some(body) = object
        .then(|| serde_json::from_slice::<RegistrationBody>(bytes).ok())
        .flatten()
    else {
        return registration_input(&super::extract::parse_json(bytes)?);
    };
    let mut errors = FieldErrors::new();
    let consent = consent_value(body.consent.as_ref(), &mut errors);
    Ok(RegistrationInput {
        country: body.country.take("country", &mut errors),
        national_id: body.national_id.take("national_id", &mut errors),
        title: body.title.take("title", &mut errors),
        first_name: body.first_name.take("first_name", &mut errors),
        last_name: body.last_name.take("last_name", &mut errors),
        email: body.email.take("email", &mut errors),
        phone: body.phone.take("phone", &mut errors),
        language: body.language.take("language", &mut errors),
        centers: id_list_value(body.centers.as_ref(), "centers", &mut errors).unwrap_or_default(),
        availability: slots_value(body.availability.as_ref(), "availability", &mut errors)
            .unwrap_or_default(),
        consent,
        type_errors: errors,
    })
}

pub async fn register(
    State(state): State<AppState>,
    Lang(lang): Lang,
    JsonBytes(body): JsonBytes,
) -> Result<Response, AppError> {
    let input = registration_input_from(&body)?;
    signup::sign_up(&state, input, lang).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"received"}"#,
    )
        .into_response())
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

/// Who may read `/metrics`: with `STANDBY_METRICS_TOKEN` set, whoever
/// sends it as a bearer token; otherwise loopback and the trusted proxies
/// only (the figures tell an outsider how busy the service is).
fn metrics_allowed(
    token: Option<&str>,
    trusted: &[std::net::IpAddr],
    parts: &axum::http::request::Parts,
) -> Result<(), AppError> {
    if let Some(expected) = token {
        let given = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .unwrap_or("");
        use subtle::ConstantTimeEq;
        return if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(AppError::Unauthorized)
        };
    }
    // The client as the proxies report it: a request from the internet
    // through a trusted proxy is the internet's, not the proxy's.
    let client =
        super::extract::client_ip(&parts.headers, super::extract::peer_addr(parts), trusted);
    match client {
        Some(ip) if ip.is_loopback() || trusted.contains(&ip) => Ok(()),
        _ => Err(AppError::Forbidden),
    }
}

pub async fn metrics(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> Result<Response, AppError> {
    let (parts, _) = req.into_parts();
    metrics_allowed(
        state.config.metrics_token.as_deref(),
        &state.config.trusted_proxies,
        &parts,
    )?;
    let mut out = String::new();
    crate::metrics::render_counters(&mut out);
    crate::metrics::render_histograms(&mut out);
    crate::metrics::render_gauges(&mut out);
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
    out.push_str("# TYPE standby_channel_circuit_open gauge\n");
    for channel in ["email", "sms"] {
        out.push_str(&format!(
            "standby_channel_circuit_open{{channel=\"{channel}\"}} {}\n",
            u8::from(state.circuits.of(channel).is_open())
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn from(ip: [u8; 4], authorization: Option<&str>) -> axum::http::request::Parts {
        let mut req = axum::http::Request::new(());
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                ip, 40_000,
            ))));
        if let Some(a) = authorization {
            req.headers_mut()
                .insert(axum::http::header::AUTHORIZATION, a.parse().unwrap());
        }
        req.into_parts().0
    }

    #[test]
    fn metrics_answer_loopback_and_trusted_proxies_or_the_token() {
        let proxy: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        assert!(metrics_allowed(None, &[], &from([127, 0, 0, 1], None)).is_ok());
        assert!(metrics_allowed(None, &[proxy], &from([10, 0, 0, 2], None)).is_ok());
        assert!(matches!(
            metrics_allowed(None, &[proxy], &from([203, 0, 113, 9], None)),
            Err(AppError::Forbidden)
        ));
        // Through the trusted proxy, for a client on the internet: refused.
        let mut forwarded = from([10, 0, 0, 2], None);
        forwarded
            .headers
            .insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        assert!(matches!(
            metrics_allowed(None, &[proxy], &forwarded),
            Err(AppError::Forbidden)
        ));
        let token = Some("t0123456789abcdef0123456789abcdef");
        let bearer = Some("bearer t0123456789abcdef0123456789abcdef");
        assert!(metrics_allowed(token, &[], &from([203, 0, 113, 9], bearer)).is_ok());
        assert!(matches!(
            metrics_allowed(token, &[], &from([127, 0, 0, 1], None)),
            Err(AppError::Unauthorized)
        ));
    }

    /// The sign-up's direct reading and the general one agree on every
    /// field given every kind of JSON value, given twice, or unknown.
    #[test]
    fn both_readings_of_a_sign_up_agree() {
        let fields = [
            "country",
            "national_id",
            "title",
            "first_name",
            "last_name",
            "email",
            "phone",
            "language",
            "centers",
            "availability",
            "consent",
            "unknown",
        ];
        let values = [
            "null",
            "true",
            "0",
            "85073003328",
            "-7",
            "1.5",
            "1e300",
            "123456789012345678901234567890",
            "\"\"",
            "\"85073003328\"",
            "\"\\u00e9l\\\"a\"",
            "[]",
            "[\"1\", 2]",
            "[1.5, null]",
            "[{\"day\": \"mon\", \"from\": \"08:00\", \"to\": \"12:00\"}]",
            "[{\"day\": 1}]",
            "{}",
            "{\"a\": [1, {\"b\": null}]}",
        ];
        let base = r#""country": "BE", "national_id": "85.07.30-033.28", "first_name": "Anne", "last_name": "Peeters", "email": "a@example.org", "language": "fr", "consent": true"#;
        let mut cases = vec![
            "[]".to_string(),
            "\"text\"".to_string(),
            "{}".to_string(),
            "null".to_string(),
            format!("{{{base}}}"),
            format!("{{{base}"),
            format!("{{{base}}} trailing"),
        ];
        for field in fields {
            for value in values {
                cases.push(format!("{{{base}, \"{field}\": {value}}}"));
                let alone = format!("{{\"{field}\": {value}}}");
                // Read directly, not left to the general reading.
                assert!(
                    serde_json::from_slice::<RegistrationBody>(alone.as_bytes()).is_ok(),
                    "{alone}"
                );
                cases.push(alone);
            }
        }
        for body in &cases {
            let direct = registration_input_from(body.as_bytes());
            let general = super::super::extract::parse_json(body.as_bytes())
                .and_then(|v| registration_input(&v));
            assert_eq!(format!("{direct:?}"), format!("{general:?}"), "{body}");
        }
        // The base body is read, and a field given twice counts once, the last.
        let input = registration_input_from(format!("{{{base}}}").as_bytes()).unwrap();
        assert_eq!(input.first_name.as_deref(), Some("Anne"));
        assert!(input.consent && input.type_errors.is_empty());
        let twice = format!("{{{base}, \"first_name\": \"Marie\"}}");
        let input = registration_input_from(twice.as_bytes()).unwrap();
        assert_eq!(input.first_name.as_deref(), Some("Marie"));
        let wrong =
            registration_input_from(br#"{"national_id": 85073003328, "email": 5}"#).unwrap();
        assert_eq!(wrong.national_id.as_deref(), Some("85073003328"));
        assert_eq!(wrong.type_errors.len(), 1);
        // Lists: null is none; an array whose items all read is read; a
        // non-array, or an array with an item of the wrong kind, is a wrong type.
        let lists = registration_input_from(
            br#"{"centers": ["1", 2], "availability": [{"day": "mon", "from": "08:00", "to": "12:00"}]}"#,
        )
        .unwrap();
        assert_eq!(lists.centers, ["1", "2"]);
        assert_eq!(lists.availability.len(), 1);
        assert!(lists.type_errors.is_empty());
        let null = registration_input_from(br#"{"centers": null, "availability": null}"#).unwrap();
        assert!(null.centers.is_empty() && null.type_errors.is_empty());
        for body in [
            r#"{"centers": "1", "availability": {"day": "mon"}}"#,
            r#"{"centers": ["1", {}], "availability": [{"day": 1, "from": "08:00", "to": "12:00"}]}"#,
        ] {
            let bad = registration_input_from(body.as_bytes()).unwrap();
            assert_eq!(bad.type_errors.len(), 2, "{body}");
            assert!(
                bad.centers.is_empty() && bad.availability.is_empty(),
                "{body}"
            );
        }
    }
}
