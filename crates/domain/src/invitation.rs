//! The invitation engine's pure rules: the state machine, the wave size, the
//! age range of a vaccine, and an offer's window as weekly time ranges.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvitationStatus {
    /// Created; no message handed over yet. Cannot expire.
    Queued,
    /// A message was handed over; the response window runs.
    Sent,
    Accepted,
    Declined,
    /// Handed over and not answered in time.
    Expired,
    /// No message could be handed over. No penalty.
    Undeliverable,
    /// The offer was filled or closed first. No penalty.
    Withdrawn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationEvent {
    HandedOver,
    Accept,
    Decline,
    Deadline,
    AllChannelsFailed,
    OfferEnded,
}

impl InvitationStatus {
    pub const ALL: [InvitationStatus; 7] = [
        Self::Queued,
        Self::Sent,
        Self::Accepted,
        Self::Declined,
        Self::Expired,
        Self::Undeliverable,
        Self::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Expired => "expired",
            Self::Undeliverable => "undeliverable",
            Self::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn is_open(self) -> bool {
        matches!(self, Self::Queued | Self::Sent)
    }

    /// The next state, or `None` when the event does not apply.
    pub fn on(self, event: InvitationEvent) -> Option<Self> {
        use InvitationEvent as E;
        use InvitationStatus as S;
        match (self, event) {
            (S::Queued, E::HandedOver) => Some(S::Sent),
            (S::Queued, E::AllChannelsFailed) => Some(S::Undeliverable),
            // A link can be followed before the hand-over is recorded.
            (S::Queued | S::Sent, E::Accept) => Some(S::Accepted),
            (S::Queued | S::Sent, E::Decline) => Some(S::Declined),
            (S::Sent, E::Deadline) => Some(S::Expired),
            (S::Queued | S::Sent, E::OfferEnded) => Some(S::Withdrawn),
            _ => None,
        }
    }

    /// Does silence on this invitation count against the person?
    pub fn penalises(self) -> bool {
        matches!(self, Self::Expired)
    }
}

/// Ignored invitations (handed over, unanswered) after which a person is paused.
pub const IGNORED_BEFORE_PAUSE: i64 = 2;

/// How many invitations may be out per dose left, learnt from how recent
/// invitations were answered: 2 until there are 20 answers, then the inverse
/// of the acceptance rate, kept within 1 and 5.
pub fn wave_factor(accepted: u64, answered: u64) -> f64 {
    if answered < 20 {
        return 2.0;
    }
    let rate = accepted as f64 / answered as f64;
    if rate <= 0.0 {
        5.0
    } else {
        (1.0 / rate).clamp(1.0, 5.0)
    }
}

/// How many new invitations to create now.
///
/// `out` are invitations handed over and unanswered; `pending` are queued
/// ones still on their way (their channel has not failed yet); `queued` all
/// queued ones, including those stuck on a failing channel. Stuck ones do not
/// hold the wave back, but the queue as a whole stays bounded.
pub fn invitations_to_create(
    doses_left: i64,
    factor: f64,
    out: i64,
    pending: i64,
    queued: i64,
) -> i64 {
    if doses_left <= 0 {
        return 0;
    }
    let target = (doses_left as f64 * factor).ceil() as i64;
    let by_wave = target - out - pending;
    let by_queue = target - queued;
    by_wave.min(by_queue).max(0)
}

/// Birth dates (as YYYYMMDD integers) of people whose age on `today` lies in
/// `min_age..=max_age`: `lo < birth_ymd <= hi`.
pub fn birth_bounds(today: Date, min_age: i64, max_age: i64) -> (i64, i64) {
    let t =
        i64::from(today.year()) * 10_000 + i64::from(today.month()) * 100 + i64::from(today.day());
    (t - (max_age + 1) * 10_000, t - min_age * 10_000)
}

/// Today as YYYYMMDD, the form age arithmetic uses in SQL.
pub fn ymd(date: Date) -> i64 {
    i64::from(date.year()) * 10_000 + i64::from(date.month()) * 100 + i64::from(date.day())
}

/// The offer window `[starts, ends)` seen in the centre's time zone, as one
/// minute range per weekday (Monday first). `(0, 0)` means that day is not in
/// the window. A window of a week or more covers every day.
pub fn weekly_windows(starts: Timestamp, ends: Timestamp, tz: &TimeZone) -> [(i16, i16); 7] {
    let mut days = [(0i16, 0i16); 7];
    if ends <= starts {
        return days;
    }
    if ends.as_second() - starts.as_second() >= 7 * 86_400 {
        return [(0, 1440); 7];
    }
    let mut cursor = starts.to_zoned_datetime(tz.clone());
    let end = ends.to_zoned_datetime(tz.clone());
    loop {
        let day = cursor.weekday().to_monday_zero_offset() as usize;
        let from = (cursor.hour() as i16) * 60 + cursor.minute() as i16;
        let same_day = end.date() == cursor.date();
        let to = if same_day {
            (end.hour() as i16) * 60 + end.minute() as i16
        } else {
            1440
        };
        let (f, t) = days[day];
        days[day] = if t == 0 {
            (from, to)
        } else {
            (f.min(from), t.max(to))
        };
        if same_day {
            break;
        }
        let next = cursor.date().tomorrow().expect("date in range");
        cursor = match next.to_zoned_datetime(tz.clone()) {
            Ok(z) => z,
            Err(_) => break,
        };
        if cursor.timestamp() >= ends {
            break;
        }
    }
    days.map(|(f, t)| if f < t { (f, t) } else { (0, 0) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use proptest::prelude::*;

    #[test]
    fn silence_counts_only_after_hand_over() {
        use InvitationEvent as E;
        use InvitationStatus as S;
        assert_eq!(
            S::Queued.on(E::Deadline),
            None,
            "a queued invitation cannot expire"
        );
        assert_eq!(S::Sent.on(E::Deadline), Some(S::Expired));
        assert_eq!(S::Queued.on(E::AllChannelsFailed), Some(S::Undeliverable));
        assert_eq!(S::Sent.on(E::AllChannelsFailed), None);
        assert!(
            !S::Undeliverable.penalises() && !S::Withdrawn.penalises() && S::Expired.penalises()
        );
        for s in InvitationStatus::ALL {
            assert_eq!(InvitationStatus::parse(s.as_str()), Some(s));
        }
    }

    proptest! {
        #[test]
        fn terminal_states_stay_terminal_and_expiry_needs_hand_over(events in proptest::collection::vec(0usize..6, 0..12)) {
            use InvitationEvent as E;
            let all = [E::HandedOver, E::Accept, E::Decline, E::Deadline, E::AllChannelsFailed, E::OfferEnded];
            let mut s = InvitationStatus::Queued;
            let mut handed_over = false;
            for i in events {
                let e = all[i];
                if let Some(next) = s.on(e) {
                    prop_assert!(s.is_open(), "only open invitations move");
                    if next == InvitationStatus::Expired {
                        prop_assert!(handed_over);
                    }
                    if e == E::HandedOver {
                        handed_over = true;
                    }
                    s = next;
                }
            }
        }

        #[test]
        fn waves_stay_bounded(left in 0i64..5000, acc in 0u64..1000, extra in 0u64..1000, out in 0i64..20000, pending in 0i64..20000, stuck in 0i64..20000) {
            let f = wave_factor(acc, acc + extra);
            prop_assert!((1.0..=5.0).contains(&f));
            let n = invitations_to_create(left, f, out, pending, pending + stuck);
            prop_assert!(n >= 0);
            let target = (left as f64 * f).ceil() as i64;
            prop_assert!(out + pending + n <= target.max(out + pending));
            prop_assert!(pending + stuck + n <= target.max(pending + stuck));
        }
    }

    #[test]
    fn wave_factor_learns() {
        assert_eq!(wave_factor(0, 0), 2.0);
        assert_eq!(wave_factor(19, 19), 2.0);
        assert_eq!(wave_factor(20, 20), 1.0);
        assert_eq!(wave_factor(10, 40), 4.0);
        assert_eq!(wave_factor(1, 100), 5.0);
        assert_eq!(wave_factor(0, 100), 5.0);
    }

    #[test]
    fn stuck_invitations_do_not_hold_the_wave() {
        // 10 doses, factor 2: 20 may be out; 15 stuck on a dead channel.
        assert_eq!(invitations_to_create(10, 2.0, 0, 0, 15), 5);
        assert_eq!(invitations_to_create(10, 2.0, 5, 0, 15), 5);
        assert_eq!(invitations_to_create(10, 2.0, 20, 0, 0), 0);
        assert_eq!(invitations_to_create(10, 2.0, 0, 20, 20), 0);
        assert_eq!(invitations_to_create(0, 2.0, 0, 0, 0), 0);
    }

    #[test]
    fn age_bounds() {
        let today = date(2026, 11, 24);
        let (lo, hi) = birth_bounds(today, 41, 120);
        // 41 today: born 1985-11-24 is in, born 1985-11-25 is not.
        assert_eq!(hi, 19_851_124);
        // 120: born 1906-11-25 is in (age 119… 120), born 1905-11-24 is 121.
        assert_eq!(lo, 19_051_124);
    }

    #[test]
    fn windows_in_the_centres_time_zone() {
        let tz = TimeZone::get("Europe/Brussels").unwrap();
        // Tuesday 2026-11-24 09:00-12:30 local (08:00Z).
        let s: Timestamp = "2026-11-24T08:00:00Z".parse().unwrap();
        let e: Timestamp = "2026-11-24T11:30:00Z".parse().unwrap();
        let w = weekly_windows(s, e, &tz);
        assert_eq!(w[1], (540, 750));
        assert_eq!(w.iter().filter(|d| **d != (0, 0)).count(), 1);
        // Across midnight: Tuesday 22:00 to Wednesday 02:00.
        let s: Timestamp = "2026-11-24T21:00:00Z".parse().unwrap();
        let e: Timestamp = "2026-11-25T01:00:00Z".parse().unwrap();
        let w = weekly_windows(s, e, &tz);
        assert_eq!((w[1], w[2]), ((1320, 1440), (0, 120)));
        let week = weekly_windows(
            s,
            s.checked_add(jiff::SignedDuration::from_hours(24 * 8))
                .unwrap(),
            &tz,
        );
        assert_eq!(week, [(0, 1440); 7]);
        assert_eq!(weekly_windows(e, s, &tz), [(0, 0); 7]);
    }
}
