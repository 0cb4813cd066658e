//! The system clock.

use time::OffsetDateTime;
use twofold_domain::services::Clock;

/// Reads the system's UTC time.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}
