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

/// The write side of an event store: a command's events and the mail jobs they cause,
/// committed in one atomic step (with any email reservation the events make), or not at all.
pub trait EventRepository: PersistedEventRepository + EmailIndex + Clone + 'static {
    /// Appends `events` (one aggregate's, numbered after its last stored one) and queues
    /// `jobs`. A sequence already taken is `OptimisticLockError`; a taken email, [`EmailTaken`].
    fn commit(
        &self,
        events: &[SerializedEvent],
        jobs: &[MailJob],
    ) -> impl std::future::Future<Output = Result<(), PersistenceError>> + Send;
}
