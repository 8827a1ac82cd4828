use serde::{Deserialize, Serialize};

/// Where a registrant stands. Stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrantStatus {
    Unconfirmed,
    Waiting,
    Invited,
    Booked,
    Paused,
    Vaccinated,
    Withdrawn,
}

impl RegistrantStatus {
    pub const ALL: [RegistrantStatus; 7] = [
        Self::Unconfirmed,
        Self::Waiting,
        Self::Invited,
        Self::Booked,
        Self::Paused,
        Self::Vaccinated,
        Self::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unconfirmed => "unconfirmed",
            Self::Waiting => "waiting",
            Self::Invited => "invited",
            Self::Booked => "booked",
            Self::Paused => "paused",
            Self::Vaccinated => "vaccinated",
            Self::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// May the registrant pause themselves from this state?
    pub fn can_pause(self) -> bool {
        matches!(self, Self::Waiting)
    }

    /// May the registrant come back to the list from this state?
    pub fn can_resume(self) -> bool {
        matches!(self, Self::Paused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in RegistrantStatus::ALL {
            assert_eq!(RegistrantStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(RegistrantStatus::parse("lost"), None);
    }

    #[test]
    fn only_waiting_pauses_and_only_paused_resumes() {
        for s in RegistrantStatus::ALL {
            assert_eq!(s.can_pause(), s == RegistrantStatus::Waiting);
            assert_eq!(s.can_resume(), s == RegistrantStatus::Paused);
        }
    }
}
