//! Standby's domain: pure types and rules, no I/O.
//!
//! Parse, don't validate: every value that crosses the boundary (national ID,
//! e-mail, phone, names, availability) becomes a newtype here, or a
//! [`FieldError`] naming what is wrong.

pub mod availability;
pub mod clock;
pub mod contact;
pub mod invitation;
pub mod national_id;
pub mod redact;
pub mod registration;
pub mod schedule;
pub mod sms;
pub mod status;

pub use availability::{Availability, Slot, Weekday};
pub use clock::{Clock, ManualClock, SystemClock};
pub use contact::{Email, Language, PersonName, Phone, Title};
pub use invitation::{InvitationEvent, InvitationStatus};
pub use national_id::{BirthDate, Country, NationalId, NationalIdError};
pub use registration::{FieldError, FieldErrors, NewRegistration, RegistrationInput};
pub use status::RegistrantStatus;
