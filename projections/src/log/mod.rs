//! The event log read in commit order: a [`Checkpoint`] to resume from, the [`EventLog`] trait
//! every follower reads through (the catch-up projector, a view filling a gap, the rebuild),
//! and its Postgres implementation. The embedded store implements the trait itself.

mod postgres;

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use cqrs_es::persist::{EventUpcaster, PersistenceError, SerializedEvent};
use cqrs_es::EventEnvelope;
use time::OffsetDateTime;
use twofold_domain::User;

pub(crate) use postgres::sequence_to_sql;
pub use postgres::{database, serialized_event, PgEventLog};

/// A place in the log: every event at or before it has been read. Callers keep it and hand it
/// back; only the log that issued it interprets it. On Postgres it is the writing
/// transaction's id and the row's position, in that order; in memory, the index in the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Checkpoint {
    transaction_id: u64,
    position: i64,
}

impl Checkpoint {
    /// Before the first event.
    pub const ORIGIN: Self = Self {
        transaction_id: 0,
        position: 0,
    };

    /// The checkpoint of a row written by `transaction_id` at `position`.
    pub fn new(transaction_id: u64, position: i64) -> Self {
        Self {
            transaction_id,
            position,
        }
    }

    /// The transaction id part.
    pub fn transaction_id(self) -> u64 {
        self.transaction_id
    }

    /// The position part.
    pub fn position(self) -> i64 {
        self.position
    }
}

/// A cursor: `<transaction id>.<position>`.
impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.transaction_id, self.position)
    }
}

/// A string that is no checkpoint cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a log cursor")]
pub struct BadCursor(pub String);

impl FromStr for Checkpoint {
    type Err = BadCursor;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadCursor(text.to_owned());
        let (transaction_id, position) = text.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            transaction_id: transaction_id.parse().map_err(|_| bad())?,
            position: position.parse().map_err(|_| bad())?,
        })
    }
}

/// One stored event with its place in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Where it is in the log.
    pub checkpoint: Checkpoint,
    /// The event as stored (aggregate id, sequence, type, version, payload, metadata).
    pub event: SerializedEvent,
    /// When it was committed.
    pub recorded_at: OffsetDateTime,
}

/// Reads the event log.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Up to `limit` events after `after`, in log order. It never returns an event while an
    /// event before it may still commit, so a follower that resumes from the last checkpoint
    /// it was given never skips one.
    async fn read_after(
        &self,
        after: Checkpoint,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, PersistenceError>;

    /// Up to `limit` events of user `aggregate_id` with a sequence above `after`, in sequence
    /// order, each with its place in the log and when it was committed.
    async fn user_log(
        &self,
        aggregate_id: &str,
        after: usize,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, PersistenceError>;

    /// The events of user `aggregate_id` with a sequence above `after`, in sequence order.
    async fn user_events(
        &self,
        aggregate_id: &str,
        after: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError>;
}

/// The stored events' upcasters, shared by every reader of the log.
pub type Upcasters = std::sync::Arc<[Box<dyn EventUpcaster>]>;

/// A stored event as the views see it, after the upcasters.
pub fn envelope(
    event: SerializedEvent,
    upcasters: &[Box<dyn EventUpcaster>],
) -> Result<EventEnvelope<User>, PersistenceError> {
    let event = upcasters.iter().fold(event, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    });
    EventEnvelope::try_from(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_survives_its_cursor() {
        let checkpoint = Checkpoint::new(7_000_000_001, 42);
        assert_eq!(checkpoint.to_string().parse(), Ok(checkpoint));
        assert_eq!("".parse::<Checkpoint>(), Err(BadCursor(String::new())));
        assert!("12".parse::<Checkpoint>().is_err());
        assert!("a.1".parse::<Checkpoint>().is_err());
    }

    #[test]
    fn checkpoints_order_by_transaction_then_position() {
        assert!(Checkpoint::new(1, 9) < Checkpoint::new(2, 1));
        assert!(Checkpoint::new(2, 1) < Checkpoint::new(2, 2));
        assert!(Checkpoint::ORIGIN < Checkpoint::new(0, 1));
    }
}
