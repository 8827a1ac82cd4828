//! Centres, vaccines, deliveries, stock and staff accounts.

use crate::app::AppState;
use crate::error::AppError;
use crate::services::auth::Staff;
use standby_domain::{Email, FieldError};
use standby_store::{CenterRecord, NewCenter, NewUser, Store, VaccineRecord};

/// Every field error of a staff request, as (field, sentence).
#[derive(Default)]
pub struct Problems(Vec<(String, String)>);

impl Problems {
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push((field.to_string(), message.into()));
    }

    pub fn into_result(self) -> Result<(), AppError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(self.0))
        }
    }
}

pub fn text_field(p: &mut Problems, field: &str, value: Option<&str>, max: usize) -> String {
    let v = value.unwrap_or("").trim();
    if v.is_empty() {
        p.add(field, "required");
    } else if v.chars().count() > max {
        p.add(field, format!("longer than {max} characters"));
    } else if v.chars().any(char::is_control) {
        p.add(field, "contains control characters");
    }
    v.to_string()
}

pub async fn create_center(
    state: &AppState,
    staff: &Staff,
    name: Option<&str>,
    address: Option<&str>,
    postal: Option<&str>,
    tz: Option<&str>,
    quiet_hours: Option<&str>,
) -> Result<CenterRecord, AppError> {
    staff.require_admin()?;
    let mut p = Problems::default();
    let quiet_hours = match quiet_hours.map(standby_domain::schedule::QuietHours::parse) {
        None => None,
        Some(Ok(None)) => Some("none".to_string()),
        Some(Ok(Some(q))) => Some(q.to_text()),
        Some(Err(why)) => {
            p.add(
                "quiet_hours",
                format!("{why}; expected HH:MM-HH:MM or none"),
            );
            None
        }
    };
    let c = NewCenter {
        name: text_field(&mut p, "name", name, 200),
        address: text_field(&mut p, "address", address, 300),
        postal_code: text_field(&mut p, "postal_code", postal, 20),
        time_zone: text_field(&mut p, "time_zone", tz, 64),
        quiet_hours,
    };
    if !c.time_zone.is_empty() && jiff::tz::TimeZone::get(&c.time_zone).is_err() {
        p.add("time_zone", "not an IANA time zone such as Europe/Brussels");
    }
    p.into_result()?;
    let center = state
        .store
        .create_center(&c, &staff.actor(), state.clock.now_ms())
        .await?;
    state.forget_centers();
    Ok(center)
}

pub async fn create_vaccine(
    state: &AppState,
    staff: &Staff,
    code: Option<&str>,
    name: Option<&str>,
    min_age: Option<i64>,
    max_age: Option<i64>,
) -> Result<VaccineRecord, AppError> {
    staff.require_admin()?;
    let mut p = Problems::default();
    let code = text_field(&mut p, "code", code, 20);
    if !code.is_empty()
        && !code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        p.add("code", "letters, digits, - and _ only");
    }
    let name = text_field(&mut p, "name", name, 200);
    let min_age = min_age.unwrap_or(0);
    let max_age = max_age.unwrap_or(120);
    if !(0..=130).contains(&min_age) {
        p.add("min_age", "must be from 0 to 130");
    }
    if !(0..=130).contains(&max_age) || max_age < min_age {
        p.add("max_age", "must be from min_age to 130");
    }
    p.into_result()?;
    let v = VaccineRecord {
        code,
        name,
        min_age,
        max_age,
    };
    match state
        .store
        .create_vaccine(&v, &staff.actor(), state.clock.now_ms())
        .await
    {
        Ok(()) => Ok(v),
        Err(standby_store::StoreError::Conflict(_)) => Err(AppError::Conflict {
            code: "vaccine_exists",
            message: "a vaccine with this code exists".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

pub async fn known_center(
    state: &AppState,
    staff: &Staff,
    center_id: i64,
) -> Result<CenterRecord, AppError> {
    // Staff of another centre get the 404 of a centre that does not exist.
    staff.require_center(center_id)?;
    state
        .store
        .center(center_id)
        .await?
        .ok_or(AppError::NotFound)
}

async fn known_vaccine(state: &AppState, p: &mut Problems, code: &str) -> Option<VaccineRecord> {
    let v = state
        .store
        .list_vaccines()
        .await
        .ok()?
        .into_iter()
        .find(|v| v.code == code);
    if v.is_none() {
        p.add("vaccine", "unknown vaccine code");
    }
    v
}

pub fn doses_field(p: &mut Problems, doses: Option<i64>) -> i64 {
    match doses {
        Some(n) if (1..=1_000_000).contains(&n) => n,
        Some(_) => {
            p.add("doses", "must be a whole number from 1 to 1000000");
            0
        }
        None => {
            p.add("doses", "required");
            0
        }
    }
}

pub async fn record_delivery(
    state: &AppState,
    staff: &Staff,
    center_id: i64,
    vaccine: Option<&str>,
    doses: Option<i64>,
) -> Result<(), AppError> {
    known_center(state, staff, center_id).await?;
    let mut p = Problems::default();
    let code = text_field(&mut p, "vaccine", vaccine, 20);
    let doses = doses_field(&mut p, doses);
    if !code.is_empty() {
        known_vaccine(state, &mut p, &code).await;
    }
    p.into_result()?;
    state
        .store
        .record_delivery(
            center_id,
            &code,
            doses,
            &staff.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(())
}

pub async fn adjust_stock(
    state: &AppState,
    staff: &Staff,
    center_id: i64,
    vaccine: Option<&str>,
    kind: Option<&str>,
    doses: Option<i64>,
) -> Result<(), AppError> {
    known_center(state, staff, center_id).await?;
    let mut p = Problems::default();
    let code = text_field(&mut p, "vaccine", vaccine, 20);
    let doses = doses_field(&mut p, doses);
    let kind = kind.unwrap_or("");
    if kind != "wasted" && kind != "returned" {
        p.add("kind", "must be wasted or returned");
    }
    p.into_result()?;
    match state
        .store
        .adjust_stock(
            center_id,
            &code,
            kind,
            doses,
            &staff.actor(),
            state.clock.now_ms(),
        )
        .await
    {
        Err(standby_store::StoreError::Conflict(_)) => Err(AppError::Conflict {
            code: "insufficient_stock",
            message: "more doses than the unreserved stock".into(),
        }),
        other => Ok(other?),
    }
}

pub async fn create_user(
    state: &AppState,
    staff: &Staff,
    email: Option<&str>,
    password: Option<&str>,
    role: Option<&str>,
    center: Option<i64>,
) -> Result<i64, AppError> {
    staff.require_admin()?;
    let mut p = Problems::default();
    let email = match Email::parse(email.unwrap_or("")) {
        Ok(e) => e.as_str().to_lowercase(),
        Err(FieldError::Required) => {
            p.add("email", "required");
            String::new()
        }
        Err(_) => {
            p.add("email", "not a valid e-mail address");
            String::new()
        }
    };
    let password = password.unwrap_or("");
    if password.chars().count() < 10 {
        p.add("password", "at least 10 characters");
    }
    let role = role.unwrap_or("");
    match (role, center) {
        ("admin", None) => {}
        ("admin", Some(_)) => p.add("center", "an admin belongs to no centre"),
        ("staff", Some(c)) => {
            if state.store.center(c).await?.is_none() {
                p.add("center", "unknown centre");
            }
        }
        ("staff", None) => p.add("center", "required for staff"),
        _ => p.add("role", "must be admin or staff"),
    }
    p.into_result()?;
    let user = NewUser {
        email,
        password_hash: crate::security::hash_password(password)?,
        role: role.into(),
        center_id: center,
    };
    match state
        .store
        .create_user(&user, &staff.actor(), state.clock.now_ms())
        .await
    {
        Ok(id) => Ok(id),
        Err(standby_store::StoreError::Conflict(_)) => Err(AppError::Conflict {
            code: "user_exists",
            message: "a user with this e-mail exists".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

pub fn store(state: &AppState) -> &dyn Store {
    state.store.as_ref()
}
