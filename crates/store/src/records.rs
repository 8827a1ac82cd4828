//! Plain data crossing the store boundary.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    Confirm,
    Me,
    /// A staff page session (cookie).
    Session,
    /// A staff API bearer token.
    Api,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::Confirm => "confirm",
            TokenPurpose::Me => "me",
            TokenPurpose::Session => "session",
            TokenPurpose::Api => "api",
        }
    }
}

/// A message's place in its channel's queue: 0 (booking confirmations,
/// invitations and every answer to a person) before 1 (sign-up
/// confirmations, which a launch-day surge queues by the thousand).
pub fn priority_of(kind: &str) -> i64 {
    if kind == "confirmation" { 1 } else { 0 }
}

/// A message to hand to a channel. `reference` is stable across retries.
#[derive(Clone)]
pub struct NewMessage {
    pub reference: String,
    pub channel: String,
    pub kind: String,
    pub registrant_id: Option<i64>,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
}

impl std::fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMessage")
            .field("reference", &self.reference)
            .field("channel", &self.channel)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct OutboxMessage {
    pub id: i64,
    pub reference: String,
    pub channel: String,
    pub kind: String,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub attempts: i64,
}

impl std::fmt::Debug for OutboxMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxMessage")
            .field("id", &self.id)
            .field("reference", &self.reference)
            .field("channel", &self.channel)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// The keyed hash that stands for a national ID: 128 bits, stored as 16
/// bytes (migration 0005; 32 hex digits before). Shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NidKey(pub [u8; 16]);

impl TryFrom<&[u8]> for NidKey {
    type Error = std::array::TryFromSliceError;
    fn try_from(bytes: &[u8]) -> Result<NidKey, Self::Error> {
        bytes.try_into().map(NidKey)
    }
}

impl std::fmt::Display for NidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Hex, like [`Display`](std::fmt::Display): a keyed hash, never the ID.
impl std::fmt::Debug for NidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NidKey({self})")
    }
}

/// A validated sign-up, ready to store: the national ID only as its keyed hash.
#[derive(Clone)]
pub struct NewRegistrant {
    pub nid_hash: NidKey,
    pub country: String,
    pub birth_ymd: i64,
    pub title: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone: Option<String>,
    pub language: String,
    pub centers: Vec<i64>,
    /// (day 0..6, from minute, to minute)
    pub availability: Vec<(i64, i64, i64)>,
    pub confirm_hash: String,
    pub confirm_expires_at: i64,
    pub me_hash: String,
    pub me_expires_at: i64,
    /// The confirmation e-mail, queued in the same transaction.
    pub message: Option<NewMessage>,
    /// Set when importing people already confirmed elsewhere (an earlier
    /// list): they join the list as waiting, in this order.
    pub confirmed_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    Created(i64),
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Confirmed(i64),
    AlreadyConfirmed(i64),
    Expired,
    Unknown,
}

#[derive(Clone, Serialize)]
pub struct RegistrantRecord {
    pub id: i64,
    pub status: String,
    pub language: String,
    pub title: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub centers: Vec<i64>,
    pub availability: Vec<(i64, i64, i64)>,
    pub created_at: i64,
    pub confirmed_at: Option<i64>,
}

impl std::fmt::Debug for RegistrantRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrantRecord")
            .field("id", &self.id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// A self-service change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RegistrantChange {
    pub language: Option<String>,
    pub centers: Option<Vec<i64>>,
    pub availability: Option<Vec<(i64, i64, i64)>>,
    /// `Some(None)` removes the phone.
    pub phone: Option<Option<String>>,
    /// `Some(true)` pauses, `Some(false)` resumes.
    pub paused: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub registered: i64,
    pub confirmed: i64,
    pub waiting: i64,
    pub invited: i64,
    pub booked: i64,
    pub vaccinated: i64,
    pub doses_available: i64,
}

#[derive(Debug, Clone)]
pub struct NewCenter {
    pub name: String,
    pub address: String,
    pub postal_code: String,
    pub time_zone: String,
    /// `HH:MM-HH:MM` or `none`; `None`: the default (`STANDBY_QUIET_HOURS`).
    pub quiet_hours: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CenterRecord {
    pub id: i64,
    pub name: String,
    pub address: String,
    pub postal_code: String,
    pub time_zone: String,
    /// `HH:MM-HH:MM` or `none`; `None`: the default (`STANDBY_QUIET_HOURS`).
    pub quiet_hours: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VaccineRecord {
    pub code: String,
    pub name: String,
    pub min_age: i64,
    pub max_age: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StockRecord {
    pub vaccine: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub administered: i64,
}

#[derive(Clone)]
pub struct NewUser {
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub center_id: Option<i64>,
}

#[derive(Clone)]
pub struct UserRecord {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub center_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject_type: String,
    pub subject_id: String,
    pub detail: String,
}

/// A signed-in staff member, from a session or API token.
#[derive(Debug, Clone)]
pub struct StaffSession {
    pub user_id: i64,
    pub email: String,
    pub role: String,
    pub center_id: Option<i64>,
    pub csrf: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewOffer {
    pub center_id: i64,
    pub vaccine: String,
    pub doses: i64,
    pub starts_at: i64,
    pub ends_at: i64,
    pub response_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OfferRecord {
    pub id: i64,
    pub center_id: i64,
    pub vaccine: String,
    pub doses: i64,
    pub booked: i64,
    pub starts_at: i64,
    pub ends_at: i64,
    pub response_ms: i64,
    pub status: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InvitationCounts {
    pub queued: i64,
    pub sent: i64,
    pub accepted: i64,
    pub declined: i64,
    pub expired: i64,
    pub undeliverable: i64,
    pub withdrawn: i64,
}

/// What the wave engine needs to size the next wave of one offer.
#[derive(Debug, Clone)]
pub struct WaveState {
    pub offer: OfferRecord,
    pub counts: InvitationCounts,
    /// Queued invitations none of whose messages has failed yet.
    pub pending: i64,
    /// Recent answers at this centre: (accepted, accepted + declined + expired).
    pub recent_accepted: i64,
    pub recent_answered: i64,
    /// Per channel, queued invitations with a message still waiting on it.
    pub queued_by_channel: Vec<(String, i64)>,
}

/// The queue bound that applies while only `working` channels work: the
/// most queued invitations waiting on any one of them. Invitations stuck on
/// a failing channel alone do not hold the wave back.
pub fn queued_on_working(queued_by_channel: &[(String, i64)], working: &[&str]) -> i64 {
    queued_by_channel
        .iter()
        .filter(|(channel, _)| working.contains(&channel.as_str()))
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0)
}

/// Who may be invited, and how to reach them.
#[derive(Clone)]
pub struct Candidate {
    pub registrant_id: i64,
    pub language: String,
    pub first_name: String,
    pub email: String,
    pub phone: Option<String>,
}

/// How the wave engine looks for candidates.
#[derive(Debug, Clone)]
pub struct CandidateQuery {
    pub offer_id: i64,
    pub center_id: i64,
    pub today_ymd: i64,
    /// `birth_lo < birth_ymd <= birth_hi`
    pub birth_lo: i64,
    pub birth_hi: i64,
    /// Per weekday (Monday first) the minutes of the offer window, (0, 0) for none.
    pub windows: [(i16, i16); 7],
    pub limit: i64,
    /// Only people invited fewer than `per_day` times since `since` (ms):
    /// invitations withdrawn before they left do not count.
    pub since: i64,
    pub per_day: i64,
    /// Only people with a phone (e-mail does not work just now).
    pub need_phone: bool,
}

/// An invitation ready to store with its messages (already rendered).
#[derive(Clone)]
pub struct NewInvitation {
    pub registrant_id: i64,
    pub token_hash: String,
    pub me_token_hash: String,
    pub messages: Vec<NewMessage>,
    /// The code an invitation SMS carries; a reply quoting it accepts.
    pub short_code: Option<String>,
}

/// An open invitation found from an SMS reply: what accepting it needs, and
/// how to answer the person.
#[derive(Debug, Clone)]
pub struct ReplyMatch {
    pub token_hash: String,
    pub registrant_id: i64,
    pub language: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InvitationRecord {
    pub id: i64,
    pub offer_id: i64,
    pub registrant_id: i64,
    pub status: String,
    pub center_id: i64,
    pub center_name: String,
    pub center_address: String,
    pub time_zone: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub expires_at: Option<i64>,
    pub language: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppointmentRecord {
    pub id: i64,
    pub offer_id: i64,
    pub registrant_id: i64,
    pub center_id: i64,
    pub vaccine: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub status: String,
    #[serde(skip)]
    pub first_name: Option<String>,
    #[serde(skip)]
    pub last_name: Option<String>,
}

#[derive(Debug, Clone)]
pub enum AcceptOutcome {
    Booked(AppointmentRecord),
    /// The doses are gone: the person keeps their place.
    OfferFilled,
    Expired,
    /// Withdrawn, or the person withdrew, paused or booked elsewhere:
    /// nothing changed.
    Closed,
    /// Already answered: the status it has.
    Answered(String),
    Unknown,
}

/// What a gateway's delivery receipt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    Recorded,
    /// A receipt for an SMS whose delivery is already known (a repeat, or a
    /// state that would move it backwards), or that never left: nothing changed.
    Unchanged,
    /// No SMS has this reference (an e-mail's reference included).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclineOutcome {
    Declined,
    Expired,
    Answered(String),
    Unknown,
}

/// Contact details handed to a message renderer inside a transaction.
#[derive(Clone)]
pub struct Contact {
    pub registrant_id: i64,
    pub language: String,
    pub first_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// Messages a state change calls for, with the hash of the fresh
/// self-service token their links carry.
#[derive(Clone)]
pub struct Rendered {
    pub messages: Vec<NewMessage>,
    pub me_token_hash: String,
}

/// What decides whether an expired invitation's silence counts against its
/// person: when it was handed over, the centre's time zone and own quiet
/// hours, and the person's weekly availability (weekday 0 for Monday,
/// minutes; empty: any time).
#[derive(Debug, Clone)]
pub struct SilenceContext {
    pub sent_at: i64,
    pub time_zone: String,
    pub quiet_hours: Option<String>,
    pub slots: Vec<(i16, i16, i16)>,
}

/// Judges a silence (the engine's rule, from the domain crate).
pub type SilenceJudge<'a> = &'a (dyn Fn(&SilenceContext) -> bool + Sync);

/// After how many consecutive counted silences, none older than
/// `window_ms` than the next, a person is paused.
#[derive(Debug, Clone, Copy)]
pub struct PauseRule {
    pub after: i64,
    pub window_ms: i64,
}

/// Renders those messages inside the change's transaction.
pub type Renderer<'a, T> = &'a (dyn Fn(&Contact, &T) -> Rendered + Sync);

#[derive(Debug, Clone, Serialize)]
pub struct UserSummary {
    pub id: i64,
    pub email: String,
    pub role: String,
    pub center_id: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::NidKey;

    #[test]
    fn nid_keys_are_16_bytes_shown_as_32_hex_digits() {
        let bytes = [
            0x00, 0xff, 0x10, 0xa9, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18, 0x29, 0x3a, 0x4b,
            0x5c, 0x6d,
        ];
        let key = NidKey::try_from(&bytes[..]).unwrap();
        assert_eq!(key.0, bytes);
        let hex = "00ff10a9b2c3d4e5f60718293a4b5c6d";
        assert_eq!(key.to_string(), hex);
        assert_eq!(format!("{key:?}"), format!("NidKey({hex})"));
        // Any other length (a key stored before migration 0005 as text, say) is no key.
        assert!(NidKey::try_from(&bytes[..15]).is_err());
        assert!(NidKey::try_from(hex.as_bytes()).is_err());
    }
}
