//! Response bodies shared by several routes.

use serde::Serialize;
use twofold_domain::values::{ChallengeId, UserId};
use twofold_domain::UserEvent;

use crate::http::error::ApiError;
use crate::http::state::AppState;

/// The token pair of the original API (OAuth2 token response shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// An access token, or a pre-2FA token when a second factor is pending.
    pub access_token: String,
    /// A refresh token; `null` while a second factor is pending.
    pub refresh_token: Option<String>,
    /// Always `bearer`.
    #[schema(example = "bearer")]
    pub token_type: &'static str,
}

impl TokenResponse {
    /// The token pair of the session that `events` started or refreshed.
    pub fn for_session(
        state: &AppState,
        user: UserId,
        events: &[UserEvent],
    ) -> Result<Self, ApiError> {
        let pair = events.iter().find_map(|event| match event {
            UserEvent::SessionStarted {
                session_id,
                refresh_id,
                ..
            }
            | UserEvent::SessionRefreshed {
                session_id,
                refresh_id,
                ..
            } => Some(state.tokens.issue_pair(user, *session_id, *refresh_id).map(
                |(access, refresh)| Self {
                    access_token: access,
                    refresh_token: Some(refresh),
                    token_type: "bearer",
                },
            )),
            _ => None,
        });
        pair.unwrap_or_else(|| {
            Err(ApiError::Internal(
                "a completed login recorded no session".into(),
            ))
        })
    }

    /// A pre-2FA token naming the open `challenge`.
    pub fn pre_tfa(
        state: &AppState,
        user: UserId,
        challenge: ChallengeId,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            access_token: state.tokens.issue_pre_tfa(user, challenge)?,
            refresh_token: None,
            token_type: "bearer",
        })
    }
}
