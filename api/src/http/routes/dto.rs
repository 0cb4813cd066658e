//! Bodies shared by several routes.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use twofold_domain::user::SessionGrant;
use twofold_domain::values::{ChallengeId, UserId};

use crate::app::Proofs;
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
    /// The token pair of a session a login started or a refresh rotated.
    pub fn for_session(state: &AppState, grant: SessionGrant) -> Result<Self, ApiError> {
        let (access, refresh) =
            state
                .tokens
                .issue_pair(grant.user_id, grant.session_id, grant.refresh_id)?;
        Ok(Self {
            access_token: access,
            refresh_token: Some(refresh),
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
            access_token: state.tokens.issue_pre_tfa(user, challenge)?,
            refresh_token: None,
            token_type: "bearer",
        })
    }
}

/// The proofs of a re-authentication, for when the caller's sign-in is older than the
/// re-authentication window.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"password": "correct horse battery", "code": "123456"}))]
pub struct ReauthenticationRequest {
    /// The current password.
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// A current second factor: a TOTP code, a confirmation code from
    /// `POST /api/v1/tfa/email_code`, or an unused backup code. Needed only with two-factor
    /// authentication on.
    #[schema(value_type = Option<String>)]
    code: Option<SecretString>,
}

impl From<ReauthenticationRequest> for Proofs {
    fn from(request: ReauthenticationRequest) -> Self {
        Self {
            password: request.password,
            code: request.code,
        }
    }
}
