//! `/tasks`: a test email and the status of queued emails.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use twofold_domain::Actor;
use twofold_nats::TaskState;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::as_caller;
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, Json, Query, RequestContext};
use crate::http::openapi::problems;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(test_email))
        .routes(routes!(task_status))
}

/// A queued email.
#[derive(Serialize, ToSchema)]
struct TaskCreated {
    /// Its id, for `/tasks/taskstatus`.
    task_id: Uuid,
}

problems!(
    /// What `test_email` can answer besides what its inputs and token imply.
    TestEmailProblems:
        ApiError::unavailable(),
);

/// Queues a test email to the caller.
#[utoipa::path(
    get,
    path = "/test-celery",
    tag = "tasks",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "Queued.", body = TaskCreated),
        TestEmailProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn test_email(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
) -> Result<Json<TaskCreated>, ApiError> {
    let task_id = state
        .app
        .send_test_email(claims.sub, &context.metadata(Actor::User(claims.sub)))
        .await
        .map_err(as_caller)?;
    Ok(Json(TaskCreated { task_id }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TaskQuery {
    /// The `task_id` of `/tasks/test-celery`.
    task_id: Uuid,
}

/// Where a queued email is.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"state": "SUCCESS", "result": "email sent"}))]
struct TaskStatusResponse {
    /// The state, with the original service's names.
    state: TaskState,
    /// What happened, once it is known.
    result: Option<&'static str>,
}

problems!(
    /// What `task_status` can answer besides what its inputs and token imply.
    TaskStatusProblems:
        ApiError::NotFound("no such task of yours"),
        ApiError::unavailable(),
);

/// The state of one of the caller's queued emails (an admin may ask about anyone's).
#[utoipa::path(
    get,
    path = "/taskstatus",
    tag = "tasks",
    security(("access_token" = [])),
    params(TaskQuery),
    responses(
        (status = 200, description = "The state.", body = TaskStatusResponse),
        TaskStatusProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn task_status(
    State(state): State<AppState>,
    AccessToken(claims): AccessToken,
    Query(query): Query<TaskQuery>,
) -> Result<Json<TaskStatusResponse>, ApiError> {
    let task_state = state
        .app
        .task_status(claims.sub, query.task_id)
        .await?
        .ok_or(ApiError::NotFound("no such task of yours"))?;
    let result = match task_state {
        TaskState::Pending => None,
        TaskState::Success => Some("email sent"),
        TaskState::Failure => Some("email could not be sent"),
    };
    Ok(Json(TaskStatusResponse {
        state: task_state,
        result,
    }))
}
