//! The sessions view: a user's live sessions, with where they were last used from. The IP
//! address and user agent come from the events' metadata, where the API records them.

use cqrs_es::{EventEnvelope, View};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use twofold_domain::values::SessionId;
use twofold_domain::{EventMetadata, User, UserEvent, UserEventKind};

use crate::{ChangedInPlace, ListChange, ProjectedView};

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

    fn is_changed_by(kind: UserEventKind) -> bool {
        match kind {
            UserEventKind::SessionStarted
            | UserEventKind::SessionRefreshed
            | UserEventKind::SessionEnded
            | UserEventKind::UserErased => true,
            UserEventKind::SignedUp
            | UserEventKind::TfaEnabled
            | UserEventKind::TfaDeviceChanged
            | UserEventKind::TfaDisabled
            | UserEventKind::AdminGranted
            | UserEventKind::AccountLocked
            | UserEventKind::AccountUnlocked
            | UserEventKind::LoggedIn
            | UserEventKind::SecondFactorRequired
            | UserEventKind::EmailCodeIssued
            | UserEventKind::ConfirmationCodeIssued
            | UserEventKind::LoginFailed
            | UserEventKind::TfaVerified
            | UserEventKind::BackupCodeConsumed
            | UserEventKind::FactorLocked
            | UserEventKind::PasswordChanged
            | UserEventKind::PasswordResetRequested
            | UserEventKind::PasswordReset
            | UserEventKind::SecondFactorConfirmed
            | UserEventKind::BackupCodesRegenerated
            | UserEventKind::SeedResealed
            | UserEventKind::SignUpAttempted
            | UserEventKind::AuditTrailRead
            | UserEventKind::PasskeyRegistered
            | UserEventKind::PasskeyRenamed
            | UserEventKind::PasskeyRemoved
            | UserEventKind::PasskeyUsed
            | UserEventKind::PasskeyCounterRegressed => false,
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

/// A use of a session: the fields a refresh sets, named and written as in [`SessionSummary`].
#[derive(Serialize)]
struct SessionUse {
    #[serde(with = "time::serde::rfc3339")]
    last_used_at: OffsetDateTime,
    ip_address: Option<String>,
    user_agent: Option<String>,
}

/// What an event does to the sessions view: the one place both the fold and the change in
/// place read it from.
enum SessionChange {
    Started(SessionSummary),
    Used(SessionId, SessionUse),
    Ended(SessionId),
    AllEnded,
}

impl SessionChange {
    fn of(event: &EventEnvelope<User>) -> Option<Self> {
        Some(match &event.payload {
            UserEvent::SessionStarted { session_id, at, .. } => {
                let (ip_address, user_agent) = client(event);
                Self::Started(SessionSummary {
                    id: *session_id,
                    created_at: *at,
                    last_used_at: *at,
                    ip_address,
                    user_agent,
                })
            }
            UserEvent::SessionRefreshed { session_id, at, .. } => {
                let (ip_address, user_agent) = client(event);
                Self::Used(
                    *session_id,
                    SessionUse {
                        last_used_at: *at,
                        ip_address,
                        user_agent,
                    },
                )
            }
            UserEvent::SessionEnded { session_id, .. } => Self::Ended(*session_id),
            UserEvent::UserErased { .. } => Self::AllEnded,
            _ => return None,
        })
    }
}

impl View<User> for SessionsView {
    fn update(&mut self, event: &EventEnvelope<User>) {
        match SessionChange::of(event) {
            Some(SessionChange::Started(session)) => self.sessions.push(session),
            Some(SessionChange::Used(id, used)) => {
                if let Some(session) = self.sessions.iter_mut().find(|s| s.id == id) {
                    session.last_used_at = used.last_used_at;
                    session.ip_address = used.ip_address;
                    session.user_agent = used.user_agent;
                }
            }
            Some(SessionChange::Ended(id)) => self.sessions.retain(|session| session.id != id),
            Some(SessionChange::AllEnded) => self.sessions.clear(),
            None => {}
        }
    }
}

impl ChangedInPlace for SessionsView {
    const LIST: &'static str = "sessions";

    fn list_change(event: &EventEnvelope<User>) -> Result<Option<ListChange>, serde_json::Error> {
        Ok(Some(match SessionChange::of(event) {
            Some(SessionChange::Started(session)) => {
                ListChange::Append(serde_json::to_value(session)?)
            }
            Some(SessionChange::Used(id, used)) => ListChange::Update {
                id: serde_json::to_value(id)?,
                fields: serde_json::to_value(used)?,
            },
            Some(SessionChange::Ended(id)) => ListChange::Remove {
                id: serde_json::to_value(id)?,
            },
            Some(SessionChange::AllEnded) => ListChange::Clear,
            None => return Ok(None),
        }))
    }
}
