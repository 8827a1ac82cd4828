//! Staff sign-in: argon2 passwords, bearer tokens for the API, session
//! cookies with a CSRF token for the pages, throttling kept in the database
//! so it holds across processes.

use crate::app::AppState;
use crate::error::AppError;
use crate::security::{plausible_token, random_token, token_hash, verify_password};
use axum::extract::FromRequestParts;
use axum::http::{Method, header, request::Parts};
use sha2::{Digest, Sha256};
use standby_store::{StaffSession, Store, TokenPurpose};
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "standby_session";
pub const TOKEN_LIFETIME_MS: i64 = 12 * 3600 * 1000;
/// Failed log-ins allowed per account, and per client address, in 15 minutes.
pub const LOGIN_LIMIT_PER_ACCOUNT: i64 = 10;
pub const LOGIN_LIMIT_PER_CLIENT: i64 = 50;
pub const LOGIN_WINDOW_MS: i64 = 15 * 60 * 1000;

/// A hash to verify against when the account does not exist, so a wrong
/// e-mail takes as long as a wrong password.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    crate::security::hash_password(&crate::security::random_secret())
        .expect("argon2 hashes a random password")
});

#[derive(Debug, Clone)]
pub struct Staff {
    pub user_id: i64,
    pub email: String,
    pub role: String,
    pub center_id: Option<i64>,
    pub csrf: Option<String>,
    /// The session hash, for signing out.
    pub token_hash: String,
}

impl Staff {
    fn from_session(s: StaffSession, token_hash: String) -> Self {
        Staff {
            user_id: s.user_id,
            email: s.email,
            role: s.role,
            center_id: s.center_id,
            csrf: s.csrf,
            token_hash,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }

    pub fn actor(&self) -> String {
        format!("user:{}", self.user_id)
    }

    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    /// Admins reach every centre; staff only their own.
    pub fn require_center(&self, center_id: i64) -> Result<(), AppError> {
        if self.is_admin() || self.center_id == Some(center_id) {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    /// Checks a form's CSRF token against the session's, in constant time.
    pub fn check_csrf(&self, submitted: Option<&str>) -> Result<(), AppError> {
        match (&self.csrf, submitted) {
            (Some(expected), Some(given))
                if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) =>
            {
                Ok(())
            }
            _ => Err(AppError::Forbidden),
        }
    }
}

fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_string)
        })
}

/// Who is asking, from `Authorization: Bearer` (API) or the session cookie
/// (pages; unsafe API methods then also need the `X-CSRF-Token` header).
pub async fn staff_from_parts(parts: &Parts, state: &AppState) -> Result<Option<Staff>, AppError> {
    let now = state.clock.now_ms();
    if let Some(auth) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let token = auth
            .strip_prefix("Bearer ")
            .ok_or(AppError::Unauthorized)?
            .trim();
        if !plausible_token(token) {
            return Err(AppError::Unauthorized);
        }
        let hash = token_hash(token);
        let s = state
            .store
            .staff_by_token(&hash, TokenPurpose::Api, now)
            .await?
            .ok_or(AppError::Unauthorized)?;
        return Ok(Some(Staff::from_session(s, hash)));
    }
    let Some(token) = cookie(parts, SESSION_COOKIE).filter(|t| plausible_token(t)) else {
        return Ok(None);
    };
    let hash = token_hash(&token);
    let Some(s) = state
        .store
        .staff_by_token(&hash, TokenPurpose::Session, now)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(Staff::from_session(s, hash)))
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let staff = staff_from_parts(parts, state)
            .await?
            .ok_or(AppError::Unauthorized)?;
        let by_cookie = parts.headers.get(header::AUTHORIZATION).is_none();
        let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if by_cookie && unsafe_method && parts.uri.path().starts_with("/api/") {
            let given = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok());
            staff.check_csrf(given)?;
        }
        Ok(staff)
    }
}

fn throttle_key(kind: &str, value: &str) -> String {
    format!(
        "login:{kind}:{}",
        hex::encode(Sha256::digest(value.as_bytes()))
    )
}

/// A signed-in result: the token to hand out, and its CSRF partner for pages.
pub struct SignedIn {
    pub token: String,
    pub csrf: String,
    pub expires_at: i64,
}

pub async fn log_in(
    state: &AppState,
    email: &str,
    password: &str,
    client: &str,
    purpose: TokenPurpose,
) -> Result<SignedIn, AppError> {
    let now = state.clock.now_ms();
    let email = email.trim().to_lowercase();
    let store: &dyn Store = state.store.as_ref();
    // Counted before checking, so guessing is throttled whatever the outcome.
    let account_ok = store
        .throttle_hit(
            &throttle_key("account", &email),
            LOGIN_WINDOW_MS,
            LOGIN_LIMIT_PER_ACCOUNT,
            now,
        )
        .await?;
    let client_ok = store
        .throttle_hit(
            &throttle_key("client", client),
            LOGIN_WINDOW_MS,
            LOGIN_LIMIT_PER_CLIENT,
            now,
        )
        .await?;
    if !account_ok || !client_ok {
        crate::metrics::add(
            "standby_shed_requests_total",
            &[("reason", "login_throttle")],
            1.0,
        );
        let retry_after = u64::try_from((LOGIN_WINDOW_MS - now.rem_euclid(LOGIN_WINDOW_MS)) / 1000)
            .unwrap_or(60)
            .max(1);
        return Err(AppError::TooManyRequests { retry_after });
    }
    let user = store.user_by_email(&email).await?;
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.as_str())
        .unwrap_or(DUMMY_HASH.as_str());
    let password_ok = verify_password(password, hash);
    let Some(user) = user.filter(|_| password_ok) else {
        return Err(AppError::Unauthorized);
    };
    let token = random_token();
    let csrf = crate::security::random_secret();
    let expires_at = now + TOKEN_LIFETIME_MS;
    store
        .create_token(
            &token_hash(&token),
            purpose,
            user.id,
            Some(&csrf),
            now,
            expires_at,
        )
        .await?;
    Ok(SignedIn {
        token,
        csrf,
        expires_at,
    })
}

pub async fn log_out(state: &AppState, staff: &Staff) -> Result<(), AppError> {
    state.store.delete_token(&staff.token_hash).await?;
    Ok(())
}
