//! `/auth/password`, `/auth/forgot-password` and `/auth/reset-password`.

use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;
use twofold_domain::user::{ChangeOutcome, Refusal};
use twofold_domain::values::NewPassword;
use twofold_domain::{Actor, UserError};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::as_caller;
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, Json, RequestContext};
use crate::http::openapi::problems;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(change_password))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
}

/// The current password and its replacement.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({
    "current_password": "correct horse battery",
    "new_password": "a brand new passphrase"
}))]
pub struct ChangePasswordRequest {
    /// The current password.
    #[schema(value_type = String, format = Password)]
    current_password: SecretString,
    /// 8 to 128 characters, not a common password.
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 128)]
    new_password: SecretString,
}

problems!(
    /// What `change_password` can answer besides what its inputs and token imply.
    ChangePasswordProblems:
        Refusal::WrongPassword,
        UserError::AccountLocked,
        ApiError::Conflict,
        UserError::PasswordTooShort,
        UserError::PasswordTooLong,
        UserError::PasswordTooCommon,
        UserError::PasswordTooWeak,
        UserError::Locked { retry_after_secs: 60 },
        UserError::HasherSaturated,
        ApiError::unavailable(),
);

/// Changes the password; every other session of the user ends and a notice is emailed.
#[utoipa::path(
    put,
    path = "/password",
    tag = "auth",
    security(("access_token" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Changed."),
        ChangePasswordProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn change_password(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let outcome = state
        .app
        .change_password(
            claims.sub,
            request.current_password,
            NewPassword::parse(request.new_password)?,
            Some(claims.session_id()),
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    match outcome {
        ChangeOutcome::Changed => Ok(StatusCode::NO_CONTENT),
        ChangeOutcome::Refused(refusal) => Err(ApiError::Refused(refusal)),
    }
}

/// Whose password to reset.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"email": "ada@example.com"}))]
pub struct ForgotPasswordRequest {
    /// The account's email address.
    email: String,
}

problems!(
    /// What `forgot_password` can answer besides what its inputs and token imply.
    ForgotPasswordProblems:
        ApiError::rate_limited(60),
);

/// Emails a reset token if the account exists. The answer is the same, and as fast, either
/// way: the work happens after the response, so neither status nor timing tells whether the
/// address has an account.
#[utoipa::path(
    post,
    path = "/forgot-password",
    tag = "auth",
    request_body = ForgotPasswordRequest,
    responses(
        (status = 202, description = "Accepted, whether or not the account exists. If it does, \
            a reset token valid for 15 minutes is emailed."),
        ForgotPasswordProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn forgot_password(
    State(state): State<AppState>,
    context: RequestContext,
    Json(request): Json<ForgotPasswordRequest>,
) -> StatusCode {
    state
        .app
        .forgot_password(&request.email, context.metadata(Actor::Anonymous));
    StatusCode::ACCEPTED
}

/// A new password, with the emailed reset token.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({
    "email": "ada@example.com",
    "token": "q3Xr0wJ9c2W4nQ7b1VYtE5kLmA8sD6fH0gZpR2uN4yI",
    "new_password": "a brand new passphrase"
}))]
pub struct ResetPasswordRequest {
    /// The account's email address.
    email: String,
    /// The token from the reset email; it works once.
    #[schema(value_type = String)]
    token: SecretString,
    /// 8 to 128 characters, not a common password.
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 128)]
    new_password: SecretString,
}

problems!(
    /// What `reset_password` can answer besides what its inputs and token imply.
    ResetPasswordProblems:
        UserError::ResetTokenInvalid,
        ApiError::Conflict,
        UserError::PasswordTooShort,
        UserError::PasswordTooLong,
        UserError::PasswordTooCommon,
        UserError::PasswordTooWeak,
        ApiError::rate_limited(60),
        UserError::HasherSaturated,
        ApiError::unavailable(),
);

/// Sets a new password with an emailed token; every session ends. An unknown email and a
/// wrong token get the same answer.
#[utoipa::path(
    post,
    path = "/reset-password",
    tag = "auth",
    request_body = ResetPasswordRequest,
    responses(
        (status = 204, description = "The password is reset; a notice is emailed."),
        ResetPasswordProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn reset_password(
    State(state): State<AppState>,
    context: RequestContext,
    Json(request): Json<ResetPasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let new = NewPassword::parse(request.new_password)?;
    state
        .app
        .reset_password(
            &request.email,
            request.token,
            new,
            &context.metadata(Actor::Anonymous),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
