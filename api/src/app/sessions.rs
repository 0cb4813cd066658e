//! Sessions: refreshing one, ending one or all but one, and listing them. Ending a session
//! other than the caller's needs a re-authentication: a recent sign-in, or the proofs.

use secrecy::SecretString;
use twofold_domain::user::{
    ChangeOutcome, EndOtherSessions, EndSession, Reauthentication, RefreshOutcome, RefreshSession,
    Refusal, SessionEndReason,
};
use twofold_domain::values::{RefreshTokenId, SessionId, UserId};
use twofold_domain::{EventMetadata, UserCommand, UserError};
use twofold_projections::SessionsView;

use super::mail_policy::MailSecrets;
use super::{App, AppError};

impl App {
    /// Rotates the refresh token `refresh_id` of `session_id`. The token it replaced, presented
    /// again within the grace period, gets the same successor; after it, the session is
    /// revoked, and that is recorded.
    pub async fn refresh(
        &self,
        user_id: UserId,
        session_id: SessionId,
        refresh_id: RefreshTokenId,
        metadata: &EventMetadata,
    ) -> Result<RefreshOutcome, AppError> {
        let command = UserCommand::RefreshSession(RefreshSession {
            session_id,
            refresh_id,
            reuse_grace: self.settings.refresh_reuse_grace,
        });
        let committed = self
            .users
            .execute(user_id, command, metadata, &MailSecrets::none())
            .await?;
        let outcome =
            RefreshOutcome::decided(&committed.user, user_id, session_id, &committed.events)?;
        if let RefreshOutcome::Refused(Refusal::RefreshTokenReused) = outcome {
            tracing::warn!(target: "security", %user_id, %session_id,
                "rotated refresh token presented again: session revoked");
        }
        Ok(outcome)
    }

    /// Ends the caller's own session. Ending one that already ended is not an error.
    pub async fn log_out(
        &self,
        user_id: UserId,
        session_id: SessionId,
        metadata: &EventMetadata,
    ) -> Result<(), AppError> {
        let ended = self
            .end(user_id, session_id, SessionEndReason::LoggedOut, metadata)
            .await;
        match ended {
            Ok(()) | Err(AppError::Domain(UserError::UnknownSession)) => {
                tracing::info!(target: "security", %user_id, "logged out");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Ends one of the user's sessions, from the caller's session `caller`. Ending another
    /// session than the caller's needs a re-authentication: `proofs`, or else a sign-in of the
    /// caller's session within the re-authentication window.
    pub async fn end_session(
        &self,
        user_id: UserId,
        caller: SessionId,
        session_id: SessionId,
        proofs: Option<Proofs>,
        metadata: &EventMetadata,
    ) -> Result<ChangeOutcome, AppError> {
        let reauthentication =
            (session_id != caller).then(|| self.reauthentication(caller, proofs));
        let command = UserCommand::EndSession(EndSession {
            session_id,
            reason: SessionEndReason::EndedByUser,
            reauthentication,
        });
        let (outcome, _) = self
            .change(user_id, command, metadata, &MailSecrets::none())
            .await?;
        if outcome == ChangeOutcome::Changed {
            tracing::info!(target: "security", %user_id, %session_id, "session ended by the user");
        }
        Ok(outcome)
    }

    /// Ends every session of the user but `keep`, the caller's, once the caller
    /// re-authenticated (`proofs`, or a recent sign-in of `keep`).
    pub async fn end_other_sessions(
        &self,
        user_id: UserId,
        keep: SessionId,
        proofs: Option<Proofs>,
        metadata: &EventMetadata,
    ) -> Result<ChangeOutcome, AppError> {
        let command = UserCommand::EndOtherSessions(EndOtherSessions {
            keep,
            reauthentication: self.reauthentication(keep, proofs),
        });
        let (outcome, _) = self
            .change(user_id, command, metadata, &MailSecrets::none())
            .await?;
        if outcome == ChangeOutcome::Changed {
            tracing::info!(target: "security", %user_id, "other sessions ended");
        }
        Ok(outcome)
    }

    /// How the caller of session `caller` re-authenticates: with `proofs` when given, else by
    /// the session's recent sign-in.
    pub(super) fn reauthentication(
        &self,
        caller: SessionId,
        proofs: Option<Proofs>,
    ) -> Reauthentication {
        match proofs {
            Some(Proofs { password, code }) => Reauthentication::Proofs { password, code },
            None => Reauthentication::RecentSignIn {
                session: caller,
                window: self.settings.reauth_window,
            },
        }
    }

    /// The user's live sessions.
    pub async fn sessions(&self, user_id: UserId) -> Result<SessionsView, AppError> {
        Ok(self.directory.sessions(user_id).await?)
    }

    async fn end(
        &self,
        user_id: UserId,
        session_id: SessionId,
        reason: SessionEndReason,
        metadata: &EventMetadata,
    ) -> Result<(), AppError> {
        let command = UserCommand::EndSession(EndSession {
            session_id,
            reason,
            reauthentication: None,
        });
        self.users
            .execute(user_id, command, metadata, &MailSecrets::none())
            .await?;
        Ok(())
    }
}

/// The proofs a caller gives to re-authenticate: the password, and a current second factor
/// when two-factor authentication is on.
pub struct Proofs {
    /// The current password.
    pub password: SecretString,
    /// A current TOTP code, an emailed confirmation code or a backup code.
    pub code: Option<SecretString>,
}
