//! `/users`: the admin endpoints. Every change is a command whose metadata names the admin.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use twofold_domain::values::UserId;
use twofold_domain::{Actor, UserError};
use twofold_projections::{AuditedEvent, HistoryEntry, UserView};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::admin::AdminAction;
use crate::app::audit::{HistoryCursor, MAX_EVENTS_PAGE, MAX_HISTORY_PAGE};
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, AdminToken, Json, Path, Query, RequestContext};
use crate::http::openapi::problems;
use crate::http::state::AppState;

/// Users per page unless `per_page` says otherwise, and the most one page may hold.
const DEFAULT_PER_PAGE: u64 = 100;
const MAX_PER_PAGE: u64 = 500;
/// The last page one may ask for: far past any directory, and the offset it makes,
/// `(page - 1) * per_page`, stays well inside what a Postgres `bigint` holds.
const MAX_PAGE: u64 = 1_000_000_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(lock))
        .routes(routes!(unlock))
        .routes(routes!(end_sessions))
        .routes(routes!(my_history))
        .routes(routes!(user_events))
        .routes(routes!(user_as_of))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    /// The page (see [`page_schema`]).
    #[serde(default = "first_page")]
    #[param(schema_with = page_schema)]
    page: u64,
    /// Users per page (see [`per_page_schema`]).
    #[serde(default = "default_per_page")]
    #[param(schema_with = per_page_schema)]
    per_page: u64,
}

/// An integer query parameter from `minimum` to `maximum`, `default` when absent: the
/// bounds the handler enforces, from the same constants.
fn bounded(description: &str, minimum: u64, maximum: u64, default: u64) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .description(Some(format!("{description}, {minimum} to {maximum}.")))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .default(Some(default.into()))
        .build()
}

fn page_schema() -> Object {
    bounded("The page", 1, MAX_PAGE, 1)
}

fn per_page_schema() -> Object {
    bounded("Users per page", 1, MAX_PER_PAGE, DEFAULT_PER_PAGE)
}

fn first_page() -> u64 {
    1
}

fn default_per_page() -> u64 {
    DEFAULT_PER_PAGE
}

problems!(
    /// What `list_users` can answer besides what its inputs and token imply.
    ListUsersProblems:
        ApiError::AdminOnly,
        ApiError::unavailable(),
);

/// One page of users, ordered by email (`?page=1&per_page=100`; the original had no paging
/// and its clients get the first 100).
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    security(("access_token" = [])),
    params(Page),
    responses(
        (status = 200, description = "One page of users.", body = Vec<UserView>),
        ListUsersProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn list_users(
    State(state): State<AppState>,
    _admin: AdminToken,
    Query(page): Query<Page>,
) -> Result<Json<Vec<UserView>>, ApiError> {
    if !(1..=MAX_PAGE).contains(&page.page) || !(1..=MAX_PER_PAGE).contains(&page.per_page) {
        return Err(ApiError::Request {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "request.invalid_query",
            detail: format!("page is 1 to {MAX_PAGE} and per_page is 1 to {MAX_PER_PAGE}"),
        });
    }
    let offset = (page.page - 1).saturating_mul(page.per_page);
    Ok(Json(state.app.list_users(offset, page.per_page).await?))
}

async fn act(
    state: &AppState,
    context: &RequestContext,
    admin: UserId,
    user: UserId,
    action: AdminAction,
) -> Result<StatusCode, ApiError> {
    state
        .app
        .act_on_user(user, action, &context.metadata(Actor::Admin(admin)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

problems!(
    /// What `lock` can answer besides what its inputs and token imply.
    LockProblems:
        ApiError::AdminOnly,
        UserError::UnknownUser,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// Locks an account: no login completes and every session ends until it is unlocked.
#[utoipa::path(
    post,
    path = "/{user_id}/lock",
    tag = "users",
    security(("access_token" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Done."),
        LockProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn lock(
    State(state): State<AppState>,
    context: RequestContext,
    AdminToken(admin): AdminToken,
    Path(user_id): Path<UserId>,
) -> Result<StatusCode, ApiError> {
    act(&state, &context, admin.sub, user_id, AdminAction::Lock).await
}

problems!(
    /// What `unlock` can answer besides what its inputs and token imply.
    UnlockProblems:
        ApiError::AdminOnly,
        UserError::UnknownUser,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// Unlocks an account.
#[utoipa::path(
    post,
    path = "/{user_id}/unlock",
    tag = "users",
    security(("access_token" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Done."),
        UnlockProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn unlock(
    State(state): State<AppState>,
    context: RequestContext,
    AdminToken(admin): AdminToken,
    Path(user_id): Path<UserId>,
) -> Result<StatusCode, ApiError> {
    act(&state, &context, admin.sub, user_id, AdminAction::Unlock).await
}

problems!(
    /// What `end_sessions` can answer besides what its inputs and token imply.
    EndSessionsProblems:
        ApiError::AdminOnly,
        UserError::UnknownUser,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// Ends every session of a user.
#[utoipa::path(
    delete,
    path = "/{user_id}/sessions",
    tag = "users",
    security(("access_token" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Done."),
        EndSessionsProblems,
    )
)]
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
        AdminAction::EndSessions,
    )
    .await
}

/// Entries per page of history unless `limit` says otherwise.
const DEFAULT_HISTORY_PAGE: usize = 50;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Where to continue: the `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Entries per page, 1 to 200.
    #[serde(default = "default_history_page")]
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: usize,
}

fn default_history_page() -> usize {
    DEFAULT_HISTORY_PAGE
}

/// One page of the caller's security history.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "entries": [
        {"type": "login_succeeded", "at": "2026-11-28T21:04:05Z", "by": "anonymous",
         "ip_address": "203.0.113.7", "user_agent": "curl/8.5.0", "factor": "totp"},
        {"type": "login_failed", "at": "2026-11-28T21:03:40Z", "by": "anonymous",
         "ip_address": "203.0.113.7", "user_agent": "curl/8.5.0", "factor": "totp"},
        {"type": "tfa_enabled", "at": "2026-11-28T20:58:12Z", "by": "self",
         "ip_address": "203.0.113.7", "user_agent": "curl/8.5.0", "device_type": "code_generator"},
        {"type": "signed_up", "at": "2026-11-28T20:57:01Z", "by": "anonymous",
         "ip_address": "203.0.113.7", "user_agent": "curl/8.5.0"}
    ],
    "next_cursor": null
}))]
struct HistoryResponse {
    /// Newest first.
    entries: Vec<HistoryEntry>,
    /// Pass it as `cursor` for the next, older page; `null` after the oldest entry.
    next_cursor: Option<String>,
}

problems!(
    /// What `my_history` can answer besides what its inputs and token imply.
    MyHistoryProblems:
        ApiError::unavailable(),
);

/// The caller's security history, newest first: sign-up, logins (succeeded, failed with which
/// factor, locked out), two-factor changes, backup codes, sessions started and ended (and
/// why), password changes and resets, admin locks, and reads of the account's audit trail by
/// admins. Each entry has a stable `type`, the time, who caused it and, when the user or
/// someone not signed in caused it, the client's address and user agent. No secret, token
/// or challenge id, and nothing of an admin's request, appears.
#[utoipa::path(
    get,
    path = "/me/history",
    tag = "users",
    security(("access_token" = [])),
    params(HistoryQuery),
    responses(
        (status = 200, description = "One page of history.", body = HistoryResponse),
        MyHistoryProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn my_history(
    State(state): State<AppState>,
    AccessToken(claims): AccessToken,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryResponse>, ApiError> {
    if query.limit == 0 || query.limit > MAX_HISTORY_PAGE {
        return Err(ApiError::Request {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "request.invalid_query",
            detail: format!("limit is 1 to {MAX_HISTORY_PAGE}"),
        });
    }
    let cursor = query
        .cursor
        .as_deref()
        .map(HistoryCursor::decode)
        .transpose()
        .map_err(|_| ApiError::Request {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "request.invalid_query",
            detail: "cursor is not one this service gave".to_owned(),
        })?;
    let page = state
        .app
        .history(claims.sub, cursor, query.limit)
        .await
        .map_err(super::as_caller)?;
    Ok(Json(HistoryResponse {
        entries: page.entries,
        next_cursor: page.next_cursor.map(HistoryCursor::encode),
    }))
}

/// Events per page of a user's audit trail unless `limit` says otherwise.
const DEFAULT_EVENTS_PAGE: usize = 100;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Events after this sequence (0, the default, is from the first).
    #[serde(default)]
    #[param(minimum = 0, default = 0)]
    after: usize,
    /// Events per page, 1 to 1000.
    #[serde(default = "default_events_page")]
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: usize,
}

fn default_events_page() -> usize {
    DEFAULT_EVENTS_PAGE
}

problems!(
    /// What `user_events` can answer besides what its inputs and token imply.
    UserEventsProblems:
        ApiError::AdminOnly,
        UserError::UnknownUser,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// A user's stored events in sequence order, each with its place in the log, when it was
/// committed and who caused it in which request; every secret is redacted. The read is itself
/// recorded in the user's stream (an `AuditTrailRead` event naming this admin and request),
/// so the user's history shows it and auditors are audited too.
#[utoipa::path(
    get,
    path = "/{user_id}/events",
    tag = "users",
    security(("access_token" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The user's id"), EventsQuery),
    responses(
        (status = 200, description = "The events.", body = Vec<AuditedEvent>),
        UserEventsProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn user_events(
    State(state): State<AppState>,
    context: RequestContext,
    AdminToken(admin): AdminToken,
    Path(user_id): Path<UserId>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Vec<AuditedEvent>>, ApiError> {
    if query.limit == 0 || query.limit > MAX_EVENTS_PAGE {
        return Err(ApiError::Request {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "request.invalid_query",
            detail: format!("limit is 1 to {MAX_EVENTS_PAGE}"),
        });
    }
    let events = state
        .app
        .audit_events(
            user_id,
            query.after,
            query.limit,
            &context.metadata(Actor::Admin(admin.sub)),
        )
        .await?;
    Ok(Json(events))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AsOfQuery {
    /// An instant (RFC 3339): the user as they were then, folded from the log. Without it,
    /// the user as they are.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-28T21:00:00Z")]
    #[serde(default, with = "time::serde::rfc3339::option")]
    as_of: Option<time::OffsetDateTime>,
}

problems!(
    /// What `user_as_of` can answer besides what its inputs and token imply.
    UserAsOfProblems:
        ApiError::AdminOnly,
        UserError::UnknownUser,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// One user, as they are or, with `as_of`, as they were at that instant: folded from the
/// events committed by then, not read from a stored view. 404 before the user signed up. A
/// read with `as_of` is recorded in the user's stream, like a read of their events.
#[utoipa::path(
    get,
    path = "/{user_id}",
    tag = "users",
    security(("access_token" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The user's id"), AsOfQuery),
    responses(
        (status = 200, description = "The user.", body = UserView),
        UserAsOfProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn user_as_of(
    State(state): State<AppState>,
    context: RequestContext,
    AdminToken(admin): AdminToken,
    Path(user_id): Path<UserId>,
    Query(query): Query<AsOfQuery>,
) -> Result<Json<UserView>, ApiError> {
    let view = match query.as_of {
        Some(at) => {
            state
                .app
                .user_as_of(user_id, at, &context.metadata(Actor::Admin(admin.sub)))
                .await?
        }
        None => state.app.user_view(user_id).await?,
    };
    view.map(Json)
        .ok_or_else(|| ApiError::from(UserError::UnknownUser))
}
