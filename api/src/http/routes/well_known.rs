//! `/.well-known/jwks.json`: the public keys that verify Twofold's tokens.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::extract::Json;
use crate::http::jwt::Jwks;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(jwks))
}

/// The public keys (JWK Set) that verify Twofold's tokens, current and retired. Empty in
/// HS256 mode, whose shared secret is never published.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "keys",
    responses(
        (status = 200, description = "The JWK Set.", body = Jwks, example = json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "kid": "b5e2c1f0",
                "alg": "EdDSA",
                "use": "sig"
            }]
        })),
    )
)]
async fn jwks(State(state): State<AppState>) -> Json<Jwks> {
    Json(state.tokens.jwks())
}
