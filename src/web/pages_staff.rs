//! Staff pages (session cookie + CSRF token in every form) and the
//! invitation page `/i/{token}`.

// Handlers answer early with a ready response (a redirect to the log-in page,
// an error page); that is what `Err` carries here.
#![allow(clippy::result_large_err)]

use super::extract::{FormBody, Lang, client_ip, peer_addr};
use crate::app::AppState;
use crate::error::{AppError, PageError};
use crate::i18n::{Tr, t};
use crate::services::auth::{self, SESSION_COOKIE, Staff};
use crate::services::engine::{self, OfferInput};
use crate::services::messages::window_text;
use crate::services::staff;
use askama::Template;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use standby_domain::Language;
use standby_store::{
    CenterRecord, InvitationCounts, OfferRecord, StockRecord, Store, TokenPurpose, UserSummary,
    VaccineRecord,
};

type Page = Result<Response, Response>;

fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => AppError::Internal(anyhow::anyhow!("template failed: {e}")).into_response(),
    }
}

fn page_err(lang: Language) -> impl Fn(AppError) -> Response {
    move |e| match e {
        AppError::Unauthorized => Redirect::to("/login").into_response(),
        other => PageError(other, lang).into_response(),
    }
}

/// Signed in, or sent to the log-in page.
fn need(staff: Result<Staff, AppError>, lang: Language) -> Result<Staff, Response> {
    staff.map_err(page_err(lang))
}

fn csrf_ok(staff: &Staff, form: &FormBody, lang: Language) -> Result<(), Response> {
    staff
        .check_csrf(form.get("csrf").as_deref())
        .map_err(page_err(lang))
}

#[derive(Template)]
#[template(path = "staff_login.html")]
struct LoginPage {
    t: Tr,
    error: String,
}

pub async fn login_page(Lang(lang): Lang) -> Response {
    render(
        StatusCode::OK,
        &LoginPage {
            t: Tr(lang),
            error: String::new(),
        },
    )
}

pub async fn login_submit(State(state): State<AppState>, Lang(lang): Lang, req: Request) -> Page {
    let (parts, body) = req.into_parts();
    let ip = client_ip(
        &parts.headers,
        peer_addr(&parts),
        &state.config.trusted_proxies,
    )
    .map(|i| i.to_string())
    .unwrap_or_default();
    let form = FormBody::from_request(Request::from_parts(parts, body), &state)
        .await
        .map_err(page_err(lang))?;
    let email = form.get("email").unwrap_or_default();
    let password = form.get("password").unwrap_or_default();
    match auth::log_in(&state, &email, &password, &ip, TokenPurpose::Session).await {
        Ok(signed) => {
            let secure = if state.config.public_url.starts_with("https://") {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                signed.token,
                auth::TOKEN_LIFETIME_MS / 1000
            );
            let mut resp = Redirect::to("/staff").into_response();
            resp.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_str(&cookie)
                    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())?,
            );
            Ok(resp)
        }
        Err(AppError::Unauthorized) => Ok(render(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                t: Tr(lang),
                error: t(lang, "staff.bad_login"),
            },
        )),
        Err(e) => Err(PageError(e, lang).into_response()),
    }
}

pub async fn logout(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
    form: Result<FormBody, AppError>,
) -> Page {
    let staff = need(staff, lang)?;
    let form = form.map_err(page_err(lang))?;
    csrf_ok(&staff, &form, lang)?;
    auth::log_out(&state, &staff)
        .await
        .map_err(page_err(lang))?;
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("standby_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(resp)
}

#[derive(Template)]
#[template(path = "staff_home.html")]
struct HomePage {
    t: Tr,
    admin: bool,
    csrf: String,
    notice: String,
    errors: Vec<(String, String)>,
    centers: Vec<CenterRecord>,
}

pub async fn home(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
) -> Page {
    let staff = need(staff, lang)?;
    if let (false, Some(c)) = (staff.is_admin(), staff.center_id) {
        return Ok(Redirect::to(&format!("/staff/centers/{c}")).into_response());
    }
    let centers = state
        .store
        .list_centers()
        .await
        .map_err(|e| page_err(lang)(e.into()))?;
    Ok(render(
        StatusCode::OK,
        &HomePage {
            t: Tr(lang),
            admin: staff.is_admin(),
            csrf: staff.csrf.clone().unwrap_or_default(),
            notice: String::new(),
            errors: Vec::new(),
            centers,
        },
    ))
}

pub struct ApptRow {
    id: i64,
    name: String,
    window: String,
    vaccine: String,
    status: String,
}

#[derive(Template)]
#[template(path = "staff_center.html")]
struct CenterPage {
    t: Tr,
    admin: bool,
    csrf: String,
    notice: String,
    errors: Vec<(String, String)>,
    center: CenterRecord,
    stock: Vec<StockRecord>,
    vaccines: Vec<VaccineRecord>,
    offers: Vec<(OfferRecord, InvitationCounts)>,
    appointments: Vec<ApptRow>,
    date: String,
    q: String,
}

#[derive(serde::Deserialize, Default)]
pub struct CenterQuery {
    date: Option<String>,
    q: Option<String>,
    saved: Option<String>,
}

async fn center_page_for(
    state: &AppState,
    lang: Language,
    staff: &Staff,
    id: i64,
    q: CenterQuery,
    errors: Vec<(String, String)>,
) -> Page {
    let err = page_err(lang);
    let center = staff::known_center(state, staff, id).await.map_err(&err)?;
    let store: &dyn Store = state.store.as_ref();
    let tz = jiff::tz::TimeZone::get(&center.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let date = q
        .date
        .clone()
        .filter(|d| d.parse::<jiff::civil::Date>().is_ok())
        .unwrap_or_else(|| state.clock.now().to_zoned_datetime(tz).date().to_string());
    let search = q.q.clone().unwrap_or_default();
    let appts = if search.trim().is_empty() {
        engine::appointments_on(state, staff, id, Some(&date)).await
    } else {
        engine::search_appointments(state, staff, id, &search).await
    };
    let appointments = appts
        .map_err(&err)?
        .into_iter()
        .map(|a| ApptRow {
            id: a.id,
            name: format!(
                "{} {}",
                a.first_name.clone().unwrap_or_default(),
                a.last_name.clone().unwrap_or_default()
            ),
            window: window_text(a.starts_at, a.ends_at, &center.time_zone),
            vaccine: a.vaccine.clone(),
            status: a.status.clone(),
        })
        .collect();
    let since = state.clock.now_ms() - 24 * 3600 * 1000;
    let page = CenterPage {
        t: Tr(lang),
        admin: staff.is_admin(),
        csrf: staff.csrf.clone().unwrap_or_default(),
        notice: if q.saved.is_some() {
            t(lang, "staff.saved")
        } else {
            String::new()
        },
        stock: store.stock(id).await.map_err(|e| err(e.into()))?,
        vaccines: store.list_vaccines().await.map_err(|e| err(e.into()))?,
        offers: store
            .offers_of_center(id, since)
            .await
            .map_err(|e| err(e.into()))?,
        appointments,
        date,
        q: search,
        center,
        errors: errors.clone(),
    };
    Ok(render(
        if errors.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        },
        &page,
    ))
}

pub async fn center(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
    Path(id): Path<i64>,
    Query(q): Query<CenterQuery>,
) -> Page {
    let staff = need(staff, lang)?;
    center_page_for(&state, lang, &staff, id, q, Vec::new()).await
}

fn num(form: &FormBody, k: &str) -> Option<i64> {
    form.get(k).and_then(|v| v.trim().parse().ok())
}

/// Runs a staff form action: CSRF first, then the action; validation errors
/// re-render the centre page, success goes back to it.
async fn center_action<F, Fut>(
    state: &AppState,
    lang: Language,
    staff: Result<Staff, AppError>,
    id: i64,
    form: Result<FormBody, AppError>,
    action: F,
) -> Page
where
    F: FnOnce(Staff, FormBody) -> Fut,
    Fut: std::future::Future<Output = Result<(), AppError>>,
{
    let staff = need(staff, lang)?;
    let form = form.map_err(page_err(lang))?;
    csrf_ok(&staff, &form, lang)?;
    match action(staff.clone(), form).await {
        Ok(()) => Ok(Redirect::to(&format!("/staff/centers/{id}?saved=1")).into_response()),
        Err(AppError::Validation(errors)) => {
            center_page_for(state, lang, &staff, id, CenterQuery::default(), errors).await
        }
        Err(AppError::Conflict { code, message }) => {
            center_page_for(
                state,
                lang,
                &staff,
                id,
                CenterQuery::default(),
                vec![(code.to_string(), message)],
            )
            .await
        }
        Err(e) => Err(page_err(lang)(e)),
    }
}

pub async fn delivery(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
    Path(id): Path<i64>,
    form: Result<FormBody, AppError>,
) -> Page {
    let st = state.clone();
    center_action(&state, lang, staff, id, form, |staff, f| async move {
        staff::record_delivery(
            &st,
            &staff,
            id,
            f.get("vaccine").as_deref(),
            num(&f, "doses"),
        )
        .await
    })
    .await
}

pub async fn adjust(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
    Path(id): Path<i64>,
    form: Result<FormBody, AppError>,
) -> Page {
    let st = state.clone();
    center_action(&state, lang, staff, id, form, |staff, f| async move {
        staff::adjust_stock(
            &st,
            &staff,
            id,
            f.get("vaccine").as_deref(),
            f.get("kind").as_deref(),
            num(&f, "doses"),
        )
        .await
    })
    .await
}

/// A `datetime-local` value read in the centre's time zone, as RFC 3339.
fn local_to_rfc3339(value: Option<String>, tz: &jiff::tz::TimeZone) -> Option<String> {
    let dt: jiff::civil::DateTime = value?.parse().ok()?;
    Some(
        dt.to_zoned_datetime(tz.clone())
            .ok()?
            .timestamp()
            .to_string(),
    )
}

pub async fn release(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
    Path(id): Path<i64>,
    form: Result<FormBody, AppError>,
) -> Page {
    let st = state.clone();
    center_action(&state, lang, staff, id, form, |staff, f| async move {
        let center = staff::known_center(&st, &staff, id).await?;
        let tz = jiff::tz::TimeZone::get(&center.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
        let starts = local_to_rfc3339(f.get("starts_at"), &tz)
            .unwrap_or_else(|| f.get("starts_at").unwrap_or_default());
        let ends = local_to_rfc3339(f.get("ends_at"), &tz)
            .unwrap_or_else(|| f.get("ends_at").unwrap_or_default());
        let vaccine = f.get("vaccine");
        let input = OfferInput {
            vaccine: vaccine.as_deref(),
            doses: num(&f, "doses"),
            starts_at: Some(&starts),
            ends_at: Some(&ends),
            response_seconds: num(&f, "response_minutes").map(|m| m * 60),
        };
        engine::release(&st, &staff, id, input).await.map(drop)
    })
    .await
}

#[derive(Template)]
#[template(path = "staff_offer.html")]
struct OfferPage {
    t: Tr,
    admin: bool,
    csrf: String,
    notice: String,
    errors: Vec<(String, String)>,
    offer: OfferRecord,
    window: String,
    counts: Vec<(String, i64)>,
}

pub async fn offer(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
    Path(id): Path<i64>,
) -> Page {
    let staff = need(staff, lang)?;
    let (o, c) = engine::offer_for(&state, &staff, id)
        .await
        .map_err(page_err(lang))?;
    let center = state
        .store
        .center(o.center_id)
        .await
        .map_err(|e| page_err(lang)(e.into()))?
        .ok_or_else(|| page_err(lang)(AppError::NotFound))?;
    let counts = [
        ("queued", c.queued),
        ("sent", c.sent),
        ("accepted", c.accepted),
        ("declined", c.declined),
        ("expired", c.expired),
        ("undeliverable", c.undeliverable),
        ("withdrawn", c.withdrawn),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), *n))
    .collect();
    let page = OfferPage {
        t: Tr(lang),
        admin: staff.is_admin(),
        csrf: staff.csrf.clone().unwrap_or_default(),
        notice: String::new(),
        errors: Vec::new(),
        window: window_text(o.starts_at, o.ends_at, &center.time_zone),
        offer: o,
        counts,
    };
    Ok(render(StatusCode::OK, &page))
}

pub async fn close_offer(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
    Path(id): Path<i64>,
    form: Result<FormBody, AppError>,
) -> Page {
    let staff = need(staff, lang)?;
    let form = form.map_err(page_err(lang))?;
    csrf_ok(&staff, &form, lang)?;
    let o = engine::close(&state, &staff, id)
        .await
        .map_err(page_err(lang))?;
    Ok(Redirect::to(&format!("/staff/centers/{}?saved=1", o.center_id)).into_response())
}

pub async fn appointment_status(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
    Path(id): Path<i64>,
    form: Result<FormBody, AppError>,
) -> Page {
    let staff = need(staff, lang)?;
    let form = form.map_err(page_err(lang))?;
    csrf_ok(&staff, &form, lang)?;
    let a = engine::set_appointment_status(&state, &staff, id, form.get("status").as_deref())
        .await
        .map_err(page_err(lang))?;
    // Back to the check-in list of that appointment's day.
    let tz = state
        .store
        .center(a.center_id)
        .await
        .ok()
        .flatten()
        .and_then(|c| jiff::tz::TimeZone::get(&c.time_zone).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let day = jiff::Timestamp::from_millisecond(a.starts_at)
        .map(|t| t.to_zoned_datetime(tz).date().to_string())
        .unwrap_or_default();
    Ok(Redirect::to(&format!(
        "/staff/centers/{}?saved=1&date={day}#checkin",
        a.center_id
    ))
    .into_response())
}

#[derive(Template)]
#[template(path = "staff_admin.html")]
struct AdminPage {
    t: Tr,
    admin: bool,
    csrf: String,
    notice: String,
    errors: Vec<(String, String)>,
    centers: Vec<CenterRecord>,
    vaccines: Vec<VaccineRecord>,
    users: Vec<UserSummary>,
}

async fn admin_page_for(
    state: &AppState,
    lang: Language,
    staff: &Staff,
    notice: String,
    errors: Vec<(String, String)>,
) -> Page {
    let err = page_err(lang);
    staff.require_admin().map_err(&err)?;
    let store: &dyn Store = state.store.as_ref();
    let page = AdminPage {
        t: Tr(lang),
        admin: true,
        csrf: staff.csrf.clone().unwrap_or_default(),
        notice,
        centers: store.list_centers().await.map_err(|e| err(e.into()))?,
        vaccines: store.list_vaccines().await.map_err(|e| err(e.into()))?,
        users: store.list_users().await.map_err(|e| err(e.into()))?,
        errors: errors.clone(),
    };
    Ok(render(
        if errors.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        },
        &page,
    ))
}

pub async fn admin(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
    Query(q): Query<CenterQuery>,
) -> Page {
    let staff = need(staff, lang)?;
    let notice = if q.saved.is_some() {
        t(lang, "staff.saved")
    } else {
        String::new()
    };
    admin_page_for(&state, lang, &staff, notice, Vec::new()).await
}

async fn admin_action<F, Fut>(
    state: &AppState,
    lang: Language,
    staff: Result<Staff, AppError>,
    form: Result<FormBody, AppError>,
    action: F,
) -> Page
where
    F: FnOnce(Staff, FormBody) -> Fut,
    Fut: std::future::Future<Output = Result<(), AppError>>,
{
    let staff = need(staff, lang)?;
    let form = form.map_err(page_err(lang))?;
    csrf_ok(&staff, &form, lang)?;
    match action(staff.clone(), form).await {
        Ok(()) => Ok(Redirect::to("/staff/admin?saved=1").into_response()),
        Err(AppError::Validation(errors)) => {
            admin_page_for(state, lang, &staff, String::new(), errors).await
        }
        Err(AppError::Conflict { code, message }) => {
            admin_page_for(
                state,
                lang,
                &staff,
                String::new(),
                vec![(code.to_string(), message)],
            )
            .await
        }
        Err(e) => Err(page_err(lang)(e)),
    }
}

pub async fn admin_center(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
    form: Result<FormBody, AppError>,
) -> Page {
    let st = state.clone();
    admin_action(&state, lang, staff, form, |staff, f| async move {
        staff::create_center(
            &st,
            &staff,
            f.get("name").as_deref(),
            f.get("address").as_deref(),
            f.get("postal_code").as_deref(),
            f.get("time_zone").as_deref(),
            f.get("quiet_hours")
                .filter(|q| !q.trim().is_empty())
                .as_deref(),
        )
        .await
        .map(drop)
    })
    .await
}

pub async fn admin_vaccine(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
    form: Result<FormBody, AppError>,
) -> Page {
    let st = state.clone();
    admin_action(&state, lang, staff, form, |staff, f| async move {
        staff::create_vaccine(
            &st,
            &staff,
            f.get("code").as_deref(),
            f.get("name").as_deref(),
            num(&f, "min_age"),
            num(&f, "max_age"),
        )
        .await
        .map(drop)
    })
    .await
}

pub async fn admin_user(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
    form: Result<FormBody, AppError>,
) -> Page {
    let st = state.clone();
    admin_action(&state, lang, staff, form, |staff, f| async move {
        staff::create_user(
            &st,
            &staff,
            f.get("email").as_deref(),
            f.get("password").as_deref(),
            f.get("role").as_deref(),
            num(&f, "center"),
        )
        .await
        .map(drop)
    })
    .await
}

#[derive(Template)]
#[template(path = "staff_audit.html")]
struct AuditPage {
    t: Tr,
    admin: bool,
    csrf: String,
    notice: String,
    errors: Vec<(String, String)>,
    rows: Vec<(String, String, String, String, String)>,
}

pub async fn audit(
    State(state): State<AppState>,
    Lang(lang): Lang,
    staff: Result<Staff, AppError>,
) -> Page {
    let staff = need(staff, lang)?;
    staff.require_admin().map_err(page_err(lang))?;
    let store: &dyn Store = state.store.as_ref();
    let rows = store
        .audit_trail(500)
        .await
        .map_err(|e| page_err(lang)(e.into()))?
        .into_iter()
        .map(|a| {
            (
                engine::rfc3339(a.at),
                a.actor,
                a.action,
                format!("{} {}", a.subject_type, a.subject_id),
                a.detail,
            )
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &AuditPage {
            t: Tr(lang),
            admin: true,
            csrf: staff.csrf.clone().unwrap_or_default(),
            notice: String::new(),
            errors: Vec::new(),
            rows,
        },
    ))
}

#[derive(Template)]
#[template(path = "invite.html")]
struct InvitePage {
    t: Tr,
    token: String,
    center: String,
    address: String,
    window: String,
    deadline: String,
    open: bool,
    notice: String,
}

async fn invite_page_for(
    state: &AppState,
    lang: Language,
    token: String,
    notice: String,
    status: StatusCode,
) -> Page {
    let inv = engine::invitation(state, &token)
        .await
        .map_err(page_err(lang))?;
    let deadline = inv
        .expires_at
        .map(|e| {
            window_text(e, e, &inv.time_zone)
                .split(' ')
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let page = InvitePage {
        t: Tr(lang),
        center: inv.center_name.clone(),
        address: inv.center_address.clone(),
        window: window_text(inv.starts_at, inv.ends_at, &inv.time_zone),
        open: matches!(inv.status.as_str(), "queued" | "sent")
            && inv.expires_at.is_none_or(|e| e > state.clock.now_ms()),
        deadline: deadline.split('–').next().unwrap_or("").to_string(),
        token,
        notice,
    };
    Ok(render(status, &page))
}

pub async fn invite(
    State(state): State<AppState>,
    Lang(lang): Lang,
    Path(token): Path<String>,
) -> Page {
    invite_page_for(&state, lang, token, String::new(), StatusCode::OK).await
}

pub async fn invite_accept(
    State(state): State<AppState>,
    Lang(lang): Lang,
    Path(token): Path<String>,
) -> Page {
    let (notice, status) = match engine::accept(&state, &token).await {
        Ok(_) => (t(lang, "invite.booked"), StatusCode::OK),
        Err(AppError::Conflict {
            code: "offer_filled",
            ..
        }) => (t(lang, "invite.filled"), StatusCode::CONFLICT),
        Err(AppError::Conflict { .. }) => (t(lang, "invite.answered"), StatusCode::CONFLICT),
        Err(AppError::Gone(_)) => (t(lang, "invite.expired"), StatusCode::GONE),
        Err(AppError::InvitationClosed) => (t(lang, "invitation.closed"), StatusCode::GONE),
        Err(e) => return Err(page_err(lang)(e)),
    };
    invite_page_for(&state, lang, token, notice, status).await
}

pub async fn invite_decline(
    State(state): State<AppState>,
    Lang(lang): Lang,
    Path(token): Path<String>,
) -> Page {
    let (notice, status) = match engine::decline(&state, &token).await {
        Ok(()) => (t(lang, "invite.declined"), StatusCode::OK),
        Err(AppError::Conflict { .. }) => (t(lang, "invite.answered"), StatusCode::CONFLICT),
        Err(AppError::Gone(_)) => (t(lang, "invite.expired"), StatusCode::GONE),
        Err(e) => return Err(page_err(lang)(e)),
    };
    invite_page_for(&state, lang, token, notice, status).await
}
