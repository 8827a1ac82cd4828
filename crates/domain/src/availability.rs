//! Weekly availability: a list of day and time ranges. Empty means any time.

use crate::registration::FieldError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Weekday::Mon => "mon",
            Weekday::Tue => "tue",
            Weekday::Wed => "wed",
            Weekday::Thu => "thu",
            Weekday::Fri => "fri",
            Weekday::Sat => "sat",
            Weekday::Sun => "sun",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s.trim().to_ascii_lowercase())
    }

    /// 0 for Monday to 6 for Sunday (the store keeps this).
    pub fn index(self) -> i16 {
        self as i16
    }

    pub fn from_index(i: i16) -> Option<Self> {
        Self::ALL.get(usize::try_from(i).ok()?).copied()
    }
}

/// One weekly range, minutes from midnight, `from < to <= 1440`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub day: Weekday,
    pub from_min: i16,
    pub to_min: i16,
}

impl Slot {
    pub fn new(day: Weekday, from: &str, to: &str) -> Result<Self, FieldError> {
        let from_min = parse_hhmm(from).ok_or(FieldError::InvalidTime)?;
        let to_min = parse_hhmm(to).ok_or(FieldError::InvalidTime)?;
        if from_min >= to_min {
            return Err(FieldError::InvalidTimeRange);
        }
        Ok(Slot {
            day,
            from_min,
            to_min,
        })
    }

    pub fn from_text(&self) -> String {
        fmt_hhmm(self.from_min)
    }

    pub fn to_text(&self) -> String {
        fmt_hhmm(self.to_min)
    }
}

pub fn parse_hhmm(s: &str) -> Option<i16> {
    let (h, m) = s.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: i16 = h.parse().ok()?;
    let m: i16 = m.parse().ok()?;
    if !(0..60).contains(&m) || !(0..=24).contains(&h) || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

pub fn fmt_hhmm(min: i16) -> String {
    format!("{:02}:{:02}", min / 60, min % 60)
}

/// A normalised weekly availability: sorted, overlapping ranges merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Availability(Vec<Slot>);

impl Availability {
    pub const MAX_SLOTS: usize = 50;

    pub fn new(mut slots: Vec<Slot>) -> Result<Self, FieldError> {
        if slots.len() > Self::MAX_SLOTS {
            return Err(FieldError::TooMany(Self::MAX_SLOTS));
        }
        slots.sort();
        let mut merged: Vec<Slot> = Vec::with_capacity(slots.len());
        for s in slots {
            match merged.last_mut() {
                Some(last) if last.day == s.day && s.from_min <= last.to_min => {
                    last.to_min = last.to_min.max(s.to_min);
                }
                _ => merged.push(s),
            }
        }
        Ok(Availability(merged))
    }

    pub fn any_time() -> Self {
        Availability(Vec::new())
    }

    pub fn slots(&self) -> &[Slot] {
        &self.0
    }

    pub fn is_any_time(&self) -> bool {
        self.0.is_empty()
    }

    /// Does this availability overlap the window `[from, to)` on `day` (minutes)?
    pub fn overlaps(&self, day: Weekday, from_min: i16, to_min: i16) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|s| s.day == day && s.from_min < to_min && from_min < s.to_min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn times() {
        assert_eq!(parse_hhmm("08:30"), Some(510));
        assert_eq!(parse_hhmm("8:30"), Some(510));
        assert_eq!(parse_hhmm("24:00"), Some(1440));
        for bad in [
            "24:01", "25:00", "12:60", "12", "12:5", "ab:cd", "-1:00", "",
        ] {
            assert_eq!(parse_hhmm(bad), None, "{bad}");
        }
        assert_eq!(fmt_hhmm(510), "08:30");
    }

    #[test]
    fn slots_need_from_before_to() {
        assert!(Slot::new(Weekday::Mon, "09:00", "12:00").is_ok());
        assert_eq!(
            Slot::new(Weekday::Mon, "12:00", "09:00").unwrap_err(),
            FieldError::InvalidTimeRange
        );
        assert_eq!(
            Slot::new(Weekday::Mon, "12:00", "12:00").unwrap_err(),
            FieldError::InvalidTimeRange
        );
        assert_eq!(
            Slot::new(Weekday::Mon, "x", "12:00").unwrap_err(),
            FieldError::InvalidTime
        );
    }

    #[test]
    fn merging_and_overlap() {
        let a = Availability::new(vec![
            Slot::new(Weekday::Tue, "14:00", "16:00").unwrap(),
            Slot::new(Weekday::Mon, "09:00", "11:00").unwrap(),
            Slot::new(Weekday::Mon, "10:00", "12:00").unwrap(),
        ])
        .unwrap();
        assert_eq!(a.slots().len(), 2);
        assert_eq!(a.slots()[0].to_min, 720);
        assert!(a.overlaps(Weekday::Mon, 690, 800));
        assert!(!a.overlaps(Weekday::Mon, 720, 800));
        assert!(!a.overlaps(Weekday::Wed, 0, 1440));
        assert!(Availability::any_time().overlaps(Weekday::Sun, 0, 10));
        let too_many = vec![Slot::new(Weekday::Mon, "09:00", "10:00").unwrap(); 51];
        assert_eq!(
            Availability::new(too_many).unwrap_err(),
            FieldError::TooMany(50)
        );
    }

    proptest! {
        #[test]
        fn merged_slots_are_disjoint_and_cover_the_same_minutes(
            raw in proptest::collection::vec((0i16..7, 0i16..1440, 1i16..300), 0..20)
        ) {
            let slots: Vec<Slot> = raw.iter().map(|&(d, f, len)| Slot {
                day: Weekday::from_index(d).unwrap(), from_min: f, to_min: (f + len).min(1440).max(f + 1),
            }).collect();
            let a = Availability::new(slots.clone()).unwrap();
            for w in a.slots().windows(2) {
                prop_assert!(w[0].day < w[1].day || w[0].to_min < w[1].from_min);
            }
            for s in &slots {
                for m in [s.from_min, s.to_min - 1] {
                    prop_assert!(a.overlaps(s.day, m, m + 1));
                }
            }
        }
    }
}
