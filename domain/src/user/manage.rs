//! Managing the second factor once it is on: turning it off, switching device, regenerating
//! backup codes. Each needs proof of a current second factor (re-authentication, ASVS 5.0
//! §7.5.1): a code from the authenticator app, a confirmation code emailed to an email-device
//! user who asked for one, or one of the user's backup codes. Turning it off and switching
//! device also need the password. A TOTP code used here is spent like one used to log in; a
//! confirmation code or a backup code used here is consumed.

use cqrs_es::event_sink::EventSink;
use secrecy::SecretString;

use super::aggregate::User;
use super::proofs::backup_code_digests;
use super::{
    DeviceSecret, DisableTfa, Factor, RegenerateBackupCodes, SwitchTfaDevice, ThrottledFactor,
    UserError, UserEvent,
};
use crate::services::UserServices;

impl User {
    pub(super) async fn disable_tfa(
        &mut self,
        command: DisableTfa,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self
            .reauthenticate(&command.password, &command.code, services, sink)
            .await?
        {
            return Ok(());
        }
        let at = services.clock.now();
        sink.write(UserEvent::TfaDisabled { at }, self).await;
        Ok(())
    }

    pub(super) async fn switch_tfa_device(
        &mut self,
        command: SwitchTfaDevice,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self
            .reauthenticate(&command.password, &command.code, services, sink)
            .await?
        {
            return Ok(());
        }
        let (device, backup_codes) = super::signup::enrolled(command.enrolment, services);
        let at = services.clock.now();
        let changed = UserEvent::TfaDeviceChanged {
            device,
            backup_codes,
            at,
        };
        sink.write(changed, self).await;
        Ok(())
    }

    pub(super) async fn regenerate_backup_codes(
        &mut self,
        command: RegenerateBackupCodes,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        // Refused before the proof is checked, so a locked account spends no code on it.
        self.ensure_account_open()?;
        if !self
            .confirm_second_factor(&command.code, services, sink)
            .await?
        {
            return Ok(());
        }
        let backup_codes = backup_code_digests(&command.codes, services);
        let at = services.clock.now();
        sink.write(UserEvent::BackupCodesRegenerated { backup_codes, at }, self)
            .await;
        Ok(())
    }

    /// The proofs turning the second factor off or switching device need: the password (see
    /// [`User::check_password`]), then a current second factor. `Ok(false)` when either was
    /// wrong, which is recorded; a wrong password spends no second factor.
    async fn reauthenticate(
        &mut self,
        password: &SecretString,
        code: &SecretString,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<bool, UserError> {
        self.account()?;
        if self.tfa.is_none() {
            return Err(UserError::TfaNotEnabled);
        }
        Ok(self.check_password(password, services, sink).await?
            && self.confirm_second_factor(code, services, sink).await?)
    }

    /// Checks a current second factor: a TOTP code (for an authenticator app), a confirmation
    /// code (for an email device, see [`super::reauth`]) or a backup code. The proof is
    /// recorded (spending the TOTP step, the confirmation code or the backup code); a wrong
    /// code is a recorded, throttled failure (`Ok(false)`). It counts against the second
    /// factor when the user has a device code to guess at (an authenticator app, or a pending
    /// confirmation code), and against the backup codes otherwise.
    pub(super) async fn confirm_second_factor(
        &mut self,
        code: &SecretString,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<bool, UserError> {
        let Some(tfa) = &self.tfa else {
            return Err(UserError::TfaNotEnabled);
        };
        let at = services.clock.now();
        let device_open = self
            .ensure_unlocked(ThrottledFactor::SecondFactor, at)
            .is_ok();
        let (device_factor, device_step) = match (&tfa.device.secret, device_open) {
            (DeviceSecret::CodeGenerator { seed }, true) => (
                Factor::Totp,
                self.prove_totp(seed, code, services, at)?.map(Some),
            ),
            (DeviceSecret::CodeGenerator { .. }, false) => (Factor::Totp, None),
            (DeviceSecret::Email, true) => (
                Factor::EmailCode,
                self.prove_confirmation_code(code, services, at)?
                    .then_some(None),
            ),
            (DeviceSecret::Email, false) => (Factor::EmailCode, None),
        };
        if let Some(totp_step) = device_step {
            let confirmed = UserEvent::SecondFactorConfirmed {
                factor: device_factor,
                totp_step,
                backup_code_index: None,
                at,
            };
            sink.write(confirmed, self).await;
            return Ok(true);
        }
        let guessed_device =
            device_factor == Factor::Totp || (device_open && self.confirmation_code_pending(at));
        self.ensure_unlocked(ThrottledFactor::BackupCode, at)?;
        match self.find_backup_code(code, services) {
            Some(index) => {
                let confirmed = UserEvent::SecondFactorConfirmed {
                    factor: Factor::BackupCode,
                    totp_step: None,
                    backup_code_index: Some(index),
                    at,
                };
                sink.write(confirmed, self).await;
                Ok(true)
            }
            None => {
                let factor = if guessed_device {
                    device_factor
                } else {
                    Factor::BackupCode
                };
                self.record_failure(factor, None, at, sink).await;
                Ok(false)
            }
        }
    }
}
