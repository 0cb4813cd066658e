//! The mailer library and the `twofold-mailer` binary against a real NATS JetStream: one test
//! binary, since each test binary links the whole dependency tree again.

// Test code: any step that fails should fail the test at once, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod jetstream;
mod metrics;
mod settings;
