//! Whether a channel works: a circuit per channel, opened after several
//! tries in a row failed for the channel's own reasons (the SMTP server or
//! the gateway down, refusing, timing out; a bad address is not the
//! channel's fault), closed again by the next hand-over. While it is open
//! the engine creates no invitation that could only travel on it, so people
//! reachable on a working channel are invited meanwhile and the others keep
//! their place. In memory, per process: each process judges the channels
//! it sends on.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

/// Failed tries in a row that open a channel's circuit.
pub const FAILURES_TO_OPEN: u32 = 3;

#[derive(Default)]
pub struct Circuit {
    failures: AtomicU32,
    /// When the last hand-over was (ms), for the metrics.
    last_ok_ms: AtomicI64,
}

impl Circuit {
    pub fn handed_over(&self, now_ms: i64) {
        self.failures.store(0, Ordering::Relaxed);
        self.last_ok_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Open: the channel failed its last tries; its messages keep being
    /// retried (with back-off), and the first that goes through closes it.
    pub fn is_open(&self) -> bool {
        self.failures.load(Ordering::Relaxed) >= FAILURES_TO_OPEN
    }
}

/// The circuits of the two channels.
#[derive(Default)]
pub struct Circuits {
    pub email: Circuit,
    pub sms: Circuit,
}

impl Circuits {
    pub fn of(&self, channel: &str) -> &Circuit {
        if channel == "sms" {
            &self.sms
        } else {
            &self.email
        }
    }

    /// The channels whose circuit is closed (they work, as far as we know).
    pub fn working(&self) -> Vec<&'static str> {
        [("email", &self.email), ("sms", &self.sms)]
            .into_iter()
            .filter(|(_, c)| !c.is_open())
            .map(|(name, _)| name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_circuit_opens_after_failures_in_a_row_and_closes_on_a_hand_over() {
        let c = Circuits::default();
        assert_eq!(c.working(), ["email", "sms"]);
        for _ in 0..FAILURES_TO_OPEN - 1 {
            c.email.failed();
        }
        assert!(!c.email.is_open());
        c.email.failed();
        assert!(c.email.is_open());
        assert_eq!(c.working(), ["sms"]);
        c.email.handed_over(5);
        assert!(!c.email.is_open());
        c.sms.failed();
        c.sms.handed_over(6);
        c.sms.failed();
        assert!(!c.sms.is_open(), "failures in a row only");
    }
}
