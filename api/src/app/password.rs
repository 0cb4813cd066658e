//! Passwords: changing one, and resetting a forgotten one with an emailed token.

use std::sync::Arc;

use secrecy::SecretString;
use twofold_domain::user::{ChangeOutcome, ChangePassword, RequestPasswordReset, ResetPassword};
use twofold_domain::values::{Email, NewPassword, SessionId, UserId};
use twofold_domain::{EventMetadata, UserCommand, UserError};

use super::mail_policy::MailSecrets;
use super::{App, AppError};

impl App {
    /// Changes the password, knowing the current one; every session but `keep_session` ends
    /// and a notice is emailed.
    pub async fn change_password(
        &self,
        user_id: UserId,
        current: SecretString,
        new: NewPassword,
        keep_session: Option<SessionId>,
        metadata: &EventMetadata,
    ) -> Result<ChangeOutcome, AppError> {
        let command = UserCommand::ChangePassword(ChangePassword {
            current,
            new,
            keep_session,
        });
        let (outcome, _) = self
            .change(user_id, command, metadata, &MailSecrets::none())
            .await?;
        if outcome == ChangeOutcome::Changed {
            tracing::info!(target: "security", %user_id, "password changed");
        }
        Ok(outcome)
    }

    /// Emails a reset token if `email` has an account. The work happens after this returns
    /// (tracked, so that shutdown waits for it): neither the caller's answer nor its timing
    /// tells whether the address has an account.
    pub fn forgot_password(self: &Arc<Self>, email: &str, metadata: EventMetadata) {
        let Ok(email) = Email::parse(email) else {
            return;
        };
        let app = Arc::clone(self);
        self.background.spawn(async move {
            if let Err(error) = app.issue_reset_token(&email, &metadata).await {
                tracing::warn!(code = error.code(), error = %error, "password reset not issued");
            }
        });
    }

    async fn issue_reset_token(
        &self,
        email: &Email,
        metadata: &EventMetadata,
    ) -> Result<(), AppError> {
        let Some(user_id) = self.users.find_by_email(email).await? else {
            return Ok(());
        };
        let token = self.new_reset_token();
        let command = UserCommand::RequestPasswordReset(RequestPasswordReset {
            token: token.clone(),
        });
        let secrets = MailSecrets {
            reset_token: Some(token),
            ..MailSecrets::none()
        };
        self.users
            .execute(user_id, command, metadata, &secrets)
            .await?;
        tracing::info!(target: "security", %user_id, "password reset requested");
        Ok(())
    }

    /// Sets a new password with an emailed token; every session ends and a notice is emailed.
    /// An unknown address and a wrong token are refused alike.
    pub async fn reset_password(
        &self,
        email: &str,
        token: SecretString,
        new: NewPassword,
        metadata: &EventMetadata,
    ) -> Result<(), AppError> {
        let user_id = match Email::parse(email) {
            Ok(email) => self.users.find_by_email(&email).await?,
            Err(_) => None,
        };
        let Some(user_id) = user_id else {
            tracing::info!(target: "security", "password reset refused: unknown account");
            return Err(UserError::ResetTokenInvalid.into());
        };
        let command = UserCommand::ResetPassword(ResetPassword { token, new });
        self.users
            .execute(user_id, command, metadata, &MailSecrets::none())
            .await
            .inspect_err(|error| {
                tracing::info!(target: "security", %user_id, code = error.code(), "password reset refused");
            })?;
        tracing::info!(target: "security", %user_id, "password reset");
        Ok(())
    }
}
