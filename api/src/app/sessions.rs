//! Sessions: refreshing one, ending one or all but one, and listing them.

use twofold_domain::user::{
    EndOtherSessions, EndSession, RefreshOutcome, RefreshSession, Refusal, SessionEndReason,
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

    /// Ends one of the user's sessions, from another.
    pub async fn end_session(
        &self,
        user_id: UserId,
        session_id: SessionId,
        metadata: &EventMetadata,
    ) -> Result<(), AppError> {
        self.end(user_id, session_id, SessionEndReason::EndedByUser, metadata)
            .await?;
        tracing::info!(target: "security", %user_id, %session_id, "session ended by the user");
        Ok(())
    }

    /// Ends every session of the user but `keep`.
    pub async fn end_other_sessions(
        &self,
        user_id: UserId,
        keep: SessionId,
        metadata: &EventMetadata,
    ) -> Result<(), AppError> {
        let command = UserCommand::EndOtherSessions(EndOtherSessions { keep });
        self.users
            .execute(user_id, command, metadata, &MailSecrets::none())
            .await?;
        tracing::info!(target: "security", %user_id, "other sessions ended");
        Ok(())
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
        let command = UserCommand::EndSession(EndSession { session_id, reason });
        self.users
            .execute(user_id, command, metadata, &MailSecrets::none())
            .await?;
        Ok(())
    }
}
