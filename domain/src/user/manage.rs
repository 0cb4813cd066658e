//! Managing the second factor once it is on: turning it off, switching device, regenerating
//! backup codes. Each needs proof of a current second factor (re-authentication, ASVS 5.0
//! §7.5.1): a code from the authenticator app, or one of the user's backup codes, which every
//! enrolled user has. Turning it off and switching device also need the password. A TOTP code
//! used here is spent like one used to log in; a backup code used here is consumed.

use cqrs_es::event_sink::EventSink;
use secrecy::{ExposeSecret, SecretString};

use super::aggregate::User;
use super::{
    DeviceSecret, DisableTfa, Factor, RegenerateBackupCodes, SwitchTfaDevice, ThrottledFactor,
    UserError, UserEvent,
};
use crate::services::UserServices;
use crate::{backup_codes, totp};

impl User {
    pub(super) async fn disable_tfa(
        &mut self,
        command: DisableTfa,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self
            .verify_password_for_change(&command.password, services, sink)
            .await?
        {
            return Ok(());
        }
        if !self
            .confirm_second_factor(&command.code, services, sink)
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
            .verify_password_for_change(&command.password, services, sink)
            .await?
        {
            return Ok(());
        }
        if !self
            .confirm_second_factor(&command.code, services, sink)
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
        let backup_codes = command
            .codes
            .iter()
            .map(|code| {
                services
                    .sealer
                    .digest(backup_codes::canonical(code).expose_secret().as_bytes())
            })
            .collect();
        let at = services.clock.now();
        sink.write(UserEvent::BackupCodesRegenerated { backup_codes, at }, self)
            .await;
        Ok(())
    }

    /// Checks the password of a sensitive change (see [`User::check_password`]).
    async fn verify_password_for_change(
        &mut self,
        password: &SecretString,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<bool, UserError> {
        self.account()?;
        if self.tfa.is_none() {
            return Err(UserError::TfaNotEnabled);
        }
        self.check_password(password, services, sink).await
    }

    /// Checks a current second factor: a TOTP code (for an authenticator app) or a backup
    /// code. The proof is recorded (spending the TOTP step or the backup code); a wrong code is
    /// a recorded, throttled failure (`Ok(false)`).
    async fn confirm_second_factor(
        &mut self,
        code: &SecretString,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<bool, UserError> {
        let Some(tfa) = &self.tfa else {
            return Err(UserError::TfaNotEnabled);
        };
        let at = services.clock.now();
        let totp_open = self
            .ensure_unlocked(ThrottledFactor::SecondFactor, at)
            .is_ok();
        if let (DeviceSecret::CodeGenerator { seed }, true) = (&tfa.device.secret, totp_open) {
            let seed = services
                .sealer
                .open(seed)
                .map_err(|_| UserError::SecretUnreadable)?;
            if let Some(step) = totp::matching_step(&seed, code.expose_secret().trim(), at) {
                if self.last_totp_step.is_some_and(|last| step <= last) {
                    return Err(UserError::TfaCodeReplayed);
                }
                let confirmed = UserEvent::SecondFactorConfirmed {
                    factor: Factor::Totp,
                    totp_step: Some(step),
                    backup_code_index: None,
                    at,
                };
                sink.write(confirmed, self).await;
                return Ok(true);
            }
        }
        self.ensure_unlocked(ThrottledFactor::BackupCode, at)?;
        let typed = backup_codes::canonical(code);
        let matched = tfa.backup_codes.iter().position(|slot| {
            slot.as_ref().is_some_and(|digest| {
                services
                    .sealer
                    .matches(digest, typed.expose_secret().as_bytes())
            })
        });
        match matched {
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
                let factor = match tfa.device.secret {
                    DeviceSecret::CodeGenerator { .. } => Factor::Totp,
                    DeviceSecret::Email => Factor::BackupCode,
                };
                self.record_failure(factor, None, at, sink).await;
                Ok(false)
            }
        }
    }
}
