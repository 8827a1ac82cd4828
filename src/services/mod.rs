//! Use cases: what handlers call. Each takes validated input, talks to the
//! store, and answers in domain terms.

pub mod auth;
pub mod engine;
pub mod messages;
pub mod registrant;
pub mod signup;
pub mod staff;
