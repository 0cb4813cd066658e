//! The first step of a login: the password.

use cqrs_es::event_sink::EventSink;
use secrecy::ExposeSecret;

use super::aggregate::User;
use super::{DeviceSecret, Factor, LogIn, ThrottledFactor, UserError, UserEvent, EMAIL_CODE_TTL};
use crate::services::UserServices;
use crate::values::ChallengeId;

impl User {
    /// A wrong password is a recorded `LoginFailed`, not an error, so that it is stored.
    /// A right one completes the login, or opens a challenge for the second factor.
    pub(super) async fn log_in(
        &mut self,
        command: LogIn,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        let password_hash = self.account()?.password_hash.clone();
        // Checked before the password, so a locked attempt says nothing about it.
        self.ensure_unlocked(ThrottledFactor::Password, services.clock.now())?;
        let correct = services
            .hasher
            .verify(&command.password, &password_hash)
            .await?;
        let at = services.clock.now();
        if !correct {
            self.record_failure(Factor::Password, None, at, sink).await;
            return Ok(());
        }
        // Only someone who knows the password learns that the account is locked.
        self.ensure_account_open()?;
        let Some(tfa) = &self.tfa else {
            sink.write(UserEvent::LoggedIn { at }, self).await;
            self.start_session(services, at, sink).await;
            return Ok(());
        };
        let email_device = matches!(tfa.device.secret, DeviceSecret::Email);
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
