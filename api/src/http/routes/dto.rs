//! Bodies shared by several routes.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use twofold_domain::user::SessionGrant;
use twofold_domain::values::{ChallengeId, UserId};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

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

/// The proofs of a re-authentication, or the empty object `{}`, which rests on the caller's
/// sign-in instead: answered only within the re-authentication window after it. A user whose
/// only second factor is a passkey has no proofs to give, and signs in again with it. Read
/// from a JSON object only, never from an array.
#[derive(Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct ProofsOrSignInRequest(Option<ReauthenticationRequest>);

impl TryFrom<serde_json::Map<String, serde_json::Value>> for ProofsOrSignInRequest {
    type Error = serde_json::Error;

    fn try_from(body: serde_json::Map<String, serde_json::Value>) -> Result<Self, Self::Error> {
        if body.is_empty() {
            return Ok(Self(None));
        }
        serde_json::from_value(serde_json::Value::Object(body)).map(|proofs| Self(Some(proofs)))
    }
}

impl ProofsOrSignInRequest {
    /// The proofs given, or `None` for the recent sign-in.
    pub fn proofs(self) -> Option<Proofs> {
        self.0.map(Proofs::from)
    }
}

impl utoipa::PartialSchema for ProofsOrSignInRequest {
    fn schema() -> RefOr<Schema> {
        let sign_in = ObjectBuilder::new()
            .schema_type(Type::Object)
            .max_properties(Some(0))
            .description(Some(
                "No proofs: the caller's full sign-in, within the re-authentication window \
                 after it, is the re-authentication.",
            ));
        OneOfBuilder::new()
            .item(Ref::from_schema_name(ReauthenticationRequest::name()))
            .item(sign_in)
            .into()
    }
}

impl utoipa::ToSchema for ProofsOrSignInRequest {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            ReauthenticationRequest::name().into_owned(),
            ReauthenticationRequest::schema(),
        ));
        <ReauthenticationRequest as utoipa::ToSchema>::schemas(schemas);
    }
}
