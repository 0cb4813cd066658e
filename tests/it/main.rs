//! Black-box tests of the running service: each starts Twofold on port 0 against a fresh
//! Postgres database (or the embedded store) and talks to it over HTTP as a client would.

// Test code: any step that fails should fail the test at once, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod compat;
mod concurrency;
mod devtools;
mod enumeration;
mod erasure;
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
mod outage;
mod overload;
mod panics;
mod passkey_page;
mod passkeys;
mod password;
mod pg_server;
mod rate_limit;
mod reauth;
mod recent_users;
mod refresh_race;
mod reset_abuse;
mod revocation;
mod schemathesis;
mod secrets;
mod sessions;
mod snapshots;
mod stored_events;
mod tfa_manage;
mod throttle;
mod tokens;
mod views;
