//! Translations for fr, nl, de and en, from `locales/strings.tsv` compiled in.
//! A missing key shows as `⟦key⟧` so tests catch it on any page.

use standby_domain::{FieldError, Language};
use std::collections::HashMap;
use std::sync::LazyLock;

static TABLE: LazyLock<HashMap<&'static str, [&'static str; 4]>> = LazyLock::new(|| {
    include_str!("../locales/strings.tsv")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(
                cols.len(),
                5,
                "locales/strings.tsv: line {l:?} needs a key and 4 translations"
            );
            (cols[0], [cols[1], cols[2], cols[3], cols[4]])
        })
        .collect()
});

fn index(lang: Language) -> usize {
    match lang {
        Language::Fr => 0,
        Language::Nl => 1,
        Language::De => 2,
        Language::En => 3,
    }
}

pub fn t(lang: Language, key: &str) -> String {
    match TABLE.get(key) {
        Some(row) => row[index(lang)].to_string(),
        None => format!("⟦{key}⟧"),
    }
}

/// The translator handed to templates.
#[derive(Debug, Clone, Copy)]
pub struct Tr(pub Language);

impl Tr {
    pub fn s(&self, key: &str) -> String {
        t(self.0, key)
    }

    pub fn code(&self) -> &'static str {
        self.0.as_str()
    }
}

/// A field error as a sentence in `lang`.
pub fn field_message(lang: Language, e: FieldError) -> String {
    let text = t(lang, &format!("err.{}", e.code()));
    match e {
        FieldError::TooLong(n) | FieldError::TooMany(n) => text.replace("{n}", &n.to_string()),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_four_non_empty_translations() {
        assert!(TABLE.len() > 50);
        for (key, row) in TABLE.iter() {
            for (i, text) in row.iter().enumerate() {
                assert!(!text.trim().is_empty(), "{key} column {i}");
            }
        }
    }

    #[test]
    fn every_field_error_is_translated() {
        use standby_domain::NationalIdError::*;
        let all = [
            FieldError::Required,
            FieldError::TooLong(100),
            FieldError::TooMany(50),
            FieldError::ControlCharacters,
            FieldError::InvalidEmail,
            FieldError::InvalidPhone,
            FieldError::InvalidChoice,
            FieldError::InvalidDay,
            FieldError::InvalidTime,
            FieldError::InvalidTimeRange,
            FieldError::UnknownCenter,
            FieldError::MustAccept,
            FieldError::WrongType,
            FieldError::NationalId(Empty),
            FieldError::NationalId(Format),
            FieldError::NationalId(Length),
            FieldError::NationalId(Checksum),
            FieldError::NationalId(InvalidDate),
            FieldError::NationalId(FutureDate),
        ];
        for lang in Language::ALL {
            for e in all {
                let m = field_message(lang, e);
                assert!(
                    !m.contains('⟦') && !m.contains("{n}"),
                    "{lang:?} {e:?}: {m}"
                );
            }
        }
        assert_eq!(
            field_message(Language::En, FieldError::TooLong(100)),
            "Too long: 100 characters at most."
        );
    }

    #[test]
    fn missing_keys_are_visible() {
        assert_eq!(t(Language::Fr, "nope"), "⟦nope⟧");
    }
}
