//! Time rules of the invitation engine: a centre's quiet hours, when an
//! offer stops inviting, and when a silence may count against a person.

use crate::availability::parse_hhmm;
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A daily range of local time when no invitation is handed over, such as
/// 21:00-08:00 (crossing midnight) or 12:00-13:30. Minutes from midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub from_min: i16,
    pub to_min: i16,
}

impl QuietHours {
    /// Today's default: 21:00 to 08:00.
    pub const DEFAULT: QuietHours = QuietHours {
        from_min: 21 * 60,
        to_min: 8 * 60,
    };

    /// `HH:MM-HH:MM`, or `none` (`Ok(None)`). The two times differ.
    pub fn parse(text: &str) -> Result<Option<QuietHours>, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        let (from, to) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?} is not HH:MM-HH:MM or none"))?;
        let from_min = parse_hhmm(from.trim())
            .filter(|m| *m < 1440)
            .ok_or_else(|| format!("{from:?} is not a time such as 21:00"))?;
        let to_min = parse_hhmm(to.trim())
            .filter(|m| *m < 1440)
            .ok_or_else(|| format!("{to:?} is not a time such as 08:00"))?;
        if from_min == to_min {
            return Err("the start and the end must differ".into());
        }
        Ok(Some(QuietHours { from_min, to_min }))
    }

    /// `HH:MM-HH:MM`, as `parse` reads it.
    pub fn to_text(&self) -> String {
        format!(
            "{:02}:{:02}-{:02}:{:02}",
            self.from_min / 60,
            self.from_min % 60,
            self.to_min / 60,
            self.to_min % 60
        )
    }

    /// Is `minute` (from local midnight) quiet?
    pub fn contains_minute(&self, minute: i16) -> bool {
        if self.from_min < self.to_min {
            (self.from_min..self.to_min).contains(&minute)
        } else {
            minute >= self.from_min || minute < self.to_min
        }
    }

    /// Is `at` quiet in the time zone `tz`?
    pub fn contains(&self, at: Timestamp, tz: &TimeZone) -> bool {
        self.contains_minute(local_minute(at, tz))
    }

    /// When the quiet time that holds `at` ends (`at` itself when it is not
    /// quiet): the next local time `to_min`, in `tz`.
    pub fn ends_after(&self, at: Timestamp, tz: &TimeZone) -> Timestamp {
        if !self.contains(at, tz) {
            return at;
        }
        let zoned = at.to_zoned_datetime(tz.clone());
        let minute = local_minute(at, tz);
        let date = if minute >= self.to_min {
            zoned.date().tomorrow().unwrap_or(zoned.date())
        } else {
            zoned.date()
        };
        let end = date.at((self.to_min / 60) as i8, (self.to_min % 60) as i8, 0, 0);
        // A local time skipped by a clock change: the first instant after it.
        end.to_zoned_datetime(tz.clone())
            .map(|z| z.timestamp())
            .unwrap_or(at)
            .max(at)
    }
}

/// Minutes from local midnight of `at` in `tz`.
pub fn local_minute(at: Timestamp, tz: &TimeZone) -> i16 {
    let z = at.to_zoned_datetime(tz.clone());
    i16::from(z.hour()) * 60 + i16::from(z.minute())
}

/// Day of the week of `at` in `tz`, 0 for Monday.
pub fn local_weekday(at: Timestamp, tz: &TimeZone) -> i16 {
    i16::from(
        at.to_zoned_datetime(tz.clone())
            .weekday()
            .to_monday_zero_offset(),
    )
}

/// Does an offer still invite at `now`? Not once what is left of its window
/// is shorter than its response window plus a travel margin (a person who
/// answers at the last moment must still be able to come).
pub fn offer_still_invites(now_ms: i64, ends_at_ms: i64, response_ms: i64, margin_ms: i64) -> bool {
    ends_at_ms - now_ms >= response_ms + margin_ms
}

/// Does a silence count against the person? Only when the invitation was
/// handed over (`sent_at`) within the availability they stated (`slots`:
/// weekday 0 for Monday, minutes; empty means any time) and outside their
/// centre's quiet hours, both in the centre's time zone.
pub fn silence_counts(
    sent_at: Timestamp,
    tz: &TimeZone,
    quiet: Option<QuietHours>,
    slots: &[(i16, i16, i16)],
) -> bool {
    if quiet.is_some_and(|q| q.contains(sent_at, tz)) {
        return false;
    }
    if slots.is_empty() {
        return true;
    }
    let (day, minute) = (local_weekday(sent_at, tz), local_minute(sent_at, tz));
    slots
        .iter()
        .any(|&(d, from, to)| d == day && from <= minute && minute < to)
}

/// How a person's consecutive counted silences change with a new one at
/// `now`: the count goes up by one, or starts again at one when the last
/// counted silence is older than `window_ms`.
pub fn next_silence_count(count: i64, last_at: Option<i64>, now_ms: i64, window_ms: i64) -> i64 {
    match last_at {
        Some(last) if now_ms - last <= window_ms => count + 1,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brussels() -> TimeZone {
        TimeZone::get("Europe/Brussels").unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn quiet_hours_parse_and_cross_midnight() {
        assert_eq!(
            QuietHours::parse("21:00-08:00"),
            Ok(Some(QuietHours::DEFAULT))
        );
        assert_eq!(QuietHours::parse(" none "), Ok(None));
        assert_eq!(QuietHours::DEFAULT.to_text(), "21:00-08:00");
        for bad in ["21:00", "25:00-08:00", "21:00-21:00", "9-5", "21:00-24:00"] {
            assert!(QuietHours::parse(bad).is_err(), "{bad}");
        }
        let q = QuietHours::DEFAULT;
        assert!(q.contains_minute(21 * 60) && q.contains_minute(0) && q.contains_minute(479));
        assert!(!q.contains_minute(480) && !q.contains_minute(20 * 60 + 59));
        let lunch = QuietHours::parse("12:00-13:30").unwrap().unwrap();
        assert!(lunch.contains_minute(12 * 60 + 10) && !lunch.contains_minute(13 * 60 + 30));
    }

    #[test]
    fn quiet_hours_are_local_and_end_at_the_next_morning() {
        let q = QuietHours::DEFAULT;
        // 20:30 UTC in November is 21:30 in Brussels: quiet until 08:00 local, 07:00 UTC.
        let evening = at("2026-11-24T20:30:00Z");
        assert!(q.contains(evening, &brussels()));
        assert!(!q.contains(evening, &TimeZone::UTC));
        assert_eq!(
            q.ends_after(evening, &brussels()),
            at("2026-11-25T07:00:00Z")
        );
        // After midnight, the same morning.
        assert_eq!(
            q.ends_after(at("2026-11-25T02:00:00Z"), &brussels()),
            at("2026-11-25T07:00:00Z")
        );
        // Not quiet: now.
        let noon = at("2026-11-25T11:00:00Z");
        assert_eq!(q.ends_after(noon, &brussels()), noon);
        // In summer Brussels is UTC+2.
        assert_eq!(
            q.ends_after(at("2026-07-01T22:00:00Z"), &brussels()),
            at("2026-07-02T06:00:00Z")
        );
    }

    #[test]
    fn an_offer_stops_inviting_when_its_window_runs_short() {
        let h = 3_600_000;
        assert!(offer_still_invites(0, 2 * h, h / 2, h / 4));
        assert!(offer_still_invites(0, 3 * h / 4, h / 2, h / 4));
        assert!(!offer_still_invites(1, 3 * h / 4, h / 2, h / 4));
        assert!(!offer_still_invites(3 * h, 2 * h, h / 2, 0));
    }

    #[test]
    fn a_silence_counts_only_within_availability_and_outside_quiet_hours() {
        let tz = brussels();
        // Tuesday 2026-11-24, 11:00 in Brussels.
        let tuesday_morning = at("2026-11-24T10:00:00Z");
        let quiet = Some(QuietHours::DEFAULT);
        assert!(silence_counts(tuesday_morning, &tz, quiet, &[]));
        assert!(silence_counts(
            tuesday_morning,
            &tz,
            quiet,
            &[(1, 600, 720)]
        ));
        assert!(!silence_counts(
            tuesday_morning,
            &tz,
            quiet,
            &[(1, 720, 900)]
        ));
        assert!(!silence_counts(
            tuesday_morning,
            &tz,
            quiet,
            &[(2, 600, 720)]
        ));
        // Handed over at night: never counts, whatever the availability.
        let night = at("2026-11-24T22:00:00Z");
        assert!(!silence_counts(night, &tz, quiet, &[]));
        assert!(silence_counts(night, &tz, None, &[]));
    }

    #[test]
    fn consecutive_silences_are_forgotten_after_the_window() {
        let day = 86_400_000;
        assert_eq!(next_silence_count(0, None, 5 * day, 14 * day), 1);
        assert_eq!(next_silence_count(2, Some(4 * day), 5 * day, 14 * day), 3);
        assert_eq!(next_silence_count(2, Some(0), 15 * day, 14 * day), 1);
    }
}
