//! `/auth/logout` and `/auth/sessions`: a user's sessions, listed and ended.
//!
//! Ending sessions other than the caller's needs a re-authentication, so that whoever holds a
//! stolen access token cannot throw the owner out: within `TWOFOLD_REAUTH_WINDOW` of the
//! caller's full sign-in the `DELETE`s work as they are; after it, their `POST` forms take the
//! password and a current second factor.
//!
//! Ending a session stops its refresh token at once. Access tokens are verified from their
//! own signature and claims, without a database read per request, so an access token of an
//! ended session keeps working until it expires (30 minutes by default).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use twofold_domain::values::SessionId;
use twofold_domain::{Actor, UserError};
use twofold_projections::SessionSummary;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::as_caller;
use super::dto::ReauthenticationRequest;
use super::tfa_manage::answer;
use crate::app::Proofs;
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, Json, Path, RequestContext};
use crate::http::jwt::{Access, Claims};
use crate::http::openapi::problems;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(log_out))
        .routes(routes!(list_sessions, end_other_sessions))
        .routes(routes!(end_other_sessions_with_proofs))
        .routes(routes!(end_session))
        .routes(routes!(end_session_with_proofs))
}

problems!(
    /// What `log_out` can answer besides what its inputs and token imply.
    LogOutProblems:
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// Ends the caller's session. Logging out of an ended session succeeds too.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "sessions",
    security(("access_token" = [])),
    responses(
        (status = 204, description = "Logged out: the session's refresh token stops working."),
        LogOutProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn log_out(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
) -> Result<StatusCode, ApiError> {
    state
        .app
        .log_out(
            claims.sub,
            claims.session_id(),
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's live sessions.
#[derive(Serialize, ToSchema)]
struct SessionsResponse {
    /// The session the calling token belongs to.
    current_session_id: SessionId,
    /// Oldest first.
    sessions: Vec<SessionSummary>,
}

problems!(
    /// What `list_sessions` can answer besides what its inputs and token imply.
    ListSessionsProblems:
        ApiError::unavailable(),
);

/// The caller's live sessions, with where each was last used from.
#[utoipa::path(
    get,
    path = "/sessions",
    tag = "sessions",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The sessions.", body = SessionsResponse),
        ListSessionsProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn list_sessions(
    State(state): State<AppState>,
    AccessToken(claims): AccessToken,
) -> Result<Json<SessionsResponse>, ApiError> {
    let view = state.app.sessions(claims.sub).await?;
    Ok(Json(SessionsResponse {
        current_session_id: claims.session_id(),
        sessions: view.sessions,
    }))
}

problems!(
    /// What `end_session` can answer besides what its inputs and token imply.
    EndSessionProblems:
        UserError::UnknownSession,
        UserError::ReauthenticationRequired,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// Ends one of the caller's sessions. Ending another session than the caller's is answered
/// only within the re-authentication window after the caller's full sign-in
/// (`TWOFOLD_REAUTH_WINDOW`, 5 minutes by default; a refresh does not renew it); after it,
/// use `POST /api/v1/auth/sessions/{session_id}/end` with the proofs.
#[utoipa::path(
    delete,
    path = "/sessions/{session_id}",
    tag = "sessions",
    security(("access_token" = [])),
    params(("session_id" = uuid::Uuid, Path, description = "A session id from `GET /sessions`")),
    responses(
        (status = 204, description = "Ended."),
        EndSessionProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn end_session(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Path(session_id): Path<SessionId>,
) -> Result<StatusCode, ApiError> {
    end_one(&state, &context, &claims, session_id, None).await
}

problems!(
    /// What `end_session_with_proofs` can answer besides what its inputs and token imply.
    EndSessionWithProofsProblems:
        proofs,
        UserError::UnknownSession,
        UserError::SecondFactorRequired,
        UserError::PasskeySignInRequired,
);

/// Ends one of the caller's sessions, at any time: with the password and, with two-factor
/// authentication on, a current second factor (which is spent). Wrong proofs are recorded
/// and throttled as for the other sensitive changes.
#[utoipa::path(
    post,
    path = "/sessions/{session_id}/end",
    tag = "sessions",
    security(("access_token" = [])),
    params(("session_id" = uuid::Uuid, Path, description = "A session id from `GET /sessions`")),
    request_body = ReauthenticationRequest,
    responses(
        (status = 204, description = "Ended."),
        EndSessionWithProofsProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn end_session_with_proofs(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Path(session_id): Path<SessionId>,
    Json(request): Json<ReauthenticationRequest>,
) -> Result<StatusCode, ApiError> {
    end_one(&state, &context, &claims, session_id, Some(request.into())).await
}

async fn end_one(
    state: &AppState,
    context: &RequestContext,
    claims: &Claims<Access>,
    session_id: SessionId,
    proofs: Option<Proofs>,
) -> Result<StatusCode, ApiError> {
    let outcome = state
        .app
        .end_session(
            claims.sub,
            claims.session_id(),
            session_id,
            proofs,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    answer(outcome)?;
    Ok(StatusCode::NO_CONTENT)
}

problems!(
    /// What `end_other_sessions` can answer besides what its inputs and token imply.
    EndOtherSessionsProblems:
        UserError::ReauthenticationRequired,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// Ends every session of the caller's but the current one, within the re-authentication
/// window after the caller's full sign-in (`TWOFOLD_REAUTH_WINDOW`, 5 minutes by default; a
/// refresh does not renew it); after it, use `POST /api/v1/auth/sessions/end_others` with the
/// proofs.
#[utoipa::path(
    delete,
    path = "/sessions",
    tag = "sessions",
    security(("access_token" = [])),
    responses(
        (status = 204, description = "Ended."),
        EndOtherSessionsProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn end_other_sessions(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
) -> Result<StatusCode, ApiError> {
    end_others(&state, &context, &claims, None).await
}

problems!(
    /// What `end_other_sessions_with_proofs` can answer besides what its inputs and token
    /// imply.
    EndOtherSessionsWithProofsProblems:
        proofs,
        UserError::SecondFactorRequired,
        UserError::PasskeySignInRequired,
);

/// Ends every session of the caller's but the current one, at any time: with the password
/// and, with two-factor authentication on, a current second factor (which is spent). Wrong
/// proofs are recorded and throttled as for the other sensitive changes.
#[utoipa::path(
    post,
    path = "/sessions/end_others",
    tag = "sessions",
    security(("access_token" = [])),
    request_body = ReauthenticationRequest,
    responses(
        (status = 204, description = "Ended."),
        EndOtherSessionsWithProofsProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn end_other_sessions_with_proofs(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<ReauthenticationRequest>,
) -> Result<StatusCode, ApiError> {
    end_others(&state, &context, &claims, Some(request.into())).await
}

async fn end_others(
    state: &AppState,
    context: &RequestContext,
    claims: &Claims<Access>,
    proofs: Option<Proofs>,
) -> Result<StatusCode, ApiError> {
    let outcome = state
        .app
        .end_other_sessions(
            claims.sub,
            claims.session_id(),
            proofs,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    answer(outcome)?;
    Ok(StatusCode::NO_CONTENT)
}
