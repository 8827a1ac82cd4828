//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the test that
//! replays their corpus (`tests/api/fuzz_corpus.rs`). Each takes arbitrary
//! bytes, must never panic, and checks what must hold of any accepted input.

use standby_domain::registration::{RawSlot, parse_availability};
use standby_domain::{Country, NationalId};

fn today() -> jiff::civil::Date {
    jiff::civil::date(2026, 11, 24)
}

/// National-ID parsers: an accepted ID has a birth date not after today and
/// parses again from its own canonical digits.
pub fn national_id(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for country in [Country::Be, Country::Lu] {
        if let Ok(id) = NationalId::parse(country, text, today()) {
            let canonical = id.canonical();
            let digits = canonical
                .split(':')
                .nth(1)
                .expect("canonical form COUNTRY:DIGITS");
            let again = NationalId::parse(country, digits, today())
                .expect("an accepted ID parses from its digits");
            assert_eq!(again, id);
            assert!(id.birth().year <= today().year());
        }
    }
}

/// The availability parser: lines of `day from to`; an accepted availability
/// is sorted, merged and within the day.
pub fn availability(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let raw: Vec<RawSlot> = text
        .lines()
        .map(|l| {
            let mut p = l.split_whitespace();
            RawSlot {
                day: p.next().unwrap_or("").into(),
                from: p.next().unwrap_or("").into(),
                to: p.next().unwrap_or("").into(),
            }
        })
        .collect();
    if let Ok(a) = parse_availability(&raw) {
        for s in a.slots() {
            assert!(0 <= s.from_min && s.from_min < s.to_min && s.to_min <= 1440);
        }
        for w in a.slots().windows(2) {
            assert!(w[0].day < w[1].day || w[0].to_min < w[1].from_min);
        }
    }
}

/// The registration JSON as the API reads it: any bytes give either a
/// malformed-body error, field errors, or a valid registration, and the
/// sign-up's direct reading gives exactly what the general one gives.
pub fn registration_json(data: &[u8]) {
    let direct = crate::web::api::registration_input_from(data);
    let value = match crate::web::extract::parse_json(data) {
        Ok(value) => value,
        Err(malformed) => {
            let direct = direct.map(|_| ()).map_err(|e| e.to_string());
            assert_eq!(direct, Err(malformed.to_string()));
            return;
        }
    };
    let general = crate::web::api::registration_input(&value);
    assert_eq!(format!("{direct:?}"), format!("{general:?}"));
    if let Ok(input) = general
        && let Ok(reg) = input.validate(Country::Be, today())
    {
        assert!(
            !reg.first_name.as_str().is_empty() && reg.first_name.as_str().chars().count() <= 100
        );
        assert!(reg.email.as_str().contains('@'));
    }
}
