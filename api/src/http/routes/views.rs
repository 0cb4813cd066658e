//! `/admin/views`: an admin rebuilds the views from the log while the service serves. It is
//! how the embedded mode rebuilds (its log and views live in the process); on Postgres,
//! `twofold views rebuild` does the same from the command line.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use twofold_projections::rebuild::{Difference, RebuildError, RebuildReport};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::ApiError;
use crate::http::extract::{AdminToken, Json, Query};
use crate::http::openapi::problems;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(rebuild))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RebuildParams {
    /// Put the rebuilt views in place of the live ones (default: only compare).
    #[serde(default)]
    apply: bool,
}

/// What a rebuild found and did.
#[derive(Serialize, ToSchema)]
pub struct RebuildResult {
    /// Events replayed.
    events: usize,
    /// Users they belong to.
    users: usize,
    /// Seconds the replay took.
    seconds: f64,
    /// Replay speed.
    events_per_second: f64,
    /// Events committed during the rebuild, applied after the replay.
    caught_up: usize,
    /// Every difference between the live views and the rebuilt ones.
    differences: Vec<ViewDifference>,
    /// Whether the rebuilt views were put in place.
    applied: bool,
}

/// A field of a view that differs from what the log says.
#[derive(Serialize, ToSchema)]
pub struct ViewDifference {
    /// The user id.
    user: String,
    /// The view (`user_view`, `session_view`).
    view: &'static str,
    /// The field, or `(row)` when one side has no row.
    field: String,
    /// The live value (JSON), or `absent`.
    live: String,
    /// The rebuilt value (JSON), or `absent`.
    rebuilt: String,
}

impl From<Difference> for ViewDifference {
    fn from(difference: Difference) -> Self {
        Self {
            user: difference.user,
            view: difference.view,
            field: difference.field,
            live: difference.live,
            rebuilt: difference.rebuilt,
        }
    }
}

impl From<RebuildReport> for RebuildResult {
    fn from(report: RebuildReport) -> Self {
        Self {
            events: report.events,
            users: report.users,
            seconds: report.elapsed.as_secs_f64(),
            events_per_second: report.events_per_second(),
            caught_up: report.caught_up,
            applied: report.applied,
            differences: report.differences.into_iter().map(Into::into).collect(),
        }
    }
}

problems!(
    /// What `rebuild` can answer besides what its token implies (a conflict: another rebuild
    /// is running).
    RebuildProblems:
        ApiError::AdminOnly,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// Replays the whole log into fresh views and compares them with the live ones, field by
/// field; with `apply=true` the rebuilt views replace the live ones, atomically.
#[utoipa::path(
    post,
    path = "/views/rebuild",
    tag = "operations",
    security(("access_token" = [])),
    params(RebuildParams),
    responses(
        (status = 200, description = "The rebuild's report.", body = RebuildResult),
        RebuildProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn rebuild(
    State(state): State<AppState>,
    AdminToken(admin): AdminToken,
    Query(params): Query<RebuildParams>,
) -> Result<Json<RebuildResult>, ApiError> {
    let report = state
        .app
        .rebuild_views(params.apply)
        .await
        .map_err(|error| match error {
            RebuildError::Busy => ApiError::Conflict,
            RebuildError::Store(error) => crate::app::AppError::from(error).into(),
            other => ApiError::Internal(Box::new(other)),
        })?;
    tracing::info!(target: "security", admin = %admin.sub, apply = params.apply,
        differences = report.differences.len(), "views rebuilt");
    Ok(Json(report.into()))
}
