//! National identifiers: the Belgian national register / BIS number and the
//! Luxembourg matricule. Pure parsing with the birth date extracted.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Country {
    #[serde(rename = "BE")]
    Be,
    #[serde(rename = "LU")]
    Lu,
}

impl Country {
    pub fn as_str(self) -> &'static str {
        match self {
            Country::Be => "BE",
            Country::Lu => "LU",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "BE" => Some(Country::Be),
            "LU" => Some(Country::Lu),
            _ => None,
        }
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A birth date whose month or day may be unknown (00 in the identifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BirthDate {
    pub year: i16,
    pub month: Option<i8>,
    pub day: Option<i8>,
}

impl BirthDate {
    /// Compact integer form YYYYMMDD with 00 for unknown parts (the store keeps this).
    pub fn to_ymd(self) -> i32 {
        i32::from(self.year) * 10_000
            + i32::from(self.month.unwrap_or(0)) * 100
            + i32::from(self.day.unwrap_or(0))
    }

    /// YYYYMMDD with unknown parts taken as the latest possible (12, 31):
    /// the form the store keeps, so age checks never take anyone for older
    /// than they are.
    pub fn latest_ymd(self) -> i64 {
        i64::from(self.year) * 10_000
            + i64::from(self.month.unwrap_or(12)) * 100
            + i64::from(self.day.unwrap_or(31))
    }

    pub fn from_ymd(v: i32) -> Option<Self> {
        let year = i16::try_from(v / 10_000).ok()?;
        let month = i8::try_from((v / 100) % 100).ok()?;
        let day = i8::try_from(v % 100).ok()?;
        Some(BirthDate {
            year,
            month: (month != 0).then_some(month),
            day: (day != 0).then_some(day),
        })
    }

    /// Age in whole years on `today`. Unknown month or day count as the
    /// latest possible (so nobody is taken for older than they are).
    pub fn age_on(self, today: Date) -> i32 {
        let month = self.month.unwrap_or(12);
        let day = self.day.unwrap_or(31);
        let mut age = i32::from(today.year()) - i32::from(self.year);
        if (today.month(), today.day()) < (month, day) {
            age -= 1;
        }
        age.max(0)
    }

    /// Ten-year age band (0 for 0-9, 8 for 80-89...) used to order invitations.
    pub fn age_band_on(self, today: Date) -> i32 {
        self.age_on(today) / 10
    }

    /// Is this date (with unknown parts taken as the earliest) after `today`?
    fn is_after(self, today: Date) -> bool {
        let month = self.month.unwrap_or(1);
        let day = self.day.unwrap_or(1);
        (i32::from(self.year), month, day) > (i32::from(today.year()), today.month(), today.day())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NationalIdError {
    #[error("the national ID is missing")]
    Empty,
    #[error("the national ID may contain only digits, spaces, dots and dashes")]
    Format,
    #[error("the national ID has the wrong number of digits")]
    Length,
    #[error("the national ID's check digits are wrong")]
    Checksum,
    #[error("the national ID's birth date is not a real date")]
    InvalidDate,
    #[error("the national ID's birth date is in the future")]
    FutureDate,
}

/// A valid national identifier. Its digits are only ever used to compute the
/// keyed hash; they are never stored, logged or displayed.
#[derive(Clone, PartialEq, Eq)]
pub struct NationalId {
    country: Country,
    digits: String,
    birth: BirthDate,
}

impl fmt::Debug for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the digits, not even in a debug dump.
        f.debug_struct("NationalId")
            .field("country", &self.country)
            .field("digits", &"<redacted>")
            .finish()
    }
}

impl NationalId {
    pub fn parse(country: Country, input: &str, today: Date) -> Result<Self, NationalIdError> {
        let digits = compact(input)?;
        let birth = match country {
            Country::Be => parse_be(&digits, today)?,
            Country::Lu => parse_lu(&digits)?,
        };
        if birth.is_after(today) {
            return Err(NationalIdError::FutureDate);
        }
        Ok(NationalId {
            country,
            digits,
            birth,
        })
    }

    pub fn country(&self) -> Country {
        self.country
    }

    pub fn birth(&self) -> BirthDate {
        self.birth
    }

    /// The canonical text that the keyed hash is computed over.
    pub fn canonical(&self) -> String {
        format!("{}:{}", self.country.as_str(), self.digits)
    }
}

fn compact(input: &str) -> Result<String, NationalIdError> {
    let mut out = String::with_capacity(13);
    for c in input.chars() {
        match c {
            '0'..='9' => {
                if out.len() >= 32 {
                    return Err(NationalIdError::Length);
                }
                out.push(c);
            }
            ' ' | '.' | '-' => {}
            _ => return Err(NationalIdError::Format),
        }
    }
    if out.is_empty() {
        return Err(NationalIdError::Empty);
    }
    Ok(out)
}

fn num(digits: &str) -> u64 {
    digits
        .bytes()
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'))
}

/// Belgian national register number or BIS number: YYMMDD SSS CC.
fn parse_be(d: &str, today: Date) -> Result<BirthDate, NationalIdError> {
    if d.len() != 11 {
        return Err(NationalIdError::Length);
    }
    let body = num(&d[..9]);
    let check = num(&d[9..]);
    let yy = i16::try_from(num(&d[..2])).expect("two digits");
    let century_2000_possible = 2000 + yy <= today.year();
    let century = if century_2000_possible && 97 - (2_000_000_000 + body) % 97 == check {
        2000
    } else if 97 - body % 97 == check {
        1900
    } else {
        return Err(NationalIdError::Checksum);
    };
    let raw_month = i8::try_from(num(&d[2..4])).expect("two digits");
    let day = i8::try_from(num(&d[4..6])).expect("two digits");
    // BIS numbers add 20 (sex unknown) or 40 (sex known) to the month.
    let month = match raw_month {
        0..=12 => raw_month,
        20..=32 => raw_month - 20,
        40..=52 => raw_month - 40,
        _ => return Err(NationalIdError::InvalidDate),
    };
    birth_date(century + yy, month, day)
}

/// Luxembourg matricule: YYYYMMDD XXX L V, Luhn and Verhoeff over the first 11 digits.
fn parse_lu(d: &str) -> Result<BirthDate, NationalIdError> {
    if d.len() != 13 {
        return Err(NationalIdError::Length);
    }
    let body = &d[..11];
    let luhn = d.as_bytes()[11] - b'0';
    let verhoeff = d.as_bytes()[12] - b'0';
    if luhn_check_digit(body) != luhn || verhoeff_check_digit(body) != verhoeff {
        return Err(NationalIdError::Checksum);
    }
    let year = i16::try_from(num(&d[..4])).expect("four digits");
    let month = i8::try_from(num(&d[4..6])).expect("two digits");
    let day = i8::try_from(num(&d[6..8])).expect("two digits");
    if year < 1850 {
        return Err(NationalIdError::InvalidDate);
    }
    birth_date(year, month, day)
}

fn birth_date(year: i16, month: i8, day: i8) -> Result<BirthDate, NationalIdError> {
    match (month, day) {
        (0, _) => Ok(BirthDate {
            year,
            month: None,
            day: None,
        }),
        (1..=12, 0) => Ok(BirthDate {
            year,
            month: Some(month),
            day: None,
        }),
        (1..=12, _) => {
            Date::new(year, month, day).map_err(|_| NationalIdError::InvalidDate)?;
            Ok(BirthDate {
                year,
                month: Some(month),
                day: Some(day),
            })
        }
        _ => Err(NationalIdError::InvalidDate),
    }
}

/// The digit that, appended to `body`, makes a valid Luhn number.
pub fn luhn_check_digit(body: &str) -> u8 {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];
const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];
const VERHOEFF_INV: [u8; 10] = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];

/// The digit that, appended to `body`, makes a valid Verhoeff number.
pub fn verhoeff_check_digit(body: &str) -> u8 {
    let mut c = 0u8;
    for (i, b) in body.bytes().rev().enumerate() {
        let d = b - b'0';
        c = VERHOEFF_D[usize::from(c)][usize::from(VERHOEFF_P[(i + 1) % 8][usize::from(d)])];
    }
    VERHOEFF_INV[usize::from(c)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use proptest::prelude::*;

    fn today() -> Date {
        date(2026, 11, 24)
    }

    fn be(s: &str) -> Result<NationalId, NationalIdError> {
        NationalId::parse(Country::Be, s, today())
    }

    fn lu(s: &str) -> Result<NationalId, NationalIdError> {
        NationalId::parse(Country::Lu, s, today())
    }

    fn bd(y: i16, m: i8, d: i8) -> BirthDate {
        BirthDate {
            year: y,
            month: Some(m),
            day: Some(d),
        }
    }

    // python-stdnum be.nn doctests.
    #[test]
    fn stdnum_be_nn_examples() {
        assert_eq!(be("85.07.30-033 28").unwrap().birth(), bd(1985, 7, 30));
        assert_eq!(be("85 07 30 033 28").unwrap().canonical(), "BE:85073003328");
        assert_eq!(be("17 07 30 033 84").unwrap().birth(), bd(2017, 7, 30));
        assert_eq!(be("12345678901").unwrap_err(), NationalIdError::Checksum);
    }

    // python-stdnum be.bis doctests.
    #[test]
    fn stdnum_be_bis_examples() {
        assert_eq!(be("98.47.28-997.65").unwrap().birth(), bd(1998, 7, 28));
        assert_eq!(be("98 47 28 997 65").unwrap().canonical(), "BE:98472899765");
        assert_eq!(be("01 49 07 001 85").unwrap().birth(), bd(2001, 9, 7));
    }

    #[test]
    fn luxembourg_matricule_examples() {
        let id = lu("1893120105732").unwrap();
        assert_eq!(id.birth(), bd(1893, 12, 1));
        assert_eq!(lu("1893120105733").unwrap_err(), NationalIdError::Checksum);
        assert_eq!(
            lu("1893 1201 057 32").unwrap().canonical(),
            "LU:1893120105732"
        );
    }

    /// Builds a Belgian number from its parts with the right check digits.
    fn make_be(yy: u32, mm: u32, dd: u32, seq: u32, y2000: bool) -> String {
        let body = format!("{yy:02}{mm:02}{dd:02}{seq:03}");
        let n: u64 = body.parse().unwrap();
        let n = if y2000 { n + 2_000_000_000 } else { n };
        format!("{body}{:02}", 97 - n % 97)
    }

    fn make_lu(y: u32, m: u32, d: u32, seq: u32) -> String {
        let body = format!("{y:04}{m:02}{d:02}{seq:03}");
        format!(
            "{body}{}{}",
            luhn_check_digit(&body),
            verhoeff_check_digit(&body)
        )
    }

    #[test]
    fn unknown_month_or_day_is_accepted() {
        let id = be(&make_be(60, 0, 0, 12, false)).unwrap();
        assert_eq!(id.birth().month, None);
        let id = be(&make_be(60, 5, 0, 12, false)).unwrap();
        assert_eq!(id.birth().month, Some(5));
        assert_eq!(id.birth().day, None);
        let id = lu(&make_lu(1950, 0, 0, 1)).unwrap();
        assert_eq!(id.birth().year, 1950);
        assert_eq!(id.birth().month, None);
    }

    #[test]
    fn bis_month_offsets() {
        assert_eq!(
            be(&make_be(70, 23, 15, 1, false)).unwrap().birth(),
            bd(1970, 3, 15)
        );
        assert_eq!(
            be(&make_be(70, 43, 15, 1, false)).unwrap().birth(),
            bd(1970, 3, 15)
        );
        assert_eq!(
            be(&make_be(70, 20, 0, 1, false)).unwrap().birth().month,
            None
        );
        assert_eq!(
            be(&make_be(70, 33, 1, 1, false)).unwrap_err(),
            NationalIdError::InvalidDate
        );
    }

    #[test]
    fn impossible_dates_are_refused() {
        assert_eq!(
            be(&make_be(85, 2, 30, 1, false)).unwrap_err(),
            NationalIdError::InvalidDate
        );
        assert_eq!(
            be(&make_be(85, 13, 1, 1, false)).unwrap_err(),
            NationalIdError::InvalidDate
        );
        assert_eq!(
            lu(&make_lu(1985, 4, 31, 1)).unwrap_err(),
            NationalIdError::InvalidDate
        );
        // 29 February only in leap years.
        assert!(be(&make_be(84, 2, 29, 1, false)).is_ok());
        assert_eq!(
            be(&make_be(85, 2, 29, 1, false)).unwrap_err(),
            NationalIdError::InvalidDate
        );
    }

    #[test]
    fn future_birth_dates_are_refused() {
        // Born 2026-12-01, after "today" (2026-11-24).
        assert_eq!(
            be(&make_be(26, 12, 1, 1, true)).unwrap_err(),
            NationalIdError::FutureDate
        );
        assert_eq!(
            lu(&make_lu(2027, 1, 1, 1)).unwrap_err(),
            NationalIdError::FutureDate
        );
        // A 2000s checksum for a year still to come is not taken as 2000s.
        assert_eq!(
            be(&make_be(30, 1, 1, 1, true)).unwrap_err(),
            NationalIdError::Checksum
        );
        assert!(be(&make_be(26, 11, 24, 1, true)).is_ok());
    }

    #[test]
    fn format_and_length_errors() {
        assert_eq!(be("").unwrap_err(), NationalIdError::Empty);
        assert_eq!(be(" .-").unwrap_err(), NationalIdError::Empty);
        assert_eq!(be("8507300332").unwrap_err(), NationalIdError::Length);
        assert_eq!(
            be("85073003328'; DROP TABLE x").unwrap_err(),
            NationalIdError::Format
        );
        assert_eq!(be("85O73003328").unwrap_err(), NationalIdError::Format);
        assert_eq!(lu("85073003328").unwrap_err(), NationalIdError::Length);
        assert_eq!(
            be(&"1".repeat(10_000)).unwrap_err(),
            NationalIdError::Length
        );
    }

    #[test]
    fn debug_never_shows_digits() {
        let id = be("85073003328").unwrap();
        assert!(!format!("{id:?}").contains("85073003328"));
    }

    #[test]
    fn age_and_band() {
        let b = bd(1985, 7, 30);
        assert_eq!(b.age_on(date(2026, 7, 29)), 40);
        assert_eq!(b.age_on(date(2026, 7, 30)), 41);
        assert_eq!(b.age_band_on(date(2026, 7, 30)), 4);
        let unknown = BirthDate {
            year: 1985,
            month: None,
            day: None,
        };
        assert_eq!(unknown.age_on(date(2026, 12, 30)), 40);
        assert_eq!(unknown.age_on(date(2026, 12, 31)), 41);
        assert_eq!(BirthDate::from_ymd(b.to_ymd()), Some(b));
        assert_eq!(BirthDate::from_ymd(unknown.to_ymd()), Some(unknown));
    }

    proptest! {
        #[test]
        fn generated_belgian_numbers_parse_back(
            yy in 0u32..100, mm in 1u32..=12, dd in 1u32..=28, seq in 1u32..999, bis in 0u32..3
        ) {
            let y2000 = 2000 + yy <= 2026;
            let year = if y2000 { 2000 + yy } else { 1900 + yy };
            prop_assume!((year, mm, dd) <= (2026, 11, 24));
            let s = make_be(yy, mm + bis * 20, dd, seq, y2000);
            let id = be(&s).unwrap();
            prop_assert_eq!(id.birth(), bd(year as i16, mm as i8, dd as i8));
        }

        #[test]
        fn a_changed_digit_is_caught(
            y in 1900u32..2026, mm in 1u32..=12, dd in 1u32..=28, seq in 0u32..1000,
            pos in 0usize..13, delta in 1u8..10
        ) {
            let s = make_lu(y, mm, dd, seq);
            prop_assert!(lu(&s).is_ok());
            let mut bytes = s.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            // Verhoeff catches every single-digit error.
            prop_assert!(lu(&changed).is_err());
        }

        #[test]
        fn never_panics_on_any_input(s in "\\PC{0,40}") {
            let _ = be(&s);
            let _ = lu(&s);
        }

        #[test]
        fn separators_are_ignored(yy in 30u32..99, mm in 1u32..=12, dd in 1u32..=28, seq in 1u32..999) {
            let s = make_be(yy, mm, dd, seq, false);
            let spaced = format!("{}.{}.{}-{} {}", &s[0..2], &s[2..4], &s[4..6], &s[6..9], &s[9..]);
            prop_assert_eq!(be(&spaced).unwrap(), be(&s).unwrap());
        }
    }
}
