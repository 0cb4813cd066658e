//! Sessions: each completed login starts one, and its refresh tokens rotate.
//!
//! A session remembers its current refresh token and the one before it. Presenting the
//! current one rotates it. Presenting the previous one within the grace period rotates
//! nothing: it gets the successor already issued, so that clients refreshing one token at once
//! (two tabs, a retry after a lost answer) all end holding the same live token. Rotating again
//! there would make the other clients' successors stale, and their next refresh would look
//! like theft. Any other, older token, or the previous one after the grace period, proves that
//! a token was copied, so the whole session is revoked (refresh-token reuse detection,
//! RFC 9700 §4.14.2).
//! Sessions also end by logout, by the user ending them, and at their absolute age limit,
//! however often they were refreshed.

use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::aggregate::User;
use super::{EndOtherSessions, EndSession, RefreshSession, UserError, UserEvent};
use crate::services::UserServices;
use crate::values::{RefreshTokenId, SessionId};

/// A session's absolute lifetime: refreshing never extends it past this.
pub const SESSION_MAX_AGE: Duration = Duration::days(30);
/// Sessions kept at once; a new login ends the oldest.
pub const MAX_SESSIONS: usize = 100;

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionEndReason {
    /// The user logged out of it.
    LoggedOut,
    /// The user ended it from another session.
    EndedByUser,
    /// A rotated refresh token was presented again: the session is presumed stolen.
    RefreshTokenReused,
    /// It reached its absolute lifetime.
    Expired,
    /// The password was changed or reset.
    PasswordChanged,
    /// An admin ended it (or locked the account).
    EndedByAdmin,
    /// A new login found the user at [`MAX_SESSIONS`]; the oldest session made room.
    SessionLimit,
    /// The account was erased.
    AccountErased,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Session {
    pub(super) id: SessionId,
    pub(super) current: RefreshTokenId,
    #[serde(with = "crate::rfc3339::option_pair")]
    pub(super) previous: Option<(RefreshTokenId, OffsetDateTime)>,
    #[serde(with = "time::serde::rfc3339")]
    pub(super) expires_at: OffsetDateTime,
    /// When the full sign-in that started it completed; refreshes keep it.
    #[serde(with = "time::serde::rfc3339")]
    pub(super) signed_in_at: OffsetDateTime,
}

impl User {
    /// Starts a session after a completed login. At [`MAX_SESSIONS`] the oldest sessions are
    /// ended first, as recorded events, so that every view of the sessions drops them too.
    pub(super) async fn start_session(
        &mut self,
        services: &UserServices,
        at: OffsetDateTime,
        sink: &EventSink<Self>,
    ) {
        let excess = (self.sessions.len() + 1).saturating_sub(MAX_SESSIONS);
        let oldest: Vec<SessionId> = self.sessions.iter().take(excess).map(|s| s.id).collect();
        for session_id in oldest {
            let ended = UserEvent::SessionEnded {
                session_id,
                reason: SessionEndReason::SessionLimit,
                at,
            };
            sink.write(ended, self).await;
        }
        let started = UserEvent::SessionStarted {
            session_id: SessionId::from_uuid(services.rng.uuid()),
            refresh_id: RefreshTokenId::from_uuid(services.rng.uuid()),
            expires_at: at + SESSION_MAX_AGE,
            at,
        };
        sink.write(started, self).await;
    }

    /// Rotates a session's refresh token, or revokes the session on reuse. Both outcomes are
    /// recorded events, so a revocation is never lost with an error.
    pub(super) async fn refresh_session(
        &mut self,
        command: RefreshSession,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        let at = services.clock.now();
        let Some(session) = self.sessions.iter().find(|s| s.id == command.session_id) else {
            return Err(UserError::SessionEnded);
        };
        // Locking ends every session, so this only guards against a session started since.
        self.ensure_account_open()?;
        let presented = command.refresh_id;
        let within_grace = matches!(session.previous, Some((previous, rotated_at))
            if previous == presented && at - rotated_at <= command.reuse_grace);
        if at < session.expires_at && presented != session.current && within_grace {
            // A repeat of a refresh already decided: its successor stands (see the module doc).
            return Ok(());
        }
        let event = if at >= session.expires_at {
            UserEvent::SessionEnded {
                session_id: session.id,
                reason: SessionEndReason::Expired,
                at,
            }
        } else if presented == session.current {
            UserEvent::SessionRefreshed {
                session_id: session.id,
                refresh_id: RefreshTokenId::from_uuid(services.rng.uuid()),
                at,
            }
        } else {
            UserEvent::SessionEnded {
                session_id: session.id,
                reason: SessionEndReason::RefreshTokenReused,
                at,
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    /// The current refresh token of the live session `session_id`.
    pub fn current_refresh_token(&self, session_id: SessionId) -> Option<RefreshTokenId> {
        self.sessions
            .iter()
            .find(|s| s.id == session_id)
            .map(|s| s.current)
    }

    /// Ends one session (logout, or the user ending it). Ending a session other than the
    /// caller's needs a re-authentication, as ending all the others does.
    pub(super) async fn end_session(
        &mut self,
        command: EndSession,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        if !self.sessions.iter().any(|s| s.id == command.session_id) {
            return Err(UserError::UnknownSession);
        }
        if let Some(reauthentication) = &command.reauthentication {
            if !self
                .reauthenticate_caller(reauthentication, services, sink)
                .await?
            {
                return Ok(());
            }
        }
        let ended = UserEvent::SessionEnded {
            session_id: command.session_id,
            reason: command.reason,
            at: services.clock.now(),
        };
        sink.write(ended, self).await;
        Ok(())
    }

    /// Ends every session but `keep`, once the caller re-authenticated: whoever holds a
    /// stolen access token must not be able to throw the owner out.
    pub(super) async fn end_other_sessions(
        &mut self,
        command: EndOtherSessions,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        if !self
            .reauthenticate_caller(&command.reauthentication, services, sink)
            .await?
        {
            return Ok(());
        }
        let at = services.clock.now();
        let others: Vec<SessionId> = self
            .sessions
            .iter()
            .map(|s| s.id)
            .filter(|id| *id != command.keep)
            .collect();
        for session_id in others {
            let ended = UserEvent::SessionEnded {
                session_id,
                reason: SessionEndReason::EndedByUser,
                at,
            };
            sink.write(ended, self).await;
        }
        Ok(())
    }
}
