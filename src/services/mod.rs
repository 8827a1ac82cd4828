//! Use cases: what handlers call. Each takes validated input, talks to the
//! store, and answers in domain terms.

pub mod messages;
pub mod registrant;
pub mod signup;
