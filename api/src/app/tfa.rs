//! The second factor: turning it on, off, switching device, backup codes, and the QR code of
//! an enrolled authenticator app. Each change after enrolment needs a current second factor
//! (and turning it off or switching device the password too); every change sends a notice.
//! Showing the QR code again needs a re-authentication, as it reveals the seed; an
//! email-device user proves their factor with a confirmation code they ask for.

use secrecy::SecretString;
use twofold_domain::user::{
    ChangeOutcome, DeviceSecret, DisableTfa, EnableTfa, Refusal, RegenerateBackupCodes,
    RequestConfirmationCode, SwitchTfaDevice,
};
use twofold_domain::values::{DeviceType, SessionId, UserId};
use twofold_domain::{totp, EventMetadata, User, UserCommand, UserError};

use super::mail_policy::MailSecrets;
use super::{App, AppError, Proofs, ScanCode};

/// What asking for the authenticator app's code again decided.
pub enum AuthenticatorCode {
    /// The caller re-authenticated: the code to scan.
    Shown(ScanCode),
    /// A proof was wrong.
    Refused(Refusal),
}

/// What switching device decided.
pub enum DeviceSwitch {
    /// Switched; for an authenticator app, the code to scan.
    Switched(Option<ScanCode>),
    /// A proof was wrong.
    Refused(Refusal),
}

impl App {
    /// Turns two-factor authentication on; the backup codes and a notice are emailed. For an
    /// authenticator app, the answer is the code to scan. A user who has a passkey does it
    /// within the re-authentication window after the sign-in of the caller's session `caller`.
    pub async fn enable_tfa(
        &self,
        user_id: UserId,
        caller: SessionId,
        device_type: DeviceType,
        metadata: &EventMetadata,
    ) -> Result<Option<ScanCode>, AppError> {
        let new = self.new_enrolment(device_type);
        let command = UserCommand::EnableTfa(EnableTfa {
            enrolment: new.enrolment,
            reauthentication: self.reauthentication(caller, None),
        });
        let committed = self
            .users
            .execute(user_id, command, metadata, &new.mail)
            .await?;
        tracing::info!(target: "security", %user_id, "two-factor authentication enabled");
        let email = committed.user.email().ok_or(UserError::UnknownUser)?;
        Ok(self.scan_code(email, new.seed.as_ref()))
    }

    /// Turns two-factor authentication off, with the password and a current second factor.
    pub async fn disable_tfa(
        &self,
        user_id: UserId,
        password: SecretString,
        code: SecretString,
        metadata: &EventMetadata,
    ) -> Result<ChangeOutcome, AppError> {
        let command = UserCommand::DisableTfa(DisableTfa { password, code });
        let (outcome, _) = self
            .change(user_id, command, metadata, &MailSecrets::none())
            .await?;
        if outcome == ChangeOutcome::Changed {
            tracing::info!(target: "security", %user_id, "two-factor authentication disabled");
        }
        Ok(outcome)
    }

    /// Replaces the device, with the password and a current second factor; new backup codes
    /// are emailed.
    pub async fn switch_tfa_device(
        &self,
        user_id: UserId,
        password: SecretString,
        code: SecretString,
        device_type: DeviceType,
        metadata: &EventMetadata,
    ) -> Result<DeviceSwitch, AppError> {
        let new = self.new_enrolment(device_type);
        let command = UserCommand::SwitchTfaDevice(SwitchTfaDevice {
            password,
            code,
            enrolment: new.enrolment,
        });
        match self.change(user_id, command, metadata, &new.mail).await? {
            (ChangeOutcome::Changed, user) => {
                tracing::info!(target: "security", %user_id, ?device_type, "two-factor device switched");
                let email = user.email().ok_or(UserError::UnknownUser)?;
                Ok(DeviceSwitch::Switched(
                    self.scan_code(email, new.seed.as_ref()),
                ))
            }
            (ChangeOutcome::Refused(refusal), _) => Ok(DeviceSwitch::Refused(refusal)),
        }
    }

    /// Replaces the backup codes, with a current second factor; the new ones are emailed.
    pub async fn regenerate_backup_codes(
        &self,
        user_id: UserId,
        code: SecretString,
        metadata: &EventMetadata,
    ) -> Result<ChangeOutcome, AppError> {
        let codes = self.new_backup_codes();
        let command = UserCommand::RegenerateBackupCodes(RegenerateBackupCodes {
            code,
            codes: codes.clone(),
        });
        let secrets = MailSecrets {
            backup_codes: codes,
            ..MailSecrets::none()
        };
        let (outcome, _) = self.change(user_id, command, metadata, &secrets).await?;
        if outcome == ChangeOutcome::Changed {
            tracing::info!(target: "security", %user_id, "backup codes regenerated");
        }
        Ok(outcome)
    }

    /// How many unused backup codes the user has.
    pub async fn backup_codes_left(&self, user_id: UserId) -> Result<usize, AppError> {
        Ok(self.existing(user_id).await?.backup_codes_remaining())
    }

    /// The code to scan again for the user's authenticator app: the TOTP seed itself, so the
    /// caller of session `caller` must re-authenticate first (`proofs`, or a recent sign-in of
    /// that session). A user without an authenticator app spends no proof on the request.
    pub async fn authenticator_code(
        &self,
        user_id: UserId,
        caller: SessionId,
        proofs: Option<Proofs>,
        metadata: &EventMetadata,
    ) -> Result<AuthenticatorCode, AppError> {
        let user = self.existing(user_id).await?;
        if !matches!(
            user.tfa_device().map(|device| &device.secret),
            Some(DeviceSecret::CodeGenerator { .. })
        ) {
            return Err(UserError::NoCodeGenerator.into());
        }
        let command = UserCommand::Reauthenticate(self.reauthentication(caller, proofs));
        let (outcome, user) = self
            .change(user_id, command, metadata, &MailSecrets::none())
            .await?;
        if let ChangeOutcome::Refused(refusal) = outcome {
            return Ok(AuthenticatorCode::Refused(refusal));
        }
        let email = user.email().ok_or(UserError::UnknownUser)?;
        let Some(DeviceSecret::CodeGenerator { seed }) =
            user.tfa_device().map(|device| &device.secret)
        else {
            return Err(UserError::NoCodeGenerator.into());
        };
        let seed = self
            .services
            .sealer
            .open(seed)
            .map_err(|_| UserError::SecretUnreadable)?;
        tracing::info!(target: "security", %user_id, "authenticator app code shown again");
        Ok(AuthenticatorCode::Shown(ScanCode::of(totp::otpauth_uri(
            &self.settings.totp_issuer,
            email,
            &seed,
        ))))
    }

    /// Emails a confirmation code to an email-device user, for the proof of a sensitive
    /// change or a re-authentication (at most one a minute).
    pub async fn send_confirmation_code(
        &self,
        user_id: UserId,
        metadata: &EventMetadata,
    ) -> Result<(), AppError> {
        let code = self.new_email_code();
        let command =
            UserCommand::RequestConfirmationCode(RequestConfirmationCode { code: code.clone() });
        let secrets = MailSecrets {
            email_code: Some(code),
            ..MailSecrets::none()
        };
        self.users
            .execute(user_id, command, metadata, &secrets)
            .await?;
        tracing::info!(target: "security", %user_id, "confirmation code emailed");
        Ok(())
    }

    /// Runs a sensitive change and reads its decision, with the user's state after it; a
    /// refusal is logged.
    pub(super) async fn change(
        &self,
        user_id: UserId,
        command: UserCommand,
        metadata: &EventMetadata,
        secrets: &MailSecrets,
    ) -> Result<(ChangeOutcome, User), AppError> {
        let committed = self
            .users
            .execute(user_id, command, metadata, secrets)
            .await
            .inspect_err(|error| {
                tracing::info!(target: "security", %user_id, code = error.code(), "change refused");
            })?;
        let outcome = ChangeOutcome::read(&committed.events);
        if let ChangeOutcome::Refused(refusal) = outcome {
            tracing::info!(target: "security", %user_id, ?refusal, "change refused");
        }
        Ok((outcome, committed.user))
    }

    /// The user, who must have signed up.
    pub(super) async fn existing(&self, user_id: UserId) -> Result<User, AppError> {
        let user = self.users.load(user_id).await?;
        if user.id().is_none() {
            return Err(UserError::UnknownUser.into());
        }
        Ok(user)
    }
}
