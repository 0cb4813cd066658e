//! Black-box tests of the running service: each starts Twofold on port 0 against a fresh
//! Postgres database (or the embedded store) and talks to it over HTTP as a client would.

// Test code: any step that fails should fail the test at once, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod concurrency;
mod enumeration;
mod errors;
mod health;
mod helpers;
mod hygiene;
mod journey;
mod keys;
mod mail;
mod metrics;
mod nats_server;
mod openapi;
mod overload;
mod password;
mod revocation;
mod secrets;
mod sessions;
mod snapshots;
mod stored_events;
mod tfa_manage;
mod throttle;
mod tokens;
mod views;
