//! `/auth/password`, `/auth/forgot-password` and `/auth/reset-password`.

use axum::extract::State;
use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use secrecy::SecretString;
use serde::Deserialize;
use twofold_domain::services::Randomness;
use twofold_domain::user::{ChangePassword, RequestPasswordReset, ResetPassword};
use twofold_domain::values::{Email, NewPassword};
use twofold_domain::{User, UserCommand, UserError, UserEvent};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::unknown_user_is_invalid_token;
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, Json, RequestContext};
use crate::http::state::AppState;

/// Bytes of randomness in a reset token (256 bits).
const RESET_TOKEN_BYTES: usize = 32;

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

/// Changes the password; every other session of the user ends and a notice is emailed.
#[utoipa::path(
    put,
    path = "/password",
    tag = "auth",
    security(("access_token" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Changed."),
        (status = 403, description = "`auth.wrong_password`, `auth.account_locked`"),
        (status = 409, description = "`concurrency.conflict`"),
        (status = 422, description = "`user.password_too_short`, `user.password_too_long`, \
            `user.password_too_common`"),
        (status = 429, description = "`auth.locked`"),
        (status = 503, description = "`service.busy`, `service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn change_password(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let command = UserCommand::ChangePassword(ChangePassword {
        current: request.current_password,
        new: NewPassword::parse(request.new_password)?,
        keep_session: claims.sid,
    });
    let actor = format!("user:{}", claims.sub);
    let mail = |user: &User, events: &[UserEvent]| {
        let changed = events
            .iter()
            .any(|event| matches!(event, UserEvent::PasswordChanged { .. }));
        match user.email() {
            Some(to) if changed => vec![state.mail.password_changed(
                claims.sub,
                to.as_str(),
                context.request_id(),
                false,
            )],
            _ => Vec::new(),
        }
    };
    let events = state
        .users
        .execute(claims.sub, command, context.metadata(actor), &mail)
        .await
        .map_err(unknown_user_is_invalid_token)
        .inspect_err(|error| {
            tracing::info!(target: "security", user_id = %claims.sub,
                code = error.status_and_code().1, "password change refused");
        })?;
    if events
        .iter()
        .any(|event| matches!(event, UserEvent::PasswordChanged { .. }))
    {
        tracing::info!(target: "security", user_id = %claims.sub, "password changed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        tracing::info!(target: "security", user_id = %claims.sub, "password change refused: wrong current password");
        Err(ApiError::WrongPassword)
    }
}

/// Whose password to reset.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"email": "ada@example.com"}))]
pub struct ForgotPasswordRequest {
    /// The account's email address.
    email: String,
}

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
        (status = 429, description = "`request.rate_limited`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn forgot_password(
    State(state): State<AppState>,
    context: RequestContext,
    Json(request): Json<ForgotPasswordRequest>,
) -> StatusCode {
    let Ok(email) = Email::parse(&request.email) else {
        return StatusCode::ACCEPTED;
    };
    tokio::spawn(async move {
        if let Err(error) = issue_reset_token(&state, &context, &email).await {
            tracing::warn!(error = %error, "password reset not issued");
        }
    });
    StatusCode::ACCEPTED
}

async fn issue_reset_token(
    state: &AppState,
    context: &RequestContext,
    email: &Email,
) -> Result<(), ApiError> {
    let Some(user_id) = state.users.find_by_email(email).await? else {
        return Ok(());
    };
    let rng: &dyn Randomness = state.services.rng.as_ref();
    let mut bytes = [0u8; RESET_TOKEN_BYTES];
    rng.fill(&mut bytes);
    let token = SecretString::from(URL_SAFE_NO_PAD.encode(bytes));
    let command = UserCommand::RequestPasswordReset(RequestPasswordReset {
        token: token.clone(),
    });
    let mail = |user: &User, _: &[UserEvent]| match user.email() {
        Some(to) => {
            vec![state
                .mail
                .password_reset(user_id, to.as_str(), context.request_id(), &token)]
        }
        None => Vec::new(),
    };
    state
        .users
        .execute(
            user_id,
            command,
            context.metadata("anonymous".to_owned()),
            &mail,
        )
        .await?;
    tracing::info!(target: "security", %user_id, "password reset requested");
    Ok(())
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

/// Sets a new password with an emailed token; every session ends. An unknown email and a
/// wrong token get the same answer.
#[utoipa::path(
    post,
    path = "/reset-password",
    tag = "auth",
    request_body = ResetPasswordRequest,
    responses(
        (status = 204, description = "The password is reset; a notice is emailed."),
        (status = 400, description = "`auth.reset_token_invalid`"),
        (status = 409, description = "`concurrency.conflict`"),
        (status = 422, description = "`user.password_too_short`, `user.password_too_long`, \
            `user.password_too_common`"),
        (status = 429, description = "`request.rate_limited`"),
        (status = 503, description = "`service.busy`, `service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn reset_password(
    State(state): State<AppState>,
    context: RequestContext,
    Json(request): Json<ResetPasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let new = NewPassword::parse(request.new_password)?;
    let user_id = match Email::parse(&request.email) {
        Ok(email) => state.users.find_by_email(&email).await?,
        Err(_) => None,
    };
    let Some(user_id) = user_id else {
        tracing::info!(target: "security", "password reset refused: unknown account");
        return Err(UserError::ResetTokenInvalid.into());
    };
    let command = UserCommand::ResetPassword(ResetPassword {
        token: request.token,
        new,
    });
    let mail = |user: &User, _: &[UserEvent]| match user.email() {
        Some(to) => {
            vec![state
                .mail
                .password_changed(user_id, to.as_str(), context.request_id(), true)]
        }
        None => Vec::new(),
    };
    if let Err(error) = state
        .users
        .execute(
            user_id,
            command,
            context.metadata("anonymous".to_owned()),
            &mail,
        )
        .await
    {
        let code = error.status_and_code().1;
        tracing::info!(target: "security", %user_id, code, "password reset refused");
        return Err(error);
    }
    tracing::info!(target: "security", %user_id, "password reset");
    Ok(StatusCode::NO_CONTENT)
}
