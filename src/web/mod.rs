//! HTTP: the router, its middleware, and thin handlers that parse, call a
//! service and render.

pub mod api;
pub mod api_staff;
pub mod extract;
pub mod pages;
pub mod pages_staff;

use crate::app::AppState;
use crate::error::{AppError, PageError};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::time::Instant;

pub const BODY_LIMIT: usize = 16 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::signup_form).post(pages::signup_submit))
        .route(
            "/confirm/{token}",
            get(pages::confirm_page).post(pages::confirm_submit),
        )
        .route("/me/{token}", get(pages::me_page).post(pages::me_submit))
        .route("/stats", get(pages::stats_page))
        .route("/order", get(pages::order_page))
        .route("/i/{token}", get(pages_staff::invite))
        .route("/i/{token}/accept", post(pages_staff::invite_accept))
        .route("/i/{token}/decline", post(pages_staff::invite_decline))
        .route(
            "/login",
            get(pages_staff::login_page).post(pages_staff::login_submit),
        )
        .route("/logout", post(pages_staff::logout))
        .route("/staff", get(pages_staff::home))
        .route("/staff/centers/{id}", get(pages_staff::center))
        .route("/staff/centers/{id}/delivery", post(pages_staff::delivery))
        .route("/staff/centers/{id}/adjust", post(pages_staff::adjust))
        .route("/staff/centers/{id}/offers", post(pages_staff::release))
        .route("/staff/offers/{id}", get(pages_staff::offer))
        .route("/staff/offers/{id}/close", post(pages_staff::close_offer))
        .route(
            "/staff/appointments/{id}/status",
            post(pages_staff::appointment_status),
        )
        .route("/staff/admin", get(pages_staff::admin))
        .route("/staff/admin/centers", post(pages_staff::admin_center))
        .route("/staff/admin/vaccines", post(pages_staff::admin_vaccine))
        .route("/staff/admin/users", post(pages_staff::admin_user))
        .route("/staff/audit", get(pages_staff::audit))
        .route("/static/style.css", get(pages::stylesheet))
        .route("/static/retry.js", get(pages::retry_script))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/registrations", post(api::register))
        .route(
            "/api/v1/me/{token}",
            get(api::me_get).patch(api::me_patch).delete(api::me_delete),
        )
        .route("/api/v1/me/{token}/export", get(api::me_export))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/stats", get(api::stats))
        .route(
            "/api/v1/centers",
            get(api::centers).post(api_staff::create_center),
        )
        .route(
            "/api/v1/vaccines",
            get(api::vaccines).post(api_staff::create_vaccine),
        )
        .route("/api/v1/login", post(api_staff::login))
        .route("/api/v1/logout", post(api_staff::logout))
        .route(
            "/api/v1/users",
            get(api_staff::users).post(api_staff::create_user),
        )
        .route("/api/v1/audit", get(api_staff::audit))
        .route("/api/v1/centers/{id}/deliveries", post(api_staff::delivery))
        .route(
            "/api/v1/centers/{id}/adjustments",
            post(api_staff::adjustment),
        )
        .route("/api/v1/centers/{id}/stock", get(api_staff::stock))
        .route("/api/v1/centers/{id}/offers", post(api_staff::create_offer))
        .route(
            "/api/v1/centers/{id}/appointments",
            get(api_staff::appointments),
        )
        .route("/api/v1/offers/{id}", get(api_staff::get_offer))
        .route("/api/v1/offers/{id}/close", post(api_staff::close_offer))
        .route(
            "/api/v1/appointments/{id}/status",
            post(api_staff::appointment_status),
        )
        .route("/api/v1/receipts/sms", post(api_staff::sms_receipt))
        .route("/api/v1/inbound/sms", post(api_staff::inbound_sms))
        .route("/api/v1/invitations/{token}", get(api_staff::invitation))
        .route(
            "/api/v1/invitations/{token}/accept",
            post(api_staff::accept),
        )
        .route(
            "/api/v1/invitations/{token}/decline",
            post(api_staff::decline),
        )
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(state.clone(), edge))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn fallback(req: Request) -> Response {
    let lang = extract::negotiate(req.headers(), req.uri().query());
    if req.uri().path().starts_with("/api/") {
        AppError::NotFound.into_response()
    } else {
        PageError(AppError::NotFound, lang).into_response()
    }
}

/// Requests that submit a form or carry a token count against the
/// per-client limit (`STANDBY_CLIENT_RATE` a minute).
fn rate_limited(method: &Method, path: &str) -> bool {
    let token_path = [
        "/confirm/",
        "/me/",
        "/i/",
        "/api/v1/me/",
        "/api/v1/invitations/",
    ]
    .iter()
    .any(|p| path.starts_with(p));
    let form_post = method == Method::POST
        && matches!(
            path,
            "/" | "/api/v1/registrations" | "/api/v1/login" | "/login"
        );
    token_path || form_post
}

/// Every request passes here once: forms from other sites are refused, one
/// client sending too much is refused, and every answer gets the security
/// headers and is counted. One layer rather than four: at launch-day rates
/// each layer's boxed future and state clone is measurable.
async fn edge(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let lang_param = extract::query_lang(req.uri().query());
    // Token links, the API and staff pages (names, dates of birth) are
    // never kept by a browser or a proxy.
    let tokenized = ["/confirm/", "/me/", "/i/", "/api/", "/staff"]
        .iter()
        .any(|p| req.uri().path().starts_with(p));
    let api = req.uri().path().starts_with("/api/");
    let mut refusal = cross_site_form(&state, &req);
    if refusal.is_none()
        && let Some(ip) = limited_client(&state, &req)
        && let Err(retry_after) = client_allowed(&state, ip).await
    {
        crate::metrics::add(
            "standby_shed_requests_total",
            &[("reason", "client_rate")],
            1.0,
        );
        let err = AppError::TooManyRequests {
            retry_after,
            cause: "too many requests from this client address",
        };
        refusal = Some(if req.uri().path().starts_with("/api/") {
            err.into_response()
        } else {
            PageError(err, extract::negotiate(req.headers(), req.uri().query())).into_response()
        });
    }
    let mut resp = match refusal {
        Some(r) => r,
        None => next.run(req).await,
    };
    if api {
        resp = json_error_if_plain(resp);
    }
    security_headers(&state, &mut resp, tokenized, lang_param);
    let elapsed = started.elapsed();
    crate::metrics::HTTP_LATENCY.record(elapsed);
    crate::metrics::request(
        route.as_ref().map(|r| r.as_str()).unwrap_or("unmatched"),
        method.as_str(),
        resp.status().as_u16(),
        elapsed.as_secs_f64(),
    );
    resp
}

/// Every error of the API is the contract's JSON error: an answer made
/// below the handlers (axum's own rejections of a path or query, a method
/// the route does not take) is rewritten into it, keeping its status and
/// headers.
fn json_error_if_plain(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let code = match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "validation_failed",
        429 => "too_many_requests",
        503 => "overloaded",
        s if s >= 500 => "internal",
        _ => "bad_request",
    };
    let message = status
        .canonical_reason()
        .unwrap_or("the request could not be served")
        .to_lowercase();
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The client address, when this request counts against the per-client limit.
fn limited_client(state: &AppState, req: &Request) -> Option<std::net::IpAddr> {
    if state.config.client_rate == 0 || !rate_limited(req.method(), req.uri().path()) {
        return None;
    }
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    extract::client_ip(req.headers(), peer, &state.config.trusted_proxies)
}

fn cross_site_form(state: &AppState, req: &Request) -> Option<Response> {
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if unsafe_method && !req.uri().path().starts_with("/api/") {
        let h = req.headers();
        let fetch_site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host_origin = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(|host| format!("http://{host}"));
        let ours = |o: &str| {
            o == state.config.public_url
                || host_origin.as_deref() == Some(o)
                || host_origin
                    .as_deref()
                    .map(|h| h.replacen("http://", "https://", 1))
                    .as_deref()
                    == Some(o)
        };
        let cross = matches!(fetch_site, Some("cross-site") | Some("same-site"))
            || origin.is_some_and(|o| !ours(o));
        if cross {
            let lang = extract::negotiate(req.headers(), req.uri().query());
            return Some(PageError(AppError::Forbidden, lang).into_response());
        }
    }
    None
}

/// One process alone counts in memory. Several processes (PostgreSQL, or
/// SO_REUSEPORT on one port) count in the database, so the limit holds
/// whichever process a request reaches. The key is a hash of the address.
async fn client_allowed(state: &AppState, ip: std::net::IpAddr) -> Result<(), u64> {
    let now = state.clock.now_ms();
    let shared =
        state.config.reuse_port || state.store.backend() == standby_store::Backend::Postgres;
    if !shared {
        return state.limiter.check(ip, now);
    }
    let key = format!(
        "client:{}",
        crate::security::hmac_hex(&state.config.secret, ip.to_string().as_bytes())
    );
    match state
        .store
        .throttle_hit(&key, 60_000, i64::from(state.config.client_rate), now)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(
            u64::try_from((60_000 - now.rem_euclid(60_000) + 999) / 1000)
                .unwrap_or(60)
                .max(1),
        ),
        // The database not answering is reported by the request itself.
        Err(_) => state.limiter.check(ip, now),
    }
}

fn security_headers(
    state: &AppState,
    resp: &mut Response,
    tokenized: bool,
    lang_param: Option<standby_domain::Language>,
) {
    let https = state.config.public_url.starts_with("https://");
    let h = resp.headers_mut();
    // Room for these at once, rather than growing the map twice on the way.
    h.reserve(7);
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Token links must never leak to another site through Referer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if https {
        // Behind TLS: browsers must never come back over plain HTTP.
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    if tokenized && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(lang) = lang_param {
        let cookie = format!(
            "lang={}; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly",
            lang.as_str()
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.append(header::SET_COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_errors_of_the_api_become_the_json_error() {
        let plain = Response::builder()
            .status(405)
            .header(header::ALLOW, "GET")
            .body(axum::body::Body::from("Method Not Allowed"))
            .unwrap();
        let resp = json_error_if_plain(plain);
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()[header::ALLOW], "GET");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "method_not_allowed");
        // A success, or an error already in JSON, is left as it is.
        let ok = json_error_if_plain(Response::new(axum::body::Body::from("fine")));
        assert_eq!(ok.status(), 200);
        assert!(ok.headers().get(header::CONTENT_TYPE).is_none());
    }

    #[test]
    fn which_requests_count_against_the_client_limit() {
        assert!(rate_limited(&Method::POST, "/"));
        assert!(!rate_limited(&Method::GET, "/"));
        assert!(rate_limited(&Method::POST, "/api/v1/registrations"));
        assert!(rate_limited(&Method::GET, "/me/abc"));
        assert!(rate_limited(&Method::GET, "/api/v1/invitations/abc"));
        assert!(!rate_limited(&Method::GET, "/api/v1/stats"));
    }
}
