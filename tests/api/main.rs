//! Standby's integration tests: one binary, the real application on
//! loopback, a real database (SQLite file, or PostgreSQL with
//! STANDBY_TEST_DATABASE_URL), real SMTP, headless Chromium.

mod bad_input;
mod browser;
mod cli;
mod engine;
mod helpers;
mod selfservice;
mod setup;
mod signup;
mod smtp;
mod store_contract;
