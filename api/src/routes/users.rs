//! `/users`: the admin listing.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use twofold_projections::UserView;

use crate::error::ApiError;
use crate::extract::{AdminToken, Json};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/users", get(list_users))
}

#[tracing::instrument(skip_all)]
async fn list_users(
    State(state): State<AppState>,
    AdminToken(_): AdminToken,
) -> Result<Json<Vec<UserView>>, ApiError> {
    Ok(Json(state.directory.list().await?))
}
