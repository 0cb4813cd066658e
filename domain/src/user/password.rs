//! Changing a password, and resetting a forgotten one with an emailed single-use token.
//!
//! A reset token carries 256 random bits and is stored only as a keyed digest; it expires
//! after [`RESET_TOKEN_TTL`] (ASVS 5.0 §6.4.1 asks for a short life) and works once. A reset
//! sets the password and nothing else: two-factor authentication still applies at the next
//! login (ASVS §6.4.3). Both a change and a reset end other sessions, since whoever held the
//! old password may hold them.

use cqrs_es::event_sink::EventSink;
use secrecy::ExposeSecret;

use super::aggregate::User;
use super::{
    ChangePassword, RequestPasswordReset, ResetPassword, SessionEndReason, UserError, UserEvent,
};
use crate::services::UserServices;
use crate::values::SessionId;

/// How long a reset token works.
pub const RESET_TOKEN_TTL: time::Duration = time::Duration::minutes(15);

impl User {
    pub(super) async fn change_password(
        &mut self,
        command: ChangePassword,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self
            .check_password(&command.current, services, sink)
            .await?
        {
            return Ok(());
        }
        let at = services.clock.now();
        let password_hash = services.hasher.hash(&command.new).await?;
        sink.write(UserEvent::PasswordChanged { password_hash, at }, self)
            .await;
        self.end_sessions_except(command.keep_session, at, sink)
            .await;
        Ok(())
    }

    pub(super) async fn request_password_reset(
        &mut self,
        command: RequestPasswordReset,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        let at = services.clock.now();
        let requested = UserEvent::PasswordResetRequested {
            digest: services
                .sealer
                .digest(command.token.expose_secret().as_bytes()),
            expires_at: at + RESET_TOKEN_TTL,
            at,
        };
        sink.write(requested, self).await;
        Ok(())
    }

    pub(super) async fn reset_password(
        &mut self,
        command: ResetPassword,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        let at = services.clock.now();
        let valid = self
            .password_reset
            .as_ref()
            .is_some_and(|(digest, expires_at)| {
                at < *expires_at
                    && services
                        .sealer
                        .matches(digest, command.token.expose_secret().as_bytes())
            });
        if !valid {
            return Err(UserError::ResetTokenInvalid);
        }
        let password_hash = services.hasher.hash(&command.new).await?;
        sink.write(UserEvent::PasswordReset { password_hash, at }, self)
            .await;
        self.end_all_sessions(SessionEndReason::PasswordChanged, at, sink)
            .await;
        Ok(())
    }

    async fn end_sessions_except(
        &mut self,
        keep: Option<SessionId>,
        at: time::OffsetDateTime,
        sink: &EventSink<Self>,
    ) {
        let ending: Vec<SessionId> = self
            .sessions
            .iter()
            .map(|session| session.id)
            .filter(|id| Some(*id) != keep)
            .collect();
        for session_id in ending {
            let ended = UserEvent::SessionEnded {
                session_id,
                reason: SessionEndReason::PasswordChanged,
                at,
            };
            sink.write(ended, self).await;
        }
    }
}
