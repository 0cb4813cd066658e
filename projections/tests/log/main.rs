//! Tests of the log, the views that follow it and their rebuild, on a real Postgres: each test
//! gets a fresh database, dropped at the end.

// Test code: any step that fails should fail the test at once, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod db;
mod migration;
mod order;
mod rebuild;
mod views;
