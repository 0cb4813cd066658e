//! What the tests of every crate share: scratch databases, NATS prefixes and folders that are
//! removed when a test ends ([`scratch`]), and the sweep `scripts/test` runs for what a killed
//! run left. The integration tests themselves live in `it/`.

pub mod scratch;
