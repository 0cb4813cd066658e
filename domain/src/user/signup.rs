//! Sign-up and enabling two-factor authentication.

use cqrs_es::event_sink::EventSink;
use secrecy::ExposeSecret;

use super::aggregate::User;
use super::proofs::backup_code_digests;
use super::{
    Device, DeviceSecret, EnableTfa, NewDevice, SignUp, TfaEnrolment, UserError, UserEvent,
    SIGN_UP_NOTICE_INTERVAL,
};
use crate::services::UserServices;
use crate::values::{DeviceId, KeyedDigest};

impl User {
    pub(super) async fn sign_up(
        &mut self,
        command: SignUp,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if self.account.is_some() || self.erased {
            return Err(UserError::AlreadyRegistered);
        }
        let password_hash = services.hasher.hash(&command.password).await?;
        let at = services.clock.now();
        let signed_up = UserEvent::SignedUp {
            user_id: command.user_id,
            email: command.email,
            full_name: command.full_name,
            password_hash,
            at,
        };
        sink.write(signed_up, self).await;
        if let Some(enrolment) = command.tfa {
            sink.write(tfa_enabled(enrolment, services), self).await;
        }
        Ok(())
    }

    /// Records that someone tried to sign up with this address, unless the owner was told of
    /// an attempt less than [`SIGN_UP_NOTICE_INTERVAL`] ago.
    pub(super) async fn note_sign_up_attempt(
        &mut self,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        let at = services.clock.now();
        let told_recently = self
            .last_sign_up_notice
            .is_some_and(|last| at - last < SIGN_UP_NOTICE_INTERVAL);
        if !told_recently {
            sink.write(UserEvent::SignUpAttempted { at }, self).await;
        }
        Ok(())
    }

    pub(super) async fn enable_tfa(
        &mut self,
        command: EnableTfa,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        if self.tfa.is_some() {
            return Err(UserError::TfaAlreadyEnabled);
        }
        if self.passkey_only()
            && !self
                .reauthenticate_with_passkey(&command.reauthentication, services, sink)
                .await?
        {
            return Ok(());
        }
        sink.write(tfa_enabled(command.enrolment, services), self)
            .await;
        Ok(())
    }
}

/// Seals the seed and digests the backup codes: nothing enrolled is recorded in clear.
fn tfa_enabled(enrolment: TfaEnrolment, services: &UserServices) -> UserEvent {
    let (device, backup_codes) = enrolled(enrolment, services);
    UserEvent::TfaEnabled {
        device,
        backup_codes,
        at: services.clock.now(),
    }
}

/// The device record and backup-code digests of an enrolment.
pub(super) fn enrolled(
    enrolment: TfaEnrolment,
    services: &UserServices,
) -> (Device, Vec<KeyedDigest>) {
    let secret = match enrolment.device {
        NewDevice::Email => DeviceSecret::Email,
        NewDevice::CodeGenerator { seed } => DeviceSecret::CodeGenerator {
            seed: services.sealer.seal(seed.expose_secret()),
        },
    };
    let backup_codes = backup_code_digests(&enrolment.backup_codes, services);
    let device = Device {
        id: DeviceId::from_uuid(services.rng.uuid()),
        secret,
    };
    (device, backup_codes)
}
