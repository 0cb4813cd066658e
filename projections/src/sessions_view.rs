//! The sessions view: a user's live sessions, with where they were last used from. The IP
//! address and user agent come from the events' metadata, where the API records them.

use cqrs_es::{EventEnvelope, View};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use twofold_domain::values::SessionId;
use twofold_domain::{EventMetadata, User, UserEvent};

use crate::ProjectedView;

/// A user's live sessions.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsView {
    /// Oldest first.
    pub sessions: Vec<SessionSummary>,
}

/// One live session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionSummary {
    /// The session id.
    pub id: SessionId,
    /// When the login completed.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The last login or refresh.
    #[serde(with = "time::serde::rfc3339")]
    pub last_used_at: OffsetDateTime,
    /// The client address of the last use.
    pub ip_address: Option<String>,
    /// The client's `User-Agent` at the last use.
    pub user_agent: Option<String>,
}

impl ProjectedView for SessionsView {
    const NAME: &'static str = "session_view";

    fn is_changed_by(event: &UserEvent) -> bool {
        match event {
            UserEvent::SessionStarted { .. }
            | UserEvent::SessionRefreshed { .. }
            | UserEvent::SessionEnded { .. }
            | UserEvent::UserErased { .. } => true,
            UserEvent::SignedUp { .. }
            | UserEvent::TfaEnabled { .. }
            | UserEvent::TfaDeviceChanged { .. }
            | UserEvent::TfaDisabled { .. }
            | UserEvent::AdminGranted { .. }
            | UserEvent::AccountLocked { .. }
            | UserEvent::AccountUnlocked { .. }
            | UserEvent::LoggedIn { .. }
            | UserEvent::SecondFactorRequired { .. }
            | UserEvent::EmailCodeIssued { .. }
            | UserEvent::ConfirmationCodeIssued { .. }
            | UserEvent::LoginFailed { .. }
            | UserEvent::TfaVerified { .. }
            | UserEvent::BackupCodeConsumed { .. }
            | UserEvent::FactorLocked { .. }
            | UserEvent::PasswordChanged { .. }
            | UserEvent::PasswordResetRequested { .. }
            | UserEvent::PasswordReset { .. }
            | UserEvent::SecondFactorConfirmed { .. }
            | UserEvent::BackupCodesRegenerated { .. }
            | UserEvent::SeedResealed { .. }
            | UserEvent::SignUpAttempted { .. }
            | UserEvent::AuditTrailRead { .. }
            | UserEvent::PasskeyRegistered { .. }
            | UserEvent::PasskeyRenamed { .. }
            | UserEvent::PasskeyRemoved { .. }
            | UserEvent::PasskeyUsed { .. }
            | UserEvent::PasskeyCounterRegressed { .. } => false,
        }
    }

    /// A session's start and its refreshes give access; losing one of them refuses the
    /// session's tokens until it is applied again. Its end and an erasure take access away,
    /// and are written durably.
    fn may_commit_lazily(event: &UserEvent) -> bool {
        matches!(
            event,
            UserEvent::SessionStarted { .. } | UserEvent::SessionRefreshed { .. }
        )
    }
}

/// The client address and user agent recorded with `event`, read only for the events that
/// keep them.
fn client(event: &EventEnvelope<User>) -> (Option<String>, Option<String>) {
    EventMetadata::client_of(&event.metadata)
}

impl View<User> for SessionsView {
    fn update(&mut self, event: &EventEnvelope<User>) {
        match &event.payload {
            UserEvent::SessionStarted { session_id, at, .. } => {
                let (ip_address, user_agent) = client(event);
                self.sessions.push(SessionSummary {
                    id: *session_id,
                    created_at: *at,
                    last_used_at: *at,
                    ip_address,
                    user_agent,
                });
            }
            UserEvent::SessionRefreshed { session_id, at, .. } => {
                if let Some(session) = self.sessions.iter_mut().find(|s| s.id == *session_id) {
                    let (ip_address, user_agent) = client(event);
                    session.last_used_at = *at;
                    session.ip_address = ip_address;
                    session.user_agent = user_agent;
                }
            }
            UserEvent::SessionEnded { session_id, .. } => {
                self.sessions.retain(|session| session.id != *session_id);
            }
            UserEvent::UserErased { .. } => self.sessions.clear(),
            _ => {}
        }
    }
}
