//! Erasure: forgetting a person without breaking the log. The events stay; what identifies the
//! person in them is sealed under a key of theirs that erasure destroys, outside the log. Here
//! the aggregate records the fact: every session ends, then `UserErased`, after which the
//! stream is closed for good (the user is unknown to every command; the address is free for a
//! new account, which is another user).

use cqrs_es::event_sink::EventSink;

use super::aggregate::User;
use super::{EraseOwnAccount, SessionEndReason, UserError, UserEvent};
use crate::services::UserServices;

impl User {
    /// The user erases their own account: the password and, with two-factor authentication
    /// on, a current second factor, as for other sensitive changes. A wrong one is recorded
    /// (and throttled) and nothing is erased. A user whose only second factor is a passkey
    /// gives the password within the re-authentication window after signing in with it.
    pub(super) async fn erase_own_account(
        &mut self,
        command: EraseOwnAccount,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        if self.tfa.is_some() && command.code.is_none() {
            return Err(UserError::SecondFactorRequired);
        }
        if self.passkey_only()
            && !self
                .reauthenticate_with_passkey(&command.sign_in, services, sink)
                .await?
        {
            return Ok(());
        }
        if !self
            .check_password(&command.password, services, sink)
            .await?
        {
            return Ok(());
        }
        if let Some(code) = &command.code {
            if self.tfa.is_some() && !self.confirm_second_factor(code, services, sink).await? {
                return Ok(());
            }
        }
        self.erase(services, sink).await;
        Ok(())
    }

    /// An admin or operator erases the account; the metadata names who and why.
    pub(super) async fn erase_account(
        &mut self,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        self.erase(services, sink).await;
        Ok(())
    }

    async fn erase(&mut self, services: &UserServices, sink: &EventSink<Self>) {
        let at = services.clock.now();
        self.end_all_sessions(SessionEndReason::AccountErased, at, sink)
            .await;
        sink.write(UserEvent::UserErased { at }, self).await;
    }
}
