//! Server-rendered pages. They work without JavaScript; the only script is
//! the busy page's self-retry, served from /static (the CSP forbids inline).

use super::extract::{FormBody, Lang};
use crate::app::AppState;
use crate::error::{AppError, PageError};
use crate::i18n::{Tr, t};
use crate::services::registrant::{self, Confirmation, MeChangeInput};
use crate::services::signup;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use standby_domain::availability::fmt_hhmm;
use standby_domain::registration::RawSlot;
use standby_domain::{Language, RegistrationInput, Weekday};
use std::collections::HashMap;

type PageResult = Result<Response, PageError>;

fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => AppError::Internal(anyhow::anyhow!("template failed: {e}")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    t: Tr,
    message: String,
}

impl ErrorPage {
    pub fn new(lang: Language, message: String) -> Self {
        ErrorPage {
            t: Tr(lang),
            message,
        }
    }
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        render(StatusCode::OK, &self)
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    t: Tr,
    title: String,
    text: String,
    link: String,
    link_label: String,
}

fn message(lang: Language, title: &str, text: &str) -> MessagePage {
    MessagePage {
        t: Tr(lang),
        title: t(lang, title),
        text: t(lang, text),
        link: String::new(),
        link_label: String::new(),
    }
}

pub struct FieldView {
    name: &'static str,
    label: String,
    hint: String,
    error: String,
    value: String,
    kind: &'static str,
    autocomplete: &'static str,
    inputmode: &'static str,
    required: bool,
}

pub struct CenterOption {
    id: i64,
    label: String,
    checked: bool,
}

pub struct DayRow {
    key: &'static str,
    label: String,
    from: String,
    to: String,
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    t: Tr,
    values: HashMap<String, String>,
    error_map: HashMap<String, String>,
    errors: Vec<(String, String)>,
    countries: Vec<(String, String)>,
    titles: Vec<(String, String)>,
    languages: Vec<(String, String)>,
    fields: Vec<FieldView>,
    centers: Vec<CenterOption>,
    days: Vec<DayRow>,
    consent: bool,
}

impl SignupPage {
    fn err(&self, name: &str) -> &str {
        self.error_map.get(name).map(String::as_str).unwrap_or("")
    }

    fn val(&self, name: &str) -> &str {
        self.values.get(name).map(String::as_str).unwrap_or("")
    }
}

fn language_options() -> Vec<(String, String)> {
    [
        ("fr", "Français"),
        ("nl", "Nederlands"),
        ("de", "Deutsch"),
        ("en", "English"),
    ]
    .iter()
    .map(|(c, l)| (c.to_string(), l.to_string()))
    .collect()
}

fn day_rows(lang: Language, form: Option<&FormBody>, slots: &[(i64, i64, i64)]) -> Vec<DayRow> {
    Weekday::ALL
        .iter()
        .map(|d| {
            let key = d.as_str();
            let (from, to) = match form {
                Some(f) => (
                    f.get(&format!("avail_{key}_from")).unwrap_or_default(),
                    f.get(&format!("avail_{key}_to")).unwrap_or_default(),
                ),
                None => slots
                    .iter()
                    .find(|(day, _, _)| *day == i64::from(d.index()))
                    .map(|(_, f, t)| (fmt_hhmm(*f as i16), fmt_hhmm(*t as i16)))
                    .unwrap_or_default(),
            };
            DayRow {
                key,
                label: t(lang, &format!("day.{key}")),
                from,
                to,
            }
        })
        .collect()
}

/// Availability from the form's per-day from/to boxes; a day with both empty is skipped.
fn form_slots(form: &FormBody) -> Vec<RawSlot> {
    // The first value given for each day's `avail_{day}_from` and
    // `avail_{day}_to`, found in one pass over the form (every form sign-up
    // comes through here).
    let mut given = [[None::<&str>; 2]; Weekday::ALL.len()];
    for (name, value) in &form.0 {
        let Some((day, end)) = name
            .strip_prefix("avail_")
            .and_then(|rest| rest.rsplit_once('_'))
        else {
            continue;
        };
        let which = match end {
            "from" => 0,
            "to" => 1,
            _ => continue,
        };
        if let Some(i) = Weekday::ALL.iter().position(|d| d.as_str() == day) {
            given[i][which].get_or_insert(value.as_str());
        }
    }
    Weekday::ALL
        .iter()
        .zip(given)
        .filter_map(|(d, [from, to])| {
            let (from, to) = (from.unwrap_or_default(), to.unwrap_or_default());
            (!from.trim().is_empty() || !to.trim().is_empty()).then(|| RawSlot {
                day: d.as_str().into(),
                from: from.into(),
                to: to.into(),
            })
        })
        .collect()
}

/// The page after a sign-up: the same for everyone reading one language, so
/// rendered once per language (every form sign-up is answered with it).
fn done_page(lang: Language) -> Response {
    static PAGES: std::sync::LazyLock<Vec<(Language, Option<bytes::Bytes>)>> =
        std::sync::LazyLock::new(|| {
            Language::ALL
                .iter()
                .map(|&l| {
                    let page = message(l, "done.title", "done.text").render().ok();
                    (l, page.map(bytes::Bytes::from))
                })
                .collect()
        });
    match PAGES.iter().find(|(l, _)| *l == lang) {
        Some((_, Some(page))) => (StatusCode::OK, Html(page.clone())).into_response(),
        _ => render(StatusCode::OK, &message(lang, "done.title", "done.text")),
    }
}

async fn signup_page(
    state: &AppState,
    lang: Language,
    form: Option<&FormBody>,
    errors: Vec<(String, String)>,
) -> Result<SignupPage, AppError> {
    let centers = state.centers().await?;
    Ok(signup_page_with(state, lang, form, errors, &centers))
}

fn signup_page_with(
    state: &AppState,
    lang: Language,
    form: Option<&FormBody>,
    errors: Vec<(String, String)>,
    centers: &[standby_store::CenterRecord],
) -> SignupPage {
    let tr = Tr(lang);
    let mut values: HashMap<String, String> = form
        .map(|f| f.0.iter().cloned().collect())
        .unwrap_or_default();
    values
        .entry("country".into())
        .or_insert_with(|| state.config.country.as_str().into());
    values
        .entry("language".into())
        .or_insert_with(|| lang.as_str().into());
    let error_map: HashMap<String, String> = errors.iter().cloned().collect();
    let field =
        |name: &'static str, kind, autocomplete, inputmode, required, hint: &str| FieldView {
            name,
            label: tr.s(&format!("field.{name}")),
            hint: if hint.is_empty() {
                String::new()
            } else {
                tr.s(hint)
            },
            error: error_map.get(name).cloned().unwrap_or_default(),
            value: values.get(name).cloned().unwrap_or_default(),
            kind,
            autocomplete,
            inputmode,
            required,
        };
    let fields = vec![
        field(
            "national_id",
            "text",
            "off",
            "numeric",
            true,
            "hint.national_id",
        ),
        field("first_name", "text", "given-name", "text", true, ""),
        field("last_name", "text", "family-name", "text", true, ""),
        field("email", "email", "email", "email", true, ""),
        field("phone", "tel", "tel", "tel", false, "hint.phone"),
    ];
    let chosen: Vec<String> = form.map(|f| f.all("centers")).unwrap_or_default();
    let centers = centers
        .iter()
        .map(|c| CenterOption {
            id: c.id,
            label: format!("{} ({})", c.name, c.address),
            checked: chosen.contains(&c.id.to_string()),
        })
        .collect();
    SignupPage {
        t: tr,
        countries: ["BE", "LU"]
            .iter()
            .map(|c| (c.to_string(), tr.s(&format!("country.{c}"))))
            .collect(),
        titles: ["", "mr", "ms", "mx"]
            .iter()
            .map(|c| {
                (
                    c.to_string(),
                    tr.s(&format!("title.{}", if c.is_empty() { "none" } else { c })),
                )
            })
            .collect(),
        languages: language_options(),
        fields,
        centers,
        days: day_rows(lang, form, &[]),
        consent: form.and_then(|f| f.get("consent")).is_some(),
        values,
        error_map,
        errors,
    }
}

pub async fn signup_form(State(state): State<AppState>, Lang(lang): Lang) -> PageResult {
    let centers = state
        .centers()
        .await
        .map_err(|e| PageError(e.into(), lang))?;
    let page = state.signup_form(lang, &centers, || {
        let page = signup_page_with(&state, lang, None, Vec::new(), &centers);
        page.render()
            .map_err(|e| AppError::Internal(anyhow::anyhow!("template failed: {e}")))
    });
    let page = page.map_err(|e| PageError(e, lang))?;
    Ok((StatusCode::OK, Html(page)).into_response())
}

#[derive(Template)]
#[template(path = "busy.html")]
struct BusyPage {
    t: Tr,
    retry_after: u64,
    pairs: Vec<(String, String)>,
}

pub async fn signup_submit(
    State(state): State<AppState>,
    Lang(lang): Lang,
    form: Result<FormBody, AppError>,
) -> PageResult {
    let form = form.map_err(|e| PageError(e, lang))?;
    // The page's language is the one the visitor was reading the form in.
    let lang = form
        .get("form_lang")
        .and_then(|l| Language::parse(&l))
        .unwrap_or(lang);
    let input = RegistrationInput {
        country: form.get("country"),
        national_id: form.get("national_id"),
        title: form.get("title"),
        first_name: form.get("first_name"),
        last_name: form.get("last_name"),
        email: form.get("email"),
        phone: form.get("phone"),
        language: form.get("language"),
        centers: form.all("centers"),
        availability: form_slots(&form),
        consent: form
            .get("consent")
            .is_some_and(|v| v == "on" || v == "true"),
        type_errors: Default::default(),
    };
    match signup::sign_up(&state, input, lang).await {
        Ok(()) => Ok(done_page(lang)),
        Err(AppError::Validation(errors)) => {
            let page = signup_page(&state, lang, Some(&form), errors)
                .await
                .map_err(|e| PageError(e, lang))?;
            Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
        Err(AppError::Overloaded { retry_after }) => {
            let page = BusyPage {
                t: Tr(lang),
                retry_after,
                pairs: form.0.clone(),
            };
            let mut resp = render(StatusCode::SERVICE_UNAVAILABLE, &page);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, retry_after.into());
            Ok(resp)
        }
        Err(e) => Err(PageError(e, lang)),
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    t: Tr,
    token: String,
}

pub async fn confirm_page(
    State(state): State<AppState>,
    Lang(lang): Lang,
    Path(token): Path<String>,
) -> PageResult {
    // Showing the page changes nothing: a mail scanner following the link confirms nobody.
    if registrant::confirm_link_known(&state, &token)
        .await
        .map_err(|e| PageError(e, lang))?
    {
        Ok(render(StatusCode::OK, &ConfirmPage { t: Tr(lang), token }))
    } else {
        Ok(render(
            StatusCode::NOT_FOUND,
            &message(lang, "error.title", "link.unknown"),
        ))
    }
}

pub async fn confirm_submit(
    State(state): State<AppState>,
    Lang(lang): Lang,
    Path(token): Path<String>,
) -> PageResult {
    let outcome = registrant::confirm(&state, &token)
        .await
        .map_err(|e| PageError(e, lang))?;
    Ok(match outcome {
        Confirmation::Confirmed { me_token } => {
            let mut page = message(lang, "confirmed.title", "confirmed.text");
            page.link = format!("/me/{me_token}");
            page.link_label = t(lang, "confirmed.manage");
            render(StatusCode::OK, &page)
        }
        Confirmation::AlreadyConfirmed => render(
            StatusCode::OK,
            &message(lang, "confirmed.title", "confirmed.already"),
        ),
        Confirmation::Expired => render(
            StatusCode::GONE,
            &message(lang, "error.title", "link.expired"),
        ),
        Confirmation::Unknown => render(
            StatusCode::NOT_FOUND,
            &message(lang, "error.title", "link.unknown"),
        ),
    })
}

#[derive(Template)]
#[template(path = "me.html")]
struct MePage {
    t: Tr,
    token: String,
    status: String,
    status_label: String,
    language: String,
    languages: Vec<(String, String)>,
    phone: String,
    centers: Vec<CenterOption>,
    days: Vec<DayRow>,
    saved: bool,
    errors: Vec<(String, String)>,
}

#[derive(serde::Deserialize)]
pub struct MeQuery {
    saved: Option<String>,
}

async fn me_page_for(
    state: &AppState,
    lang: Language,
    token: String,
    saved: bool,
    errors: Vec<(String, String)>,
) -> PageResult {
    let r = registrant::by_me_token(state, &token)
        .await
        .map_err(|e| PageError(e, lang))?;
    let centers = state
        .centers()
        .await
        .map_err(|e| PageError(e.into(), lang))?
        .iter()
        .map(|c| CenterOption {
            id: c.id,
            label: format!("{} ({})", c.name, c.address),
            checked: r.centers.contains(&c.id),
        })
        .collect();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = MePage {
        t: Tr(lang),
        token,
        status_label: t(lang, &format!("status.{}", r.status)),
        status: r.status.clone(),
        language: r.language.clone(),
        languages: language_options(),
        phone: r.phone.clone().unwrap_or_default(),
        centers,
        days: day_rows(lang, None, &r.availability),
        saved,
        errors,
    };
    Ok(render(status, &page))
}

pub async fn me_page(
    State(state): State<AppState>,
    Lang(lang): Lang,
    Path(token): Path<String>,
    Query(q): Query<MeQuery>,
) -> PageResult {
    me_page_for(&state, lang, token, q.saved.is_some(), Vec::new()).await
}

pub async fn me_submit(
    State(state): State<AppState>,
    Lang(lang): Lang,
    Path(token): Path<String>,
    form: Result<FormBody, AppError>,
) -> PageResult {
    let form = form.map_err(|e| PageError(e, lang))?;
    let r = registrant::by_me_token(&state, &token)
        .await
        .map_err(|e| PageError(e, lang))?;
    let result = match form.get("action").as_deref() {
        Some("save") => {
            let change = MeChangeInput {
                language: form.get("language"),
                centers: Some(form.all("centers")),
                availability: Some(form_slots(&form)),
                phone: Some(form.get("phone")),
                ..Default::default()
            };
            registrant::update(&state, &r, change, lang).await.map(drop)
        }
        Some("pause") => registrant::update(
            &state,
            &r,
            MeChangeInput {
                status: Some("paused".into()),
                ..Default::default()
            },
            lang,
        )
        .await
        .map(drop),
        Some("resume") => registrant::update(
            &state,
            &r,
            MeChangeInput {
                status: Some("waiting".into()),
                ..Default::default()
            },
            lang,
        )
        .await
        .map(drop),
        Some("withdraw") if form.get("really").is_some() => registrant::withdraw(&state, &r).await,
        Some("withdraw") => Err(AppError::Validation(vec![(
            "really".into(),
            t(lang, "err.must_accept"),
        )])),
        _ => Err(AppError::BadRequest("unknown action".into())),
    };
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/me/{token}?saved=1")).into_response()),
        Err(AppError::Validation(errors)) => me_page_for(&state, lang, token, false, errors).await,
        Err(e) => Err(PageError(e, lang)),
    }
}

#[derive(Template)]
#[template(path = "stats.html")]
struct StatsPage {
    t: Tr,
    rows: Vec<(&'static str, i64)>,
}

pub async fn stats_page(State(state): State<AppState>, Lang(lang): Lang) -> PageResult {
    let s = state
        .store
        .stats()
        .await
        .map_err(|e| PageError(e.into(), lang))?;
    let rows = vec![
        ("stats.registered", s.registered),
        ("stats.confirmed", s.confirmed),
        ("stats.waiting", s.waiting),
        ("stats.invited", s.invited),
        ("stats.booked", s.booked),
        ("stats.vaccinated", s.vaccinated),
        ("stats.doses_available", s.doses_available),
    ];
    Ok(render(StatusCode::OK, &StatsPage { t: Tr(lang), rows }))
}

#[derive(Template)]
#[template(path = "order.html")]
struct OrderPage {
    t: Tr,
    cap: String,
    quiet: Option<String>,
    silence: String,
}

/// `/order`: who is invited first and what a silence costs, in the
/// visitor's language, with this deployment's own figures.
pub async fn order_page(State(state): State<AppState>, Lang(lang): Lang) -> PageResult {
    let t = Tr(lang);
    let page = OrderPage {
        cap: t
            .s("order.cap")
            .replace("{per_day}", &state.config.invitations_per_day.to_string()),
        quiet: state.config.quiet_hours.map(|q| {
            t.s("order.quiet")
                .replace("{quiet}", &q.to_text().replace('-', " – "))
        }),
        silence: t
            .s("order.silence")
            .replace("{pause}", &state.config.pause_after_silences.to_string()),
        t,
    };
    Ok(render(StatusCode::OK, &page))
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/style.css"),
    )
        .into_response()
}

pub async fn retry_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/retry.js"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> FormBody {
        FormBody(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn availability_is_read_from_the_form_day_by_day() {
        let f = form(&[
            ("avail_wed_to", "12:00"),
            ("avail_mon_from", "08:00"),
            ("avail_mon_to", "10:00"),
            // A second value for a field: the first one given counts.
            ("avail_mon_from", "09:00"),
            ("avail_wed_from", "09:30"),
            // Blank on both ends: no slot that day.
            ("avail_tue_from", " "),
            ("avail_tue_to", ""),
            // Only one end given: a slot, for validation to report.
            ("avail_fri_to", "17:00"),
            ("avail_funday_from", "08:00"),
            ("avail_sat_until", "08:00"),
            ("other", "x"),
        ]);
        let slot = |day: &str, from: &str, to: &str| RawSlot {
            day: day.into(),
            from: from.into(),
            to: to.into(),
        };
        assert_eq!(
            form_slots(&f),
            vec![
                slot("mon", "08:00", "10:00"),
                slot("wed", "09:30", "12:00"),
                slot("fri", "", "17:00"),
            ]
        );
        assert!(form_slots(&form(&[])).is_empty());
    }

    #[test]
    fn the_page_after_a_sign_up_is_the_one_rendered_for_its_language() {
        for &lang in Language::ALL.iter() {
            let fresh = message(lang, "done.title", "done.text").render().unwrap();
            let resp = done_page(lang);
            assert_eq!(resp.status(), StatusCode::OK);
            let body = body_text(resp);
            assert_eq!(body, fresh);
        }
    }

    fn body_text(resp: Response) -> String {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(resp.into_body(), usize::MAX))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}
