//! Passwords: changing one, and resetting a forgotten one with an emailed token.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

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

    /// Emails a reset token if `email` has an account (and its ration allows: see
    /// `twofold_domain::user::RESET_EMAIL_INTERVAL`). The work happens after this returns
    /// (tracked, so that shutdown waits for it), rationed by [`ResetQueue`]: neither the
    /// caller's answer nor its timing tells whether the address has an account.
    pub fn forgot_password(self: &Arc<Self>, email: &str, metadata: EventMetadata) {
        let Ok(email) = Email::parse(email) else {
            return;
        };
        let Some(admitted) = self.resets.admit(&email) else {
            return;
        };
        let app = Arc::clone(self);
        self.background.spawn(async move {
            let Ok(_worker) = app.resets.workers.acquire().await else {
                return;
            };
            if let Err(error) = app.issue_reset_token(&email, &metadata).await {
                tracing::warn!(code = error.code(), error = %error, "password reset not issued");
            }
            drop(admitted);
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

/// Reset requests worked on at once: each is a lookup and a command, and a flood of them must
/// leave the database and the runtime to everyone else.
const RESET_WORKERS: usize = 4;
/// Addresses whose reset request may wait for a worker; more are dropped (and logged).
const RESET_BACKLOG: usize = 1024;

/// Rations the background work of password resets. A request for an address that already
/// has one waiting or in progress adds nothing (its outcome would be the same: the domain's
/// cooldown records nothing within minutes of the last reset email), so a flood for one
/// victim costs one command; requests for many addresses wait for one of
/// [`RESET_WORKERS`] workers, and beyond [`RESET_BACKLOG`] waiting they are dropped.
pub(crate) struct ResetQueue {
    workers: tokio::sync::Semaphore,
    pending: Arc<Mutex<HashSet<String>>>,
}

impl Default for ResetQueue {
    fn default() -> Self {
        Self {
            workers: tokio::sync::Semaphore::new(RESET_WORKERS),
            pending: Arc::default(),
        }
    }
}

impl ResetQueue {
    /// Admits a request for `email`, unless one for it is already pending or the backlog is
    /// full; the guard frees its place when dropped.
    fn admit(&self, email: &Email) -> Option<Pending> {
        let key = email.as_str().to_lowercase();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.contains(&key) {
            return None;
        }
        if pending.len() >= RESET_BACKLOG {
            tracing::warn!(
                backlog = RESET_BACKLOG,
                "password reset requests dropped: backlog full"
            );
            return None;
        }
        pending.insert(key.clone());
        Some(Pending {
            key,
            pending: Arc::clone(&self.pending),
        })
    }
}

/// An admitted reset request's place in the [`ResetQueue`].
struct Pending {
    key: String,
    pending: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}
