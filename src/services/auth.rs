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
/// Failed log-ins for one account from one address before each further
/// try has to wait (1 s, then twice as long after each failure, at most
/// [`LOGIN_MAX_DELAY_MS`]). As OWASP ASVS 2.2 asks: only failures count,
/// and a correct password from an address that has not failed is never
/// refused, so nobody elsewhere can lock an account out.
pub const LOGIN_FREE_FAILURES: i64 = 3;
pub const LOGIN_MAX_DELAY_MS: i64 = 15 * 60 * 1000;
/// Failed log-ins from one address, across accounts, before it is refused
/// until its failures are forgotten.
pub const LOGIN_LIMIT_PER_CLIENT: i64 = 50;
/// Failures are forgotten this long after the last one.
pub const LOGIN_WINDOW_MS: i64 = 15 * 60 * 1000;

/// Why a log-in must wait, and for how long (ms), from the failures of this
/// account from this address (`pair`) and of this address across accounts
/// (`client`), each as (count, last failure). `None`: go on.
pub fn login_wait(
    pair: Option<(i64, i64)>,
    client: Option<(i64, i64)>,
    now: i64,
) -> Option<(i64, &'static str)> {
    let live = |f: Option<(i64, i64)>| f.filter(|(_, last)| now - last < LOGIN_WINDOW_MS);
    if let Some((count, last)) = live(client)
        && count >= LOGIN_LIMIT_PER_CLIENT
    {
        return Some((
            last + LOGIN_WINDOW_MS - now,
            "too many failed log-ins from this address, whatever the account",
        ));
    }
    if let Some((count, last)) = live(pair)
        && count >= LOGIN_FREE_FAILURES
    {
        let doublings = u32::try_from(count - LOGIN_FREE_FAILURES)
            .unwrap_or(u32::MAX)
            .min(20);
        let delay = (1000_i64 << doublings).min(LOGIN_MAX_DELAY_MS);
        if now - last < delay {
            return Some((
                last + delay - now,
                "too many failed log-ins for this account from this address",
            ));
        }
    }
    None
}

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

    /// Admins reach every centre; staff only their own. Another centre's
    /// ids are answered 404, exactly as ids that do not exist, so that they
    /// cannot be probed.
    pub fn require_center(&self, center_id: i64) -> Result<(), AppError> {
        if self.is_admin() || self.center_id == Some(center_id) {
            Ok(())
        } else {
            Err(AppError::NotFound)
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
        // The scheme's name is case-insensitive (RFC 7235).
        let token = auth
            .trim_start()
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .ok_or(AppError::Unauthorized)?
            .1
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
    let pair_key = throttle_key("pair", &format!("{email}\n{client}"));
    let client_key = throttle_key("client", client);
    let pair = store.failures(&pair_key).await?;
    let client_failures = store.failures(&client_key).await?;
    if let Some((wait_ms, cause)) = login_wait(pair, client_failures, now) {
        crate::metrics::add(
            "standby_shed_requests_total",
            &[("reason", "login_throttle")],
            1.0,
        );
        let retry_after = u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1);
        return Err(AppError::TooManyRequests { retry_after, cause });
    }
    let user = store.user_by_email(&email).await?;
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.as_str())
        .unwrap_or(DUMMY_HASH.as_str());
    let password_ok = verify_password(password, hash);
    let Some(user) = user.filter(|_| password_ok) else {
        // Only failures count, per account and address, and per address.
        store.add_failure(&pair_key, LOGIN_WINDOW_MS, now).await?;
        store.add_failure(&client_key, LOGIN_WINDOW_MS, now).await?;
        return Err(AppError::Unauthorized);
    };
    if pair.is_some() {
        store.clear_failures(&pair_key).await?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_failures_never_wait() {
        assert_eq!(login_wait(None, None, 1_000_000), None);
        assert_eq!(
            login_wait(Some((2, 999_999)), Some((49, 999_999)), 1_000_000),
            None
        );
    }

    #[test]
    fn the_delay_grows_with_each_failure_and_is_capped() {
        let now = 10_000_000;
        let wait = |count| login_wait(Some((count, now)), None, now).map(|w| w.0);
        assert_eq!(wait(3), Some(1_000));
        assert_eq!(wait(4), Some(2_000));
        assert_eq!(wait(5), Some(4_000));
        assert_eq!(wait(12), Some(512_000));
        assert_eq!(wait(13), Some(LOGIN_MAX_DELAY_MS));
        assert_eq!(wait(1_000), Some(LOGIN_MAX_DELAY_MS));
        // Once the delay has run, the next try goes through.
        assert_eq!(login_wait(Some((4, now)), None, now + 2_000), None);
        assert_eq!(
            login_wait(Some((4, now)), None, now + 1_999),
            Some((1, login_wait(Some((4, now)), None, now).unwrap().1))
        );
    }

    #[test]
    fn an_address_failing_across_accounts_is_refused_for_a_while() {
        let now = 10_000_000;
        let (wait, cause) =
            login_wait(None, Some((LOGIN_LIMIT_PER_CLIENT, now - 60_000)), now).unwrap();
        assert_eq!(wait, LOGIN_WINDOW_MS - 60_000);
        assert!(cause.contains("from this address"), "{cause}");
        // Forgotten once the window has passed since the last failure.
        assert_eq!(
            login_wait(
                Some((10, now - LOGIN_WINDOW_MS)),
                Some((500, now - LOGIN_WINDOW_MS)),
                now
            ),
            None
        );
    }
}
