//! The second step of a login: a TOTP or emailed code, or a backup code.

use cqrs_es::event_sink::EventSink;

use super::aggregate::{Challenge, User};
use super::{
    DeviceSecret, Factor, ThrottledFactor, UseBackupCode, UserError, UserEvent, VerifyTfaCode,
    MAX_CHALLENGE_FAILURES,
};
use crate::services::UserServices;
use crate::values::ChallengeId;

impl User {
    /// Accepts a code for an open challenge. A TOTP code is accepted for the current step and
    /// one either side; a step at or before the last accepted one is a replay and refused
    /// (RFC 6238 §5.2). An emailed code is accepted once, before it expires.
    pub(super) async fn verify_tfa_code(
        &mut self,
        command: VerifyTfaCode,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        let at = services.clock.now();
        self.ensure_account_open()?;
        self.ensure_unlocked(ThrottledFactor::SecondFactor, at)?;
        let challenge = self.open_challenge(command.challenge_id)?.clone();
        let Some(tfa) = &self.tfa else {
            return Err(UserError::TfaNotEnabled);
        };
        // `Some(totp_step)` when the code is right.
        let (factor, verified) = match &tfa.device.secret {
            DeviceSecret::CodeGenerator { seed } => {
                let step = self.prove_totp(seed, &command.code, services, at)?;
                (Factor::Totp, step.map(Some))
            }
            DeviceSecret::Email => {
                let correct = challenge.prove_email_code(&command.code, services, at)?;
                (Factor::EmailCode, correct.then_some(None))
            }
        };
        match verified {
            Some(totp_step) => {
                let verified = UserEvent::TfaVerified {
                    challenge_id: challenge.id,
                    factor,
                    totp_step,
                    at,
                };
                sink.write(verified, self).await;
                self.start_session(services, at, sink).await;
            }
            None => {
                self.record_failure(factor, Some(challenge.id), at, sink)
                    .await;
            }
        }
        Ok(())
    }

    /// Spends one backup code to complete a challenge. Codes are compared by keyed digest.
    pub(super) async fn use_backup_code(
        &mut self,
        command: UseBackupCode,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        let at = services.clock.now();
        self.ensure_account_open()?;
        self.ensure_unlocked(ThrottledFactor::BackupCode, at)?;
        let challenge_id = self.open_challenge(command.challenge_id)?.id;
        if self.tfa.is_none() {
            return Err(UserError::TfaNotEnabled);
        }
        let remaining = self.backup_codes_remaining();
        if remaining == 0 {
            return Err(UserError::NoBackupCodesLeft);
        }
        match self.find_backup_code(&command.code, services) {
            Some(index) => {
                let consumed = UserEvent::BackupCodeConsumed {
                    challenge_id,
                    index,
                    remaining: remaining - 1,
                    at,
                };
                sink.write(consumed, self).await;
                self.start_session(services, at, sink).await;
            }
            None => {
                self.record_failure(Factor::BackupCode, Some(challenge_id), at, sink)
                    .await;
            }
        }
        Ok(())
    }

    /// The challenge, if it is open and has not failed too often.
    pub(super) fn open_challenge(&self, id: ChallengeId) -> Result<&Challenge, UserError> {
        self.account()?;
        self.challenge(id)
            .filter(|challenge| challenge.failures < MAX_CHALLENGE_FAILURES)
            .ok_or(UserError::ChallengeClosed)
    }
}
