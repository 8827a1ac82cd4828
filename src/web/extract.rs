//! Extractors: client address, visitor language, and request bodies that
//! fail with the contract's errors (400, 413, 415).

use crate::app::AppState;
use crate::error::AppError;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, header, request::Parts};
use standby_domain::Language;
use std::net::{IpAddr, SocketAddr};

/// The client's address: the peer, or the `X-Forwarded-For` entry added by a
/// trusted proxy.
pub fn client_ip(
    parts_headers: &HeaderMap,
    peer: Option<IpAddr>,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded = parts_headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    // Walk from the right: the first address that is not one of our proxies is the client.
    let mut client = peer;
    for hop in forwarded.split(',').map(str::trim).rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => client = ip,
            Ok(ip) => return Some(ip),
            Err(_) => break,
        }
    }
    Some(client)
}

pub fn peer_addr(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The visitor's language: `?lang=`, then the `lang` cookie, then `Accept-Language`.
#[derive(Debug, Clone, Copy)]
pub struct Lang(pub Language);

pub fn query_lang(query: Option<&str>) -> Option<Language> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("lang="))
        .and_then(Language::parse)
}

pub fn negotiate(headers: &HeaderMap, query: Option<&str>) -> Language {
    if let Some(l) = query_lang(query) {
        return l;
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("lang="))
        .and_then(Language::parse);
    if let Some(l) = cookie {
        return l;
    }
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(Language::from_accept_language)
        .unwrap_or_default()
}

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Lang(negotiate(&parts.headers, parts.uri.query())))
    }
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

async fn body_bytes(req: Request, state: &AppState) -> Result<Bytes, AppError> {
    let deadline = req
        .extensions()
        .get::<crate::server::BodyDeadline>()
        .copied();
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge
        } else if deadline.is_some_and(|d| tokio::time::Instant::now() >= d.0) {
            AppError::RequestTimeout
        } else {
            AppError::BadRequest("the request body could not be read".into())
        }
    })
}

/// A body of any type, as its bytes (a gateway's signed receipt): 413 over
/// 16 KiB, 408 when it does not arrive in time.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        body_bytes(req, state).await.map(RawBody)
    }
}

/// A query string read into `T`, or the contract's JSON error naming what
/// is wrong with it (axum's own rejection is plain text).
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                AppError::BadRequest(format!("the query string is not valid: {}", e.body_text()))
            })
    }
}

/// A JSON body: 415 unless `Content-Type: application/json`, 413 over 16 KiB,
/// 400 unless it parses.
pub struct JsonBody(pub serde_json::Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON body not yet parsed, for a handler that reads it into its own
/// type: 415 unless `Content-Type: application/json`, 413 over 16 KiB.
pub struct JsonBytes(pub Bytes);

impl FromRequest<AppState> for JsonBytes {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !content_type_is(req.headers(), "application/json") {
            return Err(AppError::UnsupportedMediaType);
        }
        body_bytes(req, state).await.map(JsonBytes)
    }
}

/// Any JSON value, or 400 naming where it stops being JSON.
pub fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, AppError> {
    serde_json::from_slice(bytes).map_err(|e| {
        AppError::BadRequest(format!(
            "malformed JSON at line {} column {}",
            e.line(),
            e.column()
        ))
    })
}

/// An HTML form body as its list of pairs (repeated names kept).
pub struct FormBody(pub Vec<(String, String)>);

impl FromRequest<AppState> for FormBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !content_type_is(req.headers(), "application/x-www-form-urlencoded") {
            return Err(AppError::UnsupportedMediaType);
        }
        let bytes = body_bytes(req, state).await?;
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .map(FormBody)
            .map_err(|_| AppError::BadRequest("the form could not be read".into()))
    }
}

impl FormBody {
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.2".parse().unwrap());
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(&h, Some(other), &[proxy]), Some(other));
        assert_eq!(
            client_ip(&h, Some(proxy), &[proxy]),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            client_ip(&HeaderMap::new(), Some(proxy), &[proxy]),
            Some(proxy)
        );
    }

    #[test]
    fn language_order() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_LANGUAGE, "de".parse().unwrap());
        assert_eq!(negotiate(&h, None), Language::De);
        h.insert(header::COOKIE, "x=1; lang=nl".parse().unwrap());
        assert_eq!(negotiate(&h, None), Language::Nl);
        assert_eq!(negotiate(&h, Some("a=b&lang=en")), Language::En);
        assert_eq!(negotiate(&HeaderMap::new(), Some("lang=xx")), Language::Fr);
    }
}
