//! `/users`: the admin endpoints. Every change is a command whose metadata names the admin.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;
use serde::Deserialize;
use twofold_domain::values::UserId;
use twofold_domain::UserCommand;
use twofold_projections::UserView;

use crate::error::ApiError;
use crate::extract::{AdminToken, Json, Query, RequestContext};
use crate::gateway::no_mail;
use crate::state::AppState;

/// Users per page unless `per_page` says otherwise, and the most one page may hold.
const DEFAULT_PER_PAGE: u64 = 100;
const MAX_PER_PAGE: u64 = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", get(list_users))
        .route("/{user_id}/lock", post(lock))
        .route("/{user_id}/unlock", post(unlock))
        .route("/{user_id}/sessions", delete(end_sessions))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default = "first_page")]
    page: u64,
    #[serde(default = "default_per_page")]
    per_page: u64,
}

fn first_page() -> u64 {
    1
}

fn default_per_page() -> u64 {
    DEFAULT_PER_PAGE
}

/// One page of users, ordered by email (`?page=1&per_page=100`; the original had no paging
/// and its clients get the first 100).
#[tracing::instrument(skip_all)]
async fn list_users(
    State(state): State<AppState>,
    AdminToken(_): AdminToken,
    Query(page): Query<Page>,
) -> Result<Json<Vec<UserView>>, ApiError> {
    if page.page == 0 || page.per_page == 0 || page.per_page > MAX_PER_PAGE {
        return Err(ApiError::Request {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "request.invalid_query",
            detail: format!("page starts at 1 and per_page is 1 to {MAX_PER_PAGE}"),
        });
    }
    let offset = (page.page - 1).saturating_mul(page.per_page);
    Ok(Json(state.directory.list(offset, page.per_page).await?))
}

async fn act(
    state: &AppState,
    context: &RequestContext,
    admin: UserId,
    user: UserId,
    command: UserCommand,
) -> Result<StatusCode, ApiError> {
    let what = format!("{command:?}");
    state
        .users
        .execute(
            user,
            command,
            context.metadata(format!("admin:{admin}")),
            &no_mail,
        )
        .await?;
    tracing::info!(target: "security", %admin, user_id = %user, action = %what, "admin action");
    Ok(StatusCode::NO_CONTENT)
}

#[tracing::instrument(skip_all)]
async fn lock(
    State(state): State<AppState>,
    context: RequestContext,
    AdminToken(admin): AdminToken,
    Path(user_id): Path<UserId>,
) -> Result<StatusCode, ApiError> {
    act(
        &state,
        &context,
        admin.sub,
        user_id,
        UserCommand::LockAccount,
    )
    .await
}

#[tracing::instrument(skip_all)]
async fn unlock(
    State(state): State<AppState>,
    context: RequestContext,
    AdminToken(admin): AdminToken,
    Path(user_id): Path<UserId>,
) -> Result<StatusCode, ApiError> {
    act(
        &state,
        &context,
        admin.sub,
        user_id,
        UserCommand::UnlockAccount,
    )
    .await
}

#[tracing::instrument(skip_all)]
async fn end_sessions(
    State(state): State<AppState>,
    context: RequestContext,
    AdminToken(admin): AdminToken,
    Path(user_id): Path<UserId>,
) -> Result<StatusCode, ApiError> {
    act(
        &state,
        &context,
        admin.sub,
        user_id,
        UserCommand::EndAllSessions,
    )
    .await
}
