//! Request extractors: bodies, queries and paths that fail as problem+json, bearer tokens of each kind, and the
//! request context stored as event metadata.

use axum::extract::{FromRef, FromRequest, FromRequestParts};
use axum::http::header::{AUTHORIZATION, USER_AGENT};
use axum::http::request::Parts;
use std::sync::Arc;

use twofold_domain::{Actor, EventMetadata};

use crate::app::access::UserAccess;

use crate::http::error::ApiError;
use crate::http::jwt::{Access, Claims, KindClaims, PreTfa};
use crate::http::state::AppState;

/// A JSON body; malformed ones answer problem+json.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// A form body; malformed ones answer problem+json.
#[derive(FromRequest)]
#[from_request(via(axum::Form), rejection(ApiError))]
pub struct Form<T>(pub T);

/// Query parameters; malformed ones answer problem+json.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path parameters; malformed ones answer problem+json.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or(ApiError::MissingToken)?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::MissingToken),
    }
}

fn verified<K: KindClaims>(parts: &Parts, state: &AppState) -> Result<Claims<K>, ApiError> {
    state.tokens.verify(bearer(parts)?)
}

/// A valid access token whose session is live, with the user as it sees them. A logout,
/// an ended session, a password change or reset, an admin lock or the end of every session
/// ends the session, and so kills its access tokens before they expire (at once on the
/// instance that did it, within `ACCESS_CACHE_TTL` on the others: see `app::access`).
async fn live_access(
    parts: &Parts,
    state: &AppState,
) -> Result<(Claims<Access>, Arc<UserAccess>), ApiError> {
    let claims = verified::<Access>(parts, state)?;
    let access = state
        .app
        .access(claims.sub)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    if !access.session_is_live(claims.session_id()) {
        return Err(ApiError::InvalidToken);
    }
    Ok((claims, access))
}

/// The claims of a valid access token of a live session.
pub struct AccessToken(pub Claims<Access>);

impl<S> FromRequestParts<S> for AccessToken
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let (claims, _) = live_access(parts, &AppState::from_ref(state)).await?;
        Ok(Self(claims))
    }
}

/// The claims of a valid pre-2FA token.
pub struct PreTfaToken(pub Claims<PreTfa>);

impl<S> FromRequestParts<S> for PreTfaToken
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        verified(parts, &AppState::from_ref(state)).map(Self)
    }
}

/// The claims of a valid access token whose user is an admin.
pub struct AdminToken(pub Claims<Access>);

impl<S> FromRequestParts<S> for AdminToken
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let (claims, access) = live_access(parts, &AppState::from_ref(state)).await?;
        if access.view.is_admin {
            Ok(Self(claims))
        } else {
            Err(ApiError::AdminOnly)
        }
    }
}

/// The request id, user agent and peer address, for event metadata.
#[derive(Clone)]
pub struct RequestContext {
    request_id: Option<String>,
    user_agent: Option<String>,
    ip: Option<String>,
}

impl RequestContext {
    /// The request id.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// Metadata for a command `actor` issues in this request.
    pub fn metadata(&self, actor: Actor) -> EventMetadata {
        EventMetadata {
            actor,
            request_id: self.request_id.clone(),
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            reason: None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|value: &axum::http::HeaderValue| value.to_str().ok())
                .map(|value| value.chars().take(256).collect())
        };
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|peer| peer.0.ip().to_string());
        Ok(Self {
            request_id: header(crate::telemetry::REQUEST_ID_HEADER),
            user_agent: header(USER_AGENT.as_str()),
            ip,
        })
    }
}
