//! Response bodies shared by several routes.

use serde::Serialize;
use twofold_domain::values::{ChallengeId, UserId};

use crate::error::ApiError;
use crate::jwt::TokenKind;
use crate::state::AppState;

/// The token pair of the original API (OAuth2 token response shape).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// An access token, or a pre-2FA token when a second factor is pending.
    pub access_token: String,
    /// A refresh token; `null` while a second factor is pending.
    pub refresh_token: Option<String>,
    /// Always `bearer`.
    pub token_type: &'static str,
}

impl TokenResponse {
    /// A full access and refresh pair for `user`.
    pub fn pair(state: &AppState, user: UserId) -> Result<Self, ApiError> {
        Ok(Self {
            access_token: state.tokens.issue(TokenKind::Access, user, None)?,
            refresh_token: Some(state.tokens.issue(TokenKind::Refresh, user, None)?),
            token_type: "bearer",
        })
    }

    /// A pre-2FA token naming the open `challenge`.
    pub fn pre_tfa(
        state: &AppState,
        user: UserId,
        challenge: ChallengeId,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            access_token: state
                .tokens
                .issue(TokenKind::PreTfa, user, Some(challenge))?,
            refresh_token: None,
            token_type: "bearer",
        })
    }
}
