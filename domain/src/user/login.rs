//! The first step of a login: the password.

use cqrs_es::event_sink::EventSink;
use secrecy::ExposeSecret;

use super::aggregate::User;
use super::{DeviceSecret, Factor, LogIn, ThrottledFactor, UserError, UserEvent, EMAIL_CODE_TTL};
use crate::services::UserServices;
use crate::values::ChallengeId;

impl User {
    /// Checks a password as every command that takes one does: refused while the password is
    /// locked (before it is checked, so a locked attempt says nothing about it); a wrong one
    /// is a recorded, throttled failure (`Ok(false)`); a right one for an account an admin
    /// locked is refused (so only someone who knows the password learns of the lock).
    pub(super) async fn check_password(
        &mut self,
        password: &secrecy::SecretString,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<bool, UserError> {
        let password_hash = self.account()?.password_hash.clone();
        self.ensure_unlocked(ThrottledFactor::Password, services.clock.now())?;
        let correct = services.hasher.verify(password, &password_hash).await?;
        if !correct {
            let at = services.clock.now();
            self.record_failure(Factor::Password, None, at, sink).await;
            return Ok(false);
        }
        self.ensure_account_open()?;
        Ok(true)
    }

    /// A wrong password is a recorded `LoginFailed`, not an error, so that it is stored.
    /// A right one completes the login, or opens a challenge for the second factor.
    pub(super) async fn log_in(
        &mut self,
        command: LogIn,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self
            .check_password(&command.password, services, sink)
            .await?
        {
            return Ok(());
        }
        let at = services.clock.now();
        // A passkey is a second factor: a user with one is asked for it (or for their TOTP,
        // emailed or backup code, when they have those too) even without a device.
        if self.tfa.is_none() && self.passkeys.is_empty() {
            sink.write(UserEvent::LoggedIn { at }, self).await;
            self.start_session(services, at, sink).await;
            return Ok(());
        }
        let email_device = self
            .tfa
            .as_ref()
            .is_some_and(|tfa| matches!(tfa.device.secret, DeviceSecret::Email));
        let challenge_id = ChallengeId::from_uuid(services.rng.uuid());
        sink.write(UserEvent::SecondFactorRequired { challenge_id, at }, self)
            .await;
        if email_device {
            let digest = services
                .sealer
                .digest(command.email_code.expose_secret().as_bytes());
            let issued = UserEvent::EmailCodeIssued {
                challenge_id,
                digest,
                expires_at: at + EMAIL_CODE_TTL,
            };
            sink.write(issued, self).await;
        }
        Ok(())
    }
}
