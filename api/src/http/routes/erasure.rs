//! `DELETE /users/me` and `DELETE /users/{user_id}`: erasing a user. The events stay; what
//! identified the person in them can no longer be read (see `app::erasure`).

use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;
use twofold_domain::user::ChangeOutcome;
use twofold_domain::values::UserId;
use twofold_domain::{Actor, UserError};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::as_caller;
use crate::app::erasure::{reason, MAX_REASON_CHARS};
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, AdminToken, Json, Path, Query, RequestContext};
use crate::http::openapi::problems;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(erase_me))
        .routes(routes!(erase_user))
}

/// The proofs needed to erase one's own account.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"password": "correct horse battery", "code": "123456"}))]
pub struct EraseMeRequest {
    /// The current password.
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// A current second factor (TOTP code, emailed code or unused backup code); needed only
    /// when two-factor authentication is on.
    #[schema(value_type = Option<String>)]
    code: Option<SecretString>,
}

problems!(
    /// What `erase_me` can answer besides what its inputs and token imply.
    EraseMeProblems:
        proofs,
        UserError::SecondFactorRequired,
        UserError::PasskeySignInRequired,
);

/// Erases the caller's account: every session ends at once, the address is free for a new
/// sign-up, and what identified the person in the log (address, name, client addresses, user
/// agents) can no longer be read. The events themselves stay, so the log stays whole.
#[utoipa::path(
    delete,
    path = "/me",
    tag = "users",
    security(("access_token" = [])),
    request_body = EraseMeRequest,
    responses(
        (status = 204, description = "Erased."),
        EraseMeProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn erase_me(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<EraseMeRequest>,
) -> Result<StatusCode, ApiError> {
    let outcome = state
        .app
        .erase_own_account(
            claims.sub,
            claims.session_id(),
            request.password,
            request.code,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    match outcome {
        ChangeOutcome::Changed => Ok(StatusCode::NO_CONTENT),
        ChangeOutcome::Refused(refusal) => Err(ApiError::Refused(refusal)),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EraseQuery {
    /// Why, recorded with the erasure in clear (see [`reason_schema`]).
    #[param(schema_with = reason_schema)]
    reason: Option<String>,
}

/// `reason` as [`reason`] takes it: its length limit, and no control characters.
fn reason_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "Why, recorded with the erasure in clear (never the person's data): at most \
             {MAX_REASON_CHARS} characters once white space at either end is trimmed, no \
             control characters."
        )))
        .max_length(Some(MAX_REASON_CHARS))
        .pattern(Some(r"^[^\x00-\x1f\x7f-\x9f]*$"))
        .build()
}

problems!(
    /// What `erase_user` can answer besides what its inputs and token imply.
    EraseUserProblems:
        ApiError::AdminOnly,
        UserError::UnknownUser,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// Erases a user's account (admin): as `DELETE /users/me` does, recorded with the admin as
/// the actor and the reason given.
#[utoipa::path(
    delete,
    path = "/{user_id}",
    tag = "users",
    security(("access_token" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The user's id"), EraseQuery),
    responses(
        (status = 204, description = "Erased."),
        EraseUserProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn erase_user(
    State(state): State<AppState>,
    context: RequestContext,
    AdminToken(admin): AdminToken,
    Path(user_id): Path<UserId>,
    Query(query): Query<EraseQuery>,
) -> Result<StatusCode, ApiError> {
    let reason = reason(query.reason.as_deref()).map_err(|error| ApiError::Request {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "request.invalid_query",
        detail: error.to_string(),
    })?;
    let mut metadata = context.metadata(Actor::Admin(admin.sub));
    metadata.reason = reason;
    state.app.erase_account(user_id, &metadata).await?;
    Ok(StatusCode::NO_CONTENT)
}
