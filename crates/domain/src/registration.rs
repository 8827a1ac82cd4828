//! A sign-up as it arrives, and the validated registration it becomes.

use crate::availability::{Availability, Slot, Weekday};
use crate::contact::{Email, Language, PersonName, Phone, Title};
use crate::national_id::{Country, NationalId, NationalIdError};
use jiff::civil::Date;
use std::collections::BTreeMap;

/// What is wrong with one field. The server turns it into a sentence in the
/// visitor's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("required")]
    Required,
    #[error("longer than {0} characters")]
    TooLong(usize),
    #[error("more than {0} entries")]
    TooMany(usize),
    #[error("contains control characters")]
    ControlCharacters,
    #[error("not a valid e-mail address")]
    InvalidEmail,
    #[error("not an international phone number")]
    InvalidPhone,
    #[error("not one of the allowed values")]
    InvalidChoice,
    #[error("not a day of the week")]
    InvalidDay,
    #[error("not a time HH:MM")]
    InvalidTime,
    #[error("the start is not before the end")]
    InvalidTimeRange,
    #[error("unknown centre")]
    UnknownCenter,
    #[error("must be accepted")]
    MustAccept,
    #[error("wrong type")]
    WrongType,
    #[error("{0}")]
    NationalId(#[from] NationalIdError),
}

impl FieldError {
    /// A stable snake_case code for clients and translations.
    pub fn code(self) -> &'static str {
        match self {
            FieldError::Required => "required",
            FieldError::TooLong(_) => "too_long",
            FieldError::TooMany(_) => "too_many",
            FieldError::ControlCharacters => "control_characters",
            FieldError::InvalidEmail => "invalid_email",
            FieldError::InvalidPhone => "invalid_phone",
            FieldError::InvalidChoice => "invalid_choice",
            FieldError::InvalidDay => "invalid_day",
            FieldError::InvalidTime => "invalid_time",
            FieldError::InvalidTimeRange => "invalid_time_range",
            FieldError::UnknownCenter => "unknown_center",
            FieldError::MustAccept => "must_accept",
            FieldError::WrongType => "wrong_type",
            FieldError::NationalId(NationalIdError::Empty) => "required",
            FieldError::NationalId(NationalIdError::Format) => "id_format",
            FieldError::NationalId(NationalIdError::Length) => "id_length",
            FieldError::NationalId(NationalIdError::Checksum) => "id_checksum",
            FieldError::NationalId(NationalIdError::InvalidDate) => "id_date",
            FieldError::NationalId(NationalIdError::FutureDate) => "id_future",
        }
    }
}

/// Every field error of one request, reported at once.
pub type FieldErrors = BTreeMap<&'static str, FieldError>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSlot {
    pub day: String,
    pub from: String,
    pub to: String,
}

/// The sign-up as received, from the JSON API or the HTML form. Fields whose
/// JSON type was wrong are already listed in `type_errors`.
#[derive(Debug, Clone, Default)]
pub struct RegistrationInput {
    pub country: Option<String>,
    pub national_id: Option<String>,
    pub title: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub language: Option<String>,
    pub centers: Vec<String>,
    pub availability: Vec<RawSlot>,
    pub consent: bool,
    pub type_errors: FieldErrors,
}

#[derive(Debug, Clone)]
pub struct NewRegistration {
    pub national_id: NationalId,
    pub title: Option<Title>,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub email: Email,
    pub phone: Option<Phone>,
    pub language: Language,
    pub centers: Vec<i64>,
    pub availability: Availability,
}

pub const MAX_CENTERS: usize = 100;

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

pub fn parse_centers(raw: &[String]) -> Result<Vec<i64>, FieldError> {
    if raw.len() > MAX_CENTERS {
        return Err(FieldError::TooMany(MAX_CENTERS));
    }
    let mut ids = raw
        .iter()
        .map(|s| s.trim().parse::<i64>().ok().filter(|&n| n > 0))
        .collect::<Option<Vec<_>>>()
        .ok_or(FieldError::InvalidChoice)?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

pub fn parse_availability(raw: &[RawSlot]) -> Result<Availability, FieldError> {
    if raw.len() > Availability::MAX_SLOTS {
        return Err(FieldError::TooMany(Availability::MAX_SLOTS));
    }
    let slots = raw
        .iter()
        .map(|r| {
            let day = Weekday::parse(&r.day).ok_or(FieldError::InvalidDay)?;
            Slot::new(day, &r.from, &r.to)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Availability::new(slots)
}

pub fn parse_phone(raw: &Option<String>) -> Result<Option<Phone>, FieldError> {
    non_empty(raw).map(Phone::parse).transpose()
}

pub fn parse_language(raw: &Option<String>) -> Result<Language, FieldError> {
    match non_empty(raw) {
        None => Ok(Language::default()),
        Some(s) => Language::parse(s).ok_or(FieldError::InvalidChoice),
    }
}

impl RegistrationInput {
    /// Validates every field and reports all errors at once.
    pub fn validate(
        &self,
        default_country: Country,
        today: Date,
    ) -> Result<NewRegistration, FieldErrors> {
        let mut errors = self.type_errors.clone();
        let mut check = |field: &'static str, r: Result<(), FieldError>| {
            if let Err(e) = r {
                errors.entry(field).or_insert(e);
            }
        };
        let country = match non_empty(&self.country) {
            None => Ok(default_country),
            Some(s) => Country::parse(s).ok_or(FieldError::InvalidChoice),
        };
        let national_id = match (&country, non_empty(&self.national_id)) {
            (_, None) => Err(FieldError::Required),
            (Ok(c), Some(s)) => NationalId::parse(*c, s, today).map_err(FieldError::from),
            (Err(_), Some(_)) => Err(FieldError::InvalidChoice),
        };
        let title = Title::parse(self.title.as_deref().unwrap_or(""));
        let first_name = PersonName::parse(self.first_name.as_deref().unwrap_or(""));
        let last_name = PersonName::parse(self.last_name.as_deref().unwrap_or(""));
        let email = Email::parse(self.email.as_deref().unwrap_or(""));
        let phone = parse_phone(&self.phone);
        let language = parse_language(&self.language);
        let centers = parse_centers(&self.centers);
        let availability = parse_availability(&self.availability);
        let consent = if self.consent {
            Ok(())
        } else {
            Err(FieldError::MustAccept)
        };

        check("country", country.map(drop));
        if country.is_ok() {
            // With an unknown country the number cannot be judged; the country error says it all.
            check(
                "national_id",
                national_id.as_ref().map(drop).map_err(|e| *e),
            );
        }
        check("title", title.map(drop));
        check("first_name", first_name.as_ref().map(drop).map_err(|e| *e));
        check("last_name", last_name.as_ref().map(drop).map_err(|e| *e));
        check("email", email.as_ref().map(drop).map_err(|e| *e));
        check("phone", phone.as_ref().map(drop).map_err(|e| *e));
        check("language", language.map(drop));
        check("centers", centers.as_ref().map(drop).map_err(|e| *e));
        check(
            "availability",
            availability.as_ref().map(drop).map_err(|e| *e),
        );
        check("consent", consent);

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(NewRegistration {
            national_id: national_id.expect("checked"),
            title: title.expect("checked"),
            first_name: first_name.expect("checked"),
            last_name: last_name.expect("checked"),
            email: email.expect("checked"),
            phone: phone.expect("checked"),
            language: language.expect("checked"),
            centers: centers.expect("checked"),
            availability: availability.expect("checked"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn valid() -> RegistrationInput {
        RegistrationInput {
            national_id: Some("85.07.30-033.28".into()),
            title: Some("ms".into()),
            first_name: Some("Anne".into()),
            last_name: Some("Dupont".into()),
            email: Some("anne@example.be".into()),
            phone: Some("+32 470 12 34 56".into()),
            language: Some("nl".into()),
            centers: vec!["2".into(), "1".into(), "2".into()],
            availability: vec![RawSlot {
                day: "mon".into(),
                from: "09:00".into(),
                to: "12:00".into(),
            }],
            consent: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_registration() {
        let r = valid().validate(Country::Be, date(2026, 11, 24)).unwrap();
        assert_eq!(r.national_id.country(), Country::Be);
        assert_eq!(r.language, Language::Nl);
        assert_eq!(r.centers, vec![1, 2]);
        assert_eq!(r.availability.slots().len(), 1);
        assert_eq!(r.phone.unwrap().as_str(), "+32470123456");
    }

    #[test]
    fn defaults_apply() {
        let mut input = valid();
        input.language = None;
        input.title = None;
        input.phone = Some("  ".into());
        let r = input.validate(Country::Be, date(2026, 11, 24)).unwrap();
        assert_eq!(r.language, Language::Fr);
        assert!(r.title.is_none() && r.phone.is_none());
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let input = RegistrationInput {
            country: None,
            national_id: Some("123".into()),
            title: Some("sir".into()),
            first_name: Some("x".repeat(10_000)),
            last_name: Some("a\u{7}b".into()),
            email: Some("not-an-email".into()),
            phone: Some("0470".into()),
            language: Some("es".into()),
            centers: vec!["abc".into()],
            availability: vec![RawSlot {
                day: "moon".into(),
                from: "9".into(),
                to: "8".into(),
            }],
            consent: false,
            ..Default::default()
        };
        let errors = input.validate(Country::Be, date(2026, 11, 24)).unwrap_err();
        let fields: Vec<_> = errors.keys().copied().collect();
        assert_eq!(
            fields,
            vec![
                "availability",
                "centers",
                "consent",
                "email",
                "first_name",
                "language",
                "last_name",
                "national_id",
                "phone",
                "title"
            ]
        );
        assert_eq!(errors["first_name"], FieldError::TooLong(100));
        assert_eq!(errors["availability"], FieldError::InvalidDay);
        // An unknown country is reported alone: the number cannot be judged without it.
        let mut input = valid();
        input.country = Some("FR".into());
        input.national_id = Some("123".into());
        let errors = input.validate(Country::Be, date(2026, 11, 24)).unwrap_err();
        assert_eq!(errors.keys().copied().collect::<Vec<_>>(), vec!["country"]);
    }

    #[test]
    fn missing_fields_are_required() {
        let errors = RegistrationInput::default()
            .validate(Country::Lu, date(2026, 11, 24))
            .unwrap_err();
        for f in ["national_id", "first_name", "last_name", "email"] {
            assert_eq!(errors[f], FieldError::Required, "{f}");
        }
        assert_eq!(errors["consent"], FieldError::MustAccept);
        assert!(!errors.contains_key("phone"));
    }

    #[test]
    fn luxembourg_by_default_country() {
        let mut input = valid();
        input.national_id = Some("1893120105732".into());
        assert!(input.validate(Country::Lu, date(2026, 11, 24)).is_ok());
        assert_eq!(
            input.validate(Country::Be, date(2026, 11, 24)).unwrap_err()["national_id"],
            FieldError::NationalId(NationalIdError::Length)
        );
    }
}
