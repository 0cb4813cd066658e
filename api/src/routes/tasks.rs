//! `/tasks`: a test email and the status of queued emails.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use twofold_nats::TaskState;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{AccessToken, Json, Query, RequestContext};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/test-celery", get(test_email))
        .route("/taskstatus", get(task_status))
}

#[derive(Serialize)]
struct TaskCreated {
    task_id: Uuid,
}

#[tracing::instrument(skip_all)]
async fn test_email(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
) -> Result<Json<TaskCreated>, ApiError> {
    let view = state
        .directory
        .find(claims.sub)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    let job = state
        .mail
        .test(claims.sub, &view.email, context.request_id());
    let task_id = job.id;
    state.mail_queue.enqueue(job).await?;
    Ok(Json(TaskCreated { task_id }))
}

#[derive(Deserialize)]
struct TaskQuery {
    task_id: Uuid,
}

#[derive(Serialize)]
struct TaskStatusResponse {
    state: TaskState,
    result: Option<&'static str>,
}

#[tracing::instrument(skip_all)]
async fn task_status(
    State(state): State<AppState>,
    AccessToken(claims): AccessToken,
    Query(query): Query<TaskQuery>,
) -> Result<Json<TaskStatusResponse>, ApiError> {
    const NOT_FOUND: ApiError = ApiError::NotFound("no such task of yours");
    let (owner, task_state) = state
        .mail_queue
        .status(query.task_id)
        .await?
        .ok_or(NOT_FOUND)?;
    if owner != claims.sub {
        let is_admin = state
            .directory
            .find(claims.sub)
            .await?
            .is_some_and(|view| view.is_admin);
        if !is_admin {
            return Err(NOT_FOUND);
        }
    }
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
