//! The one error type of the HTTP layer. API handlers answer it as the
//! contract's JSON error; page handlers wrap it in [`PageError`] for HTML.

use crate::i18n::t;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use standby_domain::Language;
use standby_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("this belongs to another centre")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    Gone(String),
    /// The invitation was withdrawn, or its person withdrew, paused or
    /// booked elsewhere.
    #[error("this invitation is closed; nothing was changed")]
    InvitationClosed,
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("the request body is larger than 16 KiB")]
    PayloadTooLarge,
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// Field name and a sentence saying what is wrong with it.
    #[error("some fields are not valid")]
    Validation(Vec<(String, String)>),
    /// `cause` says what was too much, as a sentence.
    #[error("{cause}; retry in {retry_after} s")]
    TooManyRequests {
        retry_after: u64,
        cause: &'static str,
    },
    #[error("the service is busy; retry in {retry_after} s")]
    Overloaded { retry_after: u64 },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AppError::NotFound,
            StoreError::Conflict(code) => AppError::Conflict {
                code,
                message: code.replace('_', " "),
            },
            other => AppError::Internal(other.into()),
        }
    }
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden => StatusCode::FORBIDDEN,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::Gone(_) | AppError::InvitationClosed => StatusCode::GONE,
            AppError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::Unauthorized => "unauthorized",
            AppError::Forbidden => "forbidden",
            AppError::NotFound => "not_found",
            AppError::Conflict { code, .. } => code,
            AppError::Gone(_) => "expired",
            AppError::InvitationClosed => "invitation_closed",
            AppError::RequestTimeout => "request_timeout",
            AppError::PayloadTooLarge => "payload_too_large",
            AppError::UnsupportedMediaType => "unsupported_media_type",
            AppError::Validation(_) => "validation_failed",
            AppError::TooManyRequests { .. } => "too_many_requests",
            AppError::Overloaded { .. } => "overloaded",
            AppError::Internal(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            AppError::TooManyRequests { retry_after, .. }
            | AppError::Overloaded { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Logs server-side failures once, where they are answered. Never with
    /// request data: the error chain names only the failing operation.
    fn log(&self) {
        if let AppError::Internal(e) = self {
            tracing::error!(error = %format!("{e:#}"), "request failed");
        }
    }

    /// The localized sentence shown on a page for this error.
    pub fn page_message(&self, lang: Language) -> String {
        let key = match self {
            AppError::NotFound => "error.not_found",
            AppError::TooManyRequests { .. } => "error.too_many",
            AppError::Overloaded { .. } => "busy.text",
            AppError::PayloadTooLarge => "error.too_large",
            AppError::Gone(_) => "link.expired",
            AppError::InvitationClosed => "invitation.closed",
            AppError::Conflict { .. } => "error.conflict",
            AppError::Internal(_) => "error.server",
            _ => "error.bad_request",
        };
        t(lang, key)
    }
}

fn with_retry_after(mut resp: Response, retry_after: Option<u64>) -> Response {
    if resp.status() == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body is not read: the connection cannot be reused.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        let mut error = json!({ "code": self.code(), "message": self.to_string() });
        if let AppError::Validation(fields) = &self {
            error["fields"] = fields
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        let resp = (self.status(), axum::Json(json!({ "error": error }))).into_response();
        with_retry_after(resp, self.retry_after())
    }
}

/// An [`AppError`] answered as an HTML page in the visitor's language.
pub struct PageError(pub AppError, pub Language);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let PageError(err, lang) = self;
        err.log();
        let status = err.status();
        let retry = err.retry_after();
        let page = crate::web::pages::ErrorPage::new(lang, err.page_message(lang));
        with_retry_after((status, page).into_response(), retry)
    }
}
