//! Request extractors: bodies, queries and paths that fail as problem+json, bearer tokens of each kind, and the
//! request context stored as event metadata.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Multipart, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
use std::sync::Arc;

use twofold_domain::{Actor, EventMetadata};

use crate::app::access::UserAccess;

use crate::http::error::{parse_json, parse_urlencoded, ApiError, Input};
use crate::http::jwt::{Access, Claims, KindClaims, PreTfa};
use crate::http::state::AppState;

/// A JSON body; malformed ones answer problem+json naming the field at fault. A request
/// without a `Content-Type` is read as JSON, as the original service read it; another media
/// type answers 415.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match media_type(request.headers()) {
            None => {}
            Some(media) if is_json(&media) => {}
            Some(_) => {
                return Err(ApiError::unsupported_media_type(
                    "JSON with `Content-Type: application/json`",
                ))
            }
        }
        let body = Bytes::from_request(request, state).await?;
        parse_json(&body).map(Self)
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// The media type of a request (`type/subtype`, lower case, without parameters), if it says.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().unwrap_or("?");
    let media = value.split(';').next().unwrap_or_default().trim();
    (!media.is_empty()).then(|| media.to_ascii_lowercase())
}

/// `application/json` or a JSON-based type such as `application/merge-patch+json`.
fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// A form body: `application/x-www-form-urlencoded` (what `curl -d` sends, and the default
/// without a `Content-Type`) or `multipart/form-data` (what a browser's `FormData` sends), as
/// the original's OAuth2 password form took both. Malformed ones answer problem+json.
pub struct Form<T>(pub T);

impl<T, S> FromRequest<S> for Form<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match media_type(request.headers()).as_deref() {
            None | Some("application/x-www-form-urlencoded") => {
                let body = Bytes::from_request(request, state).await?;
                parse_urlencoded(&body, Input::Form).map(Self)
            }
            Some("multipart/form-data") => {
                let mut multipart = Multipart::from_request(request, state).await?;
                let mut fields = Vec::new();
                while let Some(field) = multipart.next_field().await? {
                    let name = field.name().unwrap_or_default().to_owned();
                    fields.push((name, field.text().await?));
                }
                // The fields as one urlencoded text: the same parser, so the same answers.
                let encoded = serde_urlencoded::to_string(&fields)
                    .map_err(|_| ApiError::unsupported_media_type("a form of text fields"))?;
                parse_urlencoded(encoded.as_bytes(), Input::Form).map(Self)
            }
            Some(_) => Err(ApiError::unsupported_media_type(
                "a form: `application/x-www-form-urlencoded` or `multipart/form-data`",
            )),
        }
    }
}

/// Query parameters; malformed ones answer problem+json naming the parameter at fault.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        parse_urlencoded(query.as_bytes(), Input::Query).map(Self)
    }
}

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

/// The user of a valid access token of a live session, as the access cache holds them: for
/// handlers that answer with the caller's view, without looking the user up a second time.
pub struct LiveUser(pub Arc<UserAccess>);

impl<S> FromRequestParts<S> for LiveUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let (_, access) = live_access(parts, &AppState::from_ref(state)).await?;
        Ok(Self(access))
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
