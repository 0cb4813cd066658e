//! Event repositories: Postgres (through postgres-es) and in memory. Both write a user's email
//! reservation in the same atomic step as the `SignedUp` event that claims it, so email
//! uniqueness holds under concurrency and the email -> user lookup is never behind.

mod memory;
mod postgres;

use async_trait::async_trait;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use twofold_domain::values::{Email, UserId};
use twofold_domain::UserEvent;
use twofold_nats::MailJob;

pub use memory::MemEventRepository;
pub use postgres::PgEventRepository;

/// Raised (boxed in `PersistenceError::UnknownError`) when a sign-up claims a taken email.
#[derive(Debug, thiserror::Error)]
#[error("the email address is already registered")]
pub struct EmailTaken;

/// Finds the user an email address belongs to, case-insensitively.
#[async_trait]
pub trait EmailIndex: Send + Sync {
    /// The owner of `email`, if any.
    async fn find_user(&self, email: &Email) -> Result<Option<UserId>, PersistenceError>;
}

/// The email reservation a stored event makes, if it is a sign-up.
fn claimed_email(event: &SerializedEvent) -> Result<Option<(String, UserId)>, PersistenceError> {
    if event.aggregate_type != <twofold_domain::User as cqrs_es::Aggregate>::TYPE {
        return Ok(None);
    }
    let payload: UserEvent = serde_json::from_value(event.payload.clone())?;
    Ok(match payload {
        UserEvent::SignedUp { user_id, email, .. } => Some((email.key(), user_id)),
        _ => None,
    })
}

/// A user's folded state after one of their events, taken so that loading them does not
/// fold every event again. A cache of the events, never the truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The sequence of the last event folded into it.
    pub sequence: usize,
    /// The state's shape when it was taken (`twofold_domain::user::SNAPSHOT_VERSION`).
    pub state_version: String,
    /// The folded state.
    pub state: serde_json::Value,
}

/// The write side of an event store: a command's events and the mail jobs they cause,
/// committed in one atomic step (with any email reservation the events make, and a new
/// snapshot), or not at all; and the snapshots it keeps.
pub trait EventRepository: PersistedEventRepository + EmailIndex + Clone + 'static {
    /// Appends `events` (one aggregate's, numbered after its last stored one), queues `jobs`
    /// and keeps `snapshot` (unless a newer one is kept). A sequence already taken is
    /// `OptimisticLockError`; a taken email, [`EmailTaken`].
    fn commit(
        &self,
        events: &[SerializedEvent],
        jobs: &[MailJob],
        snapshot: Option<&Snapshot>,
    ) -> impl std::future::Future<Output = Result<(), PersistenceError>> + Send;

    /// The newest snapshot of user `aggregate_id` that can be trusted, if any.
    fn snapshot(
        &self,
        aggregate_id: &str,
    ) -> impl std::future::Future<Output = Result<Option<Snapshot>, PersistenceError>> + Send;
}
