//! `/auth/logout` and `/auth/sessions`: a user's sessions, listed and ended.
//!
//! Ending a session stops its refresh token at once. Access tokens are verified from their
//! own signature and claims, without a database read per request, so an access token of an
//! ended session keeps working until it expires (30 minutes by default).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use twofold_domain::user::{EndOtherSessions, EndSession, SessionEndReason};
use twofold_domain::values::SessionId;
use twofold_domain::{UserCommand, UserError};
use twofold_projections::SessionSummary;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::unknown_user_is_invalid_token;
use crate::app::gateway::no_mail;
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, Json, Path, RequestContext};
use crate::http::jwt::Claims;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(log_out))
        .routes(routes!(list_sessions, end_other_sessions))
        .routes(routes!(end_session))
}

fn session_of(claims: &Claims) -> Result<SessionId, ApiError> {
    claims.sid.ok_or(ApiError::InvalidToken)
}

async fn end(
    state: &AppState,
    context: &RequestContext,
    claims: &Claims,
    command: UserCommand,
) -> Result<(), ApiError> {
    let actor = format!("user:{}", claims.sub);
    state
        .users
        .execute(claims.sub, command, context.metadata(actor), &no_mail)
        .await
        .map_err(unknown_user_is_invalid_token)?;
    Ok(())
}

/// Ends the caller's session. Logging out of an ended session succeeds too.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "sessions",
    security(("access_token" = [])),
    responses(
        (status = 204, description = "Logged out: the session's refresh token stops working."),
        (status = 409, description = "`concurrency.conflict`"),
        (status = 503, description = "`service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn log_out(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
) -> Result<StatusCode, ApiError> {
    let command = UserCommand::EndSession(EndSession {
        session_id: session_of(&claims)?,
        reason: SessionEndReason::LoggedOut,
    });
    match end(&state, &context, &claims, command).await {
        Ok(()) | Err(ApiError::Domain(UserError::UnknownSession)) => {
            tracing::info!(target: "security", user_id = %claims.sub, "logged out");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(error) => Err(error),
    }
}

/// The caller's live sessions.
#[derive(Serialize, ToSchema)]
struct SessionsResponse {
    /// The session the calling token belongs to.
    current_session_id: Option<SessionId>,
    /// Oldest first.
    sessions: Vec<SessionSummary>,
}

/// The caller's live sessions, with where each was last used from.
#[utoipa::path(
    get,
    path = "/sessions",
    tag = "sessions",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The sessions.", body = SessionsResponse),
        (status = 503, description = "`service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn list_sessions(
    State(state): State<AppState>,
    AccessToken(claims): AccessToken,
) -> Result<Json<SessionsResponse>, ApiError> {
    let view = state.directory.sessions(claims.sub).await?;
    Ok(Json(SessionsResponse {
        current_session_id: claims.sid,
        sessions: view.sessions,
    }))
}

/// Ends one of the caller's sessions.
#[utoipa::path(
    delete,
    path = "/sessions/{session_id}",
    tag = "sessions",
    security(("access_token" = [])),
    params(("session_id" = uuid::Uuid, Path, description = "A session id from `GET /sessions`")),
    responses(
        (status = 204, description = "Ended."),
        (status = 404, description = "`auth.session_not_found`"),
        (status = 409, description = "`concurrency.conflict`"),
        (status = 503, description = "`service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn end_session(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Path(session_id): Path<SessionId>,
) -> Result<StatusCode, ApiError> {
    let command = UserCommand::EndSession(EndSession {
        session_id,
        reason: SessionEndReason::EndedByUser,
    });
    end(&state, &context, &claims, command).await?;
    tracing::info!(target: "security", user_id = %claims.sub, %session_id, "session ended by the user");
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of the caller's but the current one.
#[utoipa::path(
    delete,
    path = "/sessions",
    tag = "sessions",
    security(("access_token" = [])),
    responses(
        (status = 204, description = "Ended."),
        (status = 409, description = "`concurrency.conflict`"),
        (status = 503, description = "`service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn end_other_sessions(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
) -> Result<StatusCode, ApiError> {
    let command = UserCommand::EndOtherSessions(EndOtherSessions {
        keep: session_of(&claims)?,
    });
    end(&state, &context, &claims, command).await?;
    tracing::info!(target: "security", user_id = %claims.sub, "other sessions ended");
    Ok(StatusCode::NO_CONTENT)
}
