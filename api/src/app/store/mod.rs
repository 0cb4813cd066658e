//! Event repositories: Postgres (through postgres-es) and in memory. Both write a user's email
//! reservation in the same atomic step as the `SignedUp` event that claims it, so email
//! uniqueness holds under concurrency and the email -> user lookup is never behind.

mod memory;
mod postgres;

use async_trait::async_trait;
use cqrs_es::persist::{PersistenceError, SerializedEvent};
use twofold_domain::values::{Email, UserId};
use twofold_domain::UserEvent;
use twofold_nats::{MailJob, OUTBOX_METADATA_KEY};

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

/// Takes the mail jobs the gateway attached to a commit out of the events' metadata, so they
/// go to the outbox in the same atomic step as the events and are never stored as metadata.
fn take_outbox(
    events: &[SerializedEvent],
) -> Result<(Vec<MailJob>, Vec<SerializedEvent>), PersistenceError> {
    let mut jobs = Vec::new();
    let mut stripped = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let mut event = event.clone();
        if let Some(serialized) = event
            .metadata
            .as_object_mut()
            .and_then(|metadata| metadata.remove(OUTBOX_METADATA_KEY))
        {
            // The gateway copies the same jobs into every event of a commit: take them once.
            if index == 0 {
                let serialized = serialized.as_str().unwrap_or_default();
                jobs = serde_json::from_str(serialized)?;
            }
        }
        stripped.push(event);
    }
    Ok((jobs, stripped))
}
