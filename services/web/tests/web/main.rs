//! The web adapter against a real nats-server: what a 202 stores, what
//! bad input gets, and what happens while the broker is away.

// Test helpers may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod bad_input;
mod common;
mod hostile;
mod intake;
mod outage;
