//! Erasing a user: by themself (with the proofs of a sensitive change), by an admin, or by an
//! operator on the command line. The command records `UserErased` after ending every session;
//! the commit that stores it destroys the user's data key, frees their address and drops their
//! snapshot and waiting mail (see `store::Commit::forget`), and the views forget them as they
//! apply it. What the log keeps of them reads as erased from then on.

use secrecy::SecretString;
use twofold_domain::user::{ChangeOutcome, EraseOwnAccount};
use twofold_domain::values::{SessionId, UserId};
use twofold_domain::{EventMetadata, UserCommand};

use super::mail_policy::MailSecrets;
use super::{App, AppError};

/// The reason recorded when a user erases their own account.
pub const SELF_SERVICE: &str = "self-service";
/// The longest reason an admin or operator may record (it is kept in clear, in the log).
pub const MAX_REASON_CHARS: usize = 200;

impl App {
    /// The user erases their own account, with their password and, when two-factor
    /// authentication is on, a current second factor. A wrong proof is recorded (and
    /// throttled) and nothing is erased. A user whose only second factor is a passkey does
    /// it within the re-authentication window after the sign-in of the caller's session
    /// `caller`.
    pub async fn erase_own_account(
        &self,
        user_id: UserId,
        caller: SessionId,
        password: SecretString,
        code: Option<SecretString>,
        metadata: &EventMetadata,
    ) -> Result<ChangeOutcome, AppError> {
        let command = UserCommand::EraseOwnAccount(EraseOwnAccount {
            password,
            code,
            sign_in: self.reauthentication(caller, None),
        });
        let metadata = metadata.clone().because(SELF_SERVICE);
        let (outcome, _) = self
            .change(user_id, command, &metadata, &MailSecrets::none())
            .await?;
        if outcome == ChangeOutcome::Changed {
            tracing::info!(target: "security", %user_id, "account erased by its user");
        }
        Ok(outcome)
    }

    /// An admin or operator (the actor of `metadata`, whose reason is recorded with it) erases
    /// the account of `user_id`.
    pub async fn erase_account(
        &self,
        user_id: UserId,
        metadata: &EventMetadata,
    ) -> Result<(), AppError> {
        self.users
            .execute(
                user_id,
                UserCommand::EraseAccount,
                metadata,
                &MailSecrets::none(),
            )
            .await?;
        tracing::info!(
            target: "security",
            actor = %metadata.actor,
            %user_id,
            reason = metadata.reason.as_deref().unwrap_or_default(),
            "account erased"
        );
        Ok(())
    }
}

/// A reason an admin or operator gives, trimmed; `None` when it is empty, an error when it is
/// longer than [`MAX_REASON_CHARS`] or holds control characters.
pub fn reason(raw: Option<&str>) -> Result<Option<String>, InvalidReason> {
    let Some(trimmed) = raw.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    if trimmed.chars().count() > MAX_REASON_CHARS || trimmed.chars().any(char::is_control) {
        return Err(InvalidReason);
    }
    Ok(Some(trimmed.to_owned()))
}

/// A reason that is too long or holds control characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reason must be at most 200 characters, without control characters")]
pub struct InvalidReason;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_trimmed_and_an_empty_one_is_none() {
        assert_eq!(reason(None), Ok(None));
        assert_eq!(reason(Some("   ")), Ok(None));
        assert_eq!(
            reason(Some("  ticket 4711 ")),
            Ok(Some("ticket 4711".to_owned()))
        );
    }

    #[test]
    fn an_overlong_reason_or_one_with_control_characters_is_refused() {
        assert_eq!(reason(Some(&"x".repeat(201))), Err(InvalidReason));
        assert_eq!(reason(Some("line\nbreak")), Err(InvalidReason));
        assert!(reason(Some(&"x".repeat(200))).is_ok());
    }
}
