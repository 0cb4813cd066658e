//! Tests of the real `twofold` binary: its command line, its configuration, a SIGKILL between
//! commit and publish, and SIGTERM. They live in this package because Cargo exposes
//! `CARGO_BIN_EXE_twofold` only to its tests, and in one test binary because each test binary
//! links the whole dependency tree again.

// Test code: any step that fails should fail the test at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod common;
mod config;
mod crash;
mod first_run;
mod key_files;
mod shutdown;
mod slow_clients;
