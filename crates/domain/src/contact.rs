//! Names, e-mail, phone, title and language as parse-don't-validate newtypes.

use crate::registration::FieldError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A first or last name: 1 to 100 characters after trimming, no control characters.
#[derive(Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(input: &str) -> Result<Self, FieldError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(FieldError::Required);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldError::ControlCharacters);
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::TooLong(Self::MAX_CHARS));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonName(<redacted>)")
    }
}

/// A syntactically valid e-mail address (RFC 5321 limits, dot-atom local part).
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(input: &str) -> Result<Self, FieldError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(FieldError::Required);
        }
        if s.len() > 254 {
            return Err(FieldError::TooLong(254));
        }
        let (local, domain) = s.rsplit_once('@').ok_or(FieldError::InvalidEmail)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && domain.len() <= 253
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
            && labels.last().is_some_and(|tld| {
                tld.chars().count() >= 2 && !tld.chars().all(|c| c.is_ascii_digit())
            });
        if local_ok && domain_ok {
            Ok(Self(format!("{local}@{}", domain.to_lowercase())))
        } else {
            Err(FieldError::InvalidEmail)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

/// An E.164 phone number: `+`, a country code and at most 15 digits in all.
#[derive(Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub fn parse(input: &str) -> Result<Self, FieldError> {
        let mut out = String::with_capacity(16);
        for (i, c) in input.trim().chars().enumerate() {
            match c {
                '+' if i == 0 => out.push('+'),
                '0'..='9' => out.push(c),
                ' ' | '.' | '-' | '(' | ')' => {}
                _ => return Err(FieldError::InvalidPhone),
            }
            if out.len() > 16 {
                return Err(FieldError::InvalidPhone);
            }
        }
        let digits = out.strip_prefix('+').ok_or(FieldError::InvalidPhone)?;
        if digits.len() < 8 || digits.starts_with('0') {
            return Err(FieldError::InvalidPhone);
        }
        Ok(Self(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phone(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Title {
    Mr,
    Ms,
    Mx,
}

impl Title {
    pub fn parse(s: &str) -> Result<Option<Self>, FieldError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "mr" => Ok(Some(Title::Mr)),
            "ms" => Ok(Some(Title::Ms)),
            "mx" => Ok(Some(Title::Mx)),
            _ => Err(FieldError::InvalidChoice),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Title::Mr => "mr",
            Title::Ms => "ms",
            Title::Mx => "mx",
        }
    }
}

/// The four languages of every page and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Fr,
    Nl,
    De,
    En,
}

impl Language {
    pub const ALL: [Language; 4] = [Language::Fr, Language::Nl, Language::De, Language::En];

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fr" => Some(Language::Fr),
            "nl" => Some(Language::Nl),
            "de" => Some(Language::De),
            "en" => Some(Language::En),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Fr => "fr",
            Language::Nl => "nl",
            Language::De => "de",
            Language::En => "en",
        }
    }

    /// Picks the best language from an `Accept-Language` header.
    pub fn from_accept_language(header: &str) -> Option<Self> {
        let mut best: Option<(f32, Language)> = None;
        for part in header.split(',') {
            let mut pieces = part.split(';');
            let tag = pieces.next().unwrap_or("").trim();
            let primary = tag.split('-').next().unwrap_or("");
            let q = pieces
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if let Some(lang) = Language::parse(primary)
                && q > 0.0
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        assert_eq!(
            PersonName::parse("  Anne-Marie ").unwrap().as_str(),
            "Anne-Marie"
        );
        assert_eq!(PersonName::parse("   ").unwrap_err(), FieldError::Required);
        assert_eq!(
            PersonName::parse("a\u{0}b").unwrap_err(),
            FieldError::ControlCharacters
        );
        assert_eq!(
            PersonName::parse("a\nb").unwrap_err(),
            FieldError::ControlCharacters
        );
        assert_eq!(
            PersonName::parse(&"é".repeat(100))
                .unwrap()
                .as_str()
                .chars()
                .count(),
            100
        );
        assert_eq!(
            PersonName::parse(&"x".repeat(101)).unwrap_err(),
            FieldError::TooLong(100)
        );
        assert_eq!(
            PersonName::parse(&"x".repeat(10_000)).unwrap_err(),
            FieldError::TooLong(100)
        );
        // Markup is kept as written: every page escapes it.
        assert_eq!(
            PersonName::parse("<script>x</script>").unwrap().as_str(),
            "<script>x</script>"
        );
        assert_eq!(
            PersonName::parse("O'Brien; --").unwrap().as_str(),
            "O'Brien; --"
        );
    }

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" Jo.Doe+x@Example.LU ").unwrap().as_str(),
            "Jo.Doe+x@example.lu"
        );
        for bad in [
            "", "plain", "@x.be", "a@", "a@b", "a b@c.be", "a@b..be", ".a@b.be", "a@-b.be",
            "a@b.1", "a@b.be\n",
        ] {
            assert!(Email::parse(bad).is_err() || bad.trim() != bad, "{bad:?}");
        }
        assert_eq!(
            Email::parse("a@b.be\nBcc: x@y.z").unwrap_err(),
            FieldError::InvalidEmail
        );
        assert_eq!(
            Email::parse(&format!("{}@b.be", "a".repeat(300))).unwrap_err(),
            FieldError::TooLong(254)
        );
        assert!(Email::parse("élise@exemple.be").is_err());
        assert!(Email::parse("elise@exemple-café.be").is_ok());
    }

    #[test]
    fn phones() {
        assert_eq!(
            Phone::parse("+32 470 12 34 56").unwrap().as_str(),
            "+32470123456"
        );
        assert_eq!(
            Phone::parse("+352 621 123 456").unwrap().as_str(),
            "+352621123456"
        );
        for bad in [
            "0470123456",
            "+0470123456",
            "+32 470",
            "+32470123456789012",
            "+32a470123456",
            "32+470123456",
        ] {
            assert_eq!(
                Phone::parse(bad).unwrap_err(),
                FieldError::InvalidPhone,
                "{bad}"
            );
        }
    }

    #[test]
    fn titles_and_languages() {
        assert_eq!(Title::parse("MS").unwrap(), Some(Title::Ms));
        assert_eq!(Title::parse("").unwrap(), None);
        assert_eq!(Title::parse("dr").unwrap_err(), FieldError::InvalidChoice);
        assert_eq!(
            Language::from_accept_language("de-LU,de;q=0.9,en;q=0.8"),
            Some(Language::De)
        );
        assert_eq!(
            Language::from_accept_language("es,nl;q=0.5,en;q=0.7"),
            Some(Language::En)
        );
        assert_eq!(Language::from_accept_language("es"), None);
        assert_eq!(Language::from_accept_language("fr;q=0"), None);
    }

    #[test]
    fn debug_redacts_personal_data() {
        let e = Email::parse("secret@example.be").unwrap();
        let p = Phone::parse("+32470123456").unwrap();
        let n = PersonName::parse("Secretname").unwrap();
        let dump = format!("{e:?}{p:?}{n:?}");
        assert!(!dump.contains("secret") && !dump.contains("470") && !dump.contains("Secretname"));
    }

    proptest! {
        #[test]
        fn valid_names_are_trimmed_and_bounded(s in "\\PC{0,200}") {
            if let Ok(n) = PersonName::parse(&s) {
                prop_assert!(!n.as_str().is_empty());
                prop_assert!(n.as_str().chars().count() <= 100);
                prop_assert!(!n.as_str().chars().any(char::is_control));
                prop_assert_eq!(n.as_str(), n.as_str().trim());
            }
        }

        #[test]
        fn accepted_emails_have_no_whitespace(s in "\\PC{0,80}") {
            if let Ok(e) = Email::parse(&s) {
                prop_assert!(!e.as_str().chars().any(char::is_whitespace));
                prop_assert_eq!(e.as_str().matches('@').count(), 1);
            }
        }
    }
}
