//! `/.well-known/jwks.json`: the public keys that verify Twofold's tokens.

use axum::extract::State;
use axum::routing::get;
use axum::Router;

use crate::extract::Json;
use crate::jwt::Jwks;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/.well-known/jwks.json", get(jwks))
}

async fn jwks(State(state): State<AppState>) -> Json<Jwks> {
    Json(state.tokens.jwks())
}
