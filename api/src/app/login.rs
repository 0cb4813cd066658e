//! The login steps: the password, then (with 2FA on) a TOTP or emailed code, or a backup code.
//! Each answers one [`LoginOutcome`]; refusals are recorded in the user's events, logged under
//! the `security` target and counted.

use secrecy::SecretString;
use twofold_domain::user::{LogIn, LoginOutcome, Refusal, UseBackupCode, VerifyTfaCode};
use twofold_domain::values::{ChallengeId, Email, UserId};
use twofold_domain::{EventMetadata, UserCommand, UserError};

use super::mail_policy::MailSecrets;
use super::{App, AppError};

impl App {
    /// Checks the password of the account with address `username`. An unknown address costs,
    /// counts and answers exactly like a wrong password.
    pub async fn log_in(
        &self,
        username: &str,
        password: SecretString,
        metadata: &EventMetadata,
    ) -> Result<LoginOutcome, AppError> {
        let user_id = match Email::parse(username) {
            Ok(email) => self.users.find_by_email(&email).await?,
            Err(_) => None,
        };
        let Some(user_id) = user_id else {
            return self.refuse_unknown_account(username, &password).await;
        };
        let email_code = self.new_email_code();
        let command = UserCommand::LogIn(LogIn {
            password,
            email_code: email_code.clone(),
        });
        let secrets = MailSecrets {
            email_code: Some(email_code),
            ..MailSecrets::none()
        };
        let decided = self
            .users
            .execute(user_id, command, metadata, &secrets)
            .await
            .and_then(|committed| Ok(LoginOutcome::read(user_id, &committed.events)?));
        self.report(Step::Password, user_id, &decided);
        decided
    }

    /// The second step with a TOTP or emailed code, for challenge `challenge_id`.
    pub async fn verify_tfa_code(
        &self,
        user_id: UserId,
        challenge_id: ChallengeId,
        code: SecretString,
        metadata: &EventMetadata,
    ) -> Result<LoginOutcome, AppError> {
        let command = UserCommand::VerifyTfaCode(VerifyTfaCode { challenge_id, code });
        let decided = self
            .users
            .execute(user_id, command, metadata, &MailSecrets::none())
            .await
            .and_then(|committed| Ok(LoginOutcome::read(user_id, &committed.events)?));
        self.report(Step::SecondFactor, user_id, &decided);
        decided
    }

    /// The second step with a backup code, which is spent (and a notice emailed).
    pub async fn use_backup_code(
        &self,
        user_id: UserId,
        challenge_id: ChallengeId,
        code: SecretString,
        metadata: &EventMetadata,
    ) -> Result<LoginOutcome, AppError> {
        let command = UserCommand::UseBackupCode(UseBackupCode { challenge_id, code });
        let decided = self
            .users
            .execute(user_id, command, metadata, &MailSecrets::none())
            .await
            .and_then(|committed| Ok(LoginOutcome::read(user_id, &committed.events)?));
        self.report(Step::BackupCode, user_id, &decided);
        decided
    }

    /// A login to an address with no account: the same work, throttle and answer as a wrong
    /// password, so neither the answer, its timing nor a lockout tells whether it exists.
    async fn refuse_unknown_account(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<LoginOutcome, AppError> {
        let address = username.trim().to_lowercase();
        let key = self.services.sealer.digest(address.as_bytes()).digest;
        let now = self.services.clock.now();
        let refused: Result<LoginOutcome, AppError> = async {
            self.unknown_accounts.check(&key, now).await?;
            self.hasher
                .verify_dummy(password)
                .await
                .map_err(UserError::from)?;
            if let Some(until) = self.unknown_accounts.record_failure(&key, now).await? {
                tracing::info!(target: "security", %until, "logins to an address with no account locked");
            }
            Ok(LoginOutcome::Refused(Refusal::WrongPassword))
        }
        .await;
        match &refused {
            Ok(_) => {
                tracing::info!(target: "security", "login failed: unknown account");
                self.metrics
                    .login(Step::Password.label(), "unknown_account");
            }
            Err(error) => self.metrics.login(Step::Password.label(), error.code()),
        }
        refused
    }

    /// The security log line and the login counter of a login step.
    fn report(&self, step: Step, user_id: UserId, decided: &Result<LoginOutcome, AppError>) {
        let outcome = match decided {
            Ok(LoginOutcome::LoggedIn(_)) => {
                match step {
                    Step::Password => {
                        tracing::info!(target: "security", %user_id, "login succeeded")
                    }
                    Step::SecondFactor => {
                        tracing::info!(target: "security", %user_id, "second factor accepted")
                    }
                    Step::BackupCode => {
                        tracing::info!(target: "security", %user_id, "backup code used")
                    }
                }
                "ok"
            }
            Ok(LoginOutcome::SecondFactorRequired { .. }) => {
                tracing::info!(target: "security", %user_id, "password accepted; second factor required");
                "second_factor_required"
            }
            Ok(LoginOutcome::Refused(refusal)) => {
                tracing::info!(target: "security", %user_id, step = step.label(), ?refusal, "login step refused");
                match refusal {
                    Refusal::WrongPassword => "wrong_password",
                    _ => "wrong_code",
                }
            }
            Err(error) => {
                let code = error.code();
                tracing::info!(target: "security", %user_id, step = step.label(), code, "login step refused");
                code
            }
        };
        self.metrics.login(step.label(), outcome);
    }
}

/// A login step, as metrics and logs name it.
#[derive(Clone, Copy)]
enum Step {
    Password,
    SecondFactor,
    BackupCode,
}

impl Step {
    fn label(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::SecondFactor => "second_factor",
            Self::BackupCode => "backup_code",
        }
    }
}
