//! Changing a password, and resetting a forgotten one with an emailed single-use token.
//!
//! A reset token carries 256 random bits and is stored only as a keyed digest; it expires
//! after [`RESET_TOKEN_TTL`] (ASVS 5.0 §6.4.1 asks for a short life) and works once. A reset
//! sets the password and nothing else: two-factor authentication still applies at the next
//! login (ASVS §6.4.3). Both a change and a reset end other sessions, since whoever held the
//! old password may hold them.
//!
//! Anyone can ask for a reset of anyone's address, so requests are rationed per account: one
//! email per [`RESET_EMAIL_INTERVAL`] (a request within it records nothing, and the token
//! already mailed keeps working, so an attacker cannot void the owner's token by asking
//! again), and at most [`RESET_EMAILS_PER_DAY`] in any 24 hours (an attacker who asks every
//! few minutes cannot fill the owner's inbox). The caller answers the same either way.

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
/// The shortest time between two reset emails to one account.
pub const RESET_EMAIL_INTERVAL: time::Duration = time::Duration::minutes(5);
/// Reset emails one account gets in any 24 hours.
pub const RESET_EMAILS_PER_DAY: usize = 5;

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
        if !self.may_email_a_reset(at) {
            return Ok(());
        }
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

    /// Whether a reset email may go now: none within [`RESET_EMAIL_INTERVAL`], fewer than
    /// [`RESET_EMAILS_PER_DAY`] within a day.
    fn may_email_a_reset(&self, at: time::OffsetDateTime) -> bool {
        let recent = self
            .reset_requests
            .iter()
            .filter(|requested| at - **requested < time::Duration::DAY)
            .count();
        let cooling_down = self
            .reset_requests
            .last()
            .is_some_and(|last| at - *last < RESET_EMAIL_INTERVAL);
        !cooling_down && recent < RESET_EMAILS_PER_DAY
    }

    /// Folds a reset request into the ration (see [`Self::may_email_a_reset`]).
    pub(super) fn note_reset_request(&mut self, at: time::OffsetDateTime) {
        self.reset_requests.push(at);
        let excess = self
            .reset_requests
            .len()
            .saturating_sub(RESET_EMAILS_PER_DAY);
        self.reset_requests.drain(..excess);
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
