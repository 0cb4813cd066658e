//! `/tfa`: the second login step, backup codes, and enrolling a device.

use axum::extract::State;
use axum::response::Response;
use secrecy::SecretString;
use serde::Deserialize;
use twofold_domain::user::{LoginOutcome, Refusal};
use twofold_domain::{Actor, UserError};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::DeviceRequest;
use super::dto::TokenResponse;
use super::{as_caller, enrolment_response, png};
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, Json, PreTfaToken, Query, RequestContext};
use crate::http::openapi::problems;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login_tfa))
        .routes(routes!(recover_tfa))
        .routes(routes!(get_my_qrcode))
        .routes(routes!(enable_tfa))
        .merge(super::tfa_manage::router())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginTfaQuery {
    /// The 6-digit code of the authenticator app, or the emailed code.
    #[param(value_type = String, example = "123456")]
    tfa_token: SecretString,
}

problems!(
    /// What `login_tfa` can answer besides what its inputs and token imply.
    LoginTfaProblems:
        UserError::TfaNotEnabled,
        UserError::ChallengeClosed,
        Refusal::WrongCode,
        UserError::TfaCodeReplayed,
        UserError::EmailCodeExpired,
        UserError::AccountLocked,
        ApiError::Conflict,
        UserError::Locked { retry_after_secs: 60 },
        ApiError::rate_limited(60),
        ApiError::unavailable(),
);

/// The second login step with a TOTP or emailed code. A wrong code is 403; after 5 the
/// challenge closes and the login must start again.
#[utoipa::path(
    post,
    path = "/login_tfa",
    tag = "tfa",
    security(("pre_2fa_token" = [])),
    params(LoginTfaQuery),
    responses(
        (status = 200, description = "Logged in: an access and a refresh token.",
            body = TokenResponse),
        LoginTfaProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn login_tfa(
    State(state): State<AppState>,
    context: RequestContext,
    PreTfaToken(claims): PreTfaToken,
    Query(query): Query<LoginTfaQuery>,
) -> Result<Json<TokenResponse>, ApiError> {
    let outcome = state
        .app
        .verify_tfa_code(
            claims.sub,
            claims.challenge_id(),
            query.tfa_token,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    second_step_answer(&state, outcome)
}

/// The answer of a second login step.
fn second_step_answer(
    state: &AppState,
    outcome: LoginOutcome,
) -> Result<Json<TokenResponse>, ApiError> {
    match outcome {
        LoginOutcome::LoggedIn(grant) => Ok(Json(TokenResponse::for_session(state, grant)?)),
        LoginOutcome::Refused(refusal) => Err(ApiError::Refused(refusal)),
        LoginOutcome::SecondFactorRequired { .. } => Err(ApiError::Internal(
            "a second login step asked for a second factor".into(),
        )),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecoverTfaQuery {
    /// One of the emailed backup codes; it works once.
    #[param(value_type = String, example = "7G3K-Q9WX-2M4T-HV8P-RC6N-JD1Z")]
    tfa_backup_token: SecretString,
}

problems!(
    /// What `recover_tfa` can answer besides what its inputs and token imply.
    RecoverTfaProblems:
        UserError::TfaNotEnabled,
        UserError::ChallengeClosed,
        Refusal::WrongBackupCode,
        UserError::AccountLocked,
        UserError::NoBackupCodesLeft,
        ApiError::Conflict,
        UserError::Locked { retry_after_secs: 60 },
        ApiError::rate_limited(60),
        ApiError::unavailable(),
);

/// The second login step with a backup code, which is spent; a notice is emailed.
#[utoipa::path(
    post,
    path = "/recover_tfa",
    tag = "tfa",
    security(("pre_2fa_token" = [])),
    params(RecoverTfaQuery),
    responses(
        (status = 200, description = "Logged in: an access and a refresh token.",
            body = TokenResponse),
        RecoverTfaProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn recover_tfa(
    State(state): State<AppState>,
    context: RequestContext,
    PreTfaToken(claims): PreTfaToken,
    Query(query): Query<RecoverTfaQuery>,
) -> Result<Json<TokenResponse>, ApiError> {
    let outcome = state
        .app
        .use_backup_code(
            claims.sub,
            claims.challenge_id(),
            query.tfa_backup_token,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    second_step_answer(&state, outcome)
}

problems!(
    /// What `get_my_qrcode` can answer besides what its inputs and token imply.
    GetMyQrcodeProblems:
        UserError::NoCodeGenerator,
        ApiError::unavailable(),
);

/// The QR code of the caller's authenticator app, again.
#[utoipa::path(
    get,
    path = "/get_my_qrcode",
    tag = "tfa",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The QR code (PNG) of the `otpauth://totp/` URI.",
            content_type = "image/png"),
        GetMyQrcodeProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn get_my_qrcode(
    State(state): State<AppState>,
    AccessToken(claims): AccessToken,
) -> Result<Response, ApiError> {
    let code = state
        .app
        .authenticator_code(claims.sub)
        .await
        .map_err(as_caller)?;
    Ok(png(crate::http::qr::png(code.uri().to_owned()).await?))
}

problems!(
    /// What `enable_tfa` can answer besides what its inputs and token imply.
    EnableTfaProblems:
        UserError::TfaAlreadyEnabled,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// Turns on the second factor; the backup codes and a notice are emailed.
#[utoipa::path(
    put,
    path = "/enable_tfa",
    tag = "tfa",
    security(("access_token" = [])),
    request_body = DeviceRequest,
    responses(
        (status = 200, description = "Enabled. For `email` the body is empty; for a \
            `code_generator` device it is the QR code (`image/png`) to scan."),
        EnableTfaProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn enable_tfa(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<DeviceRequest>,
) -> Result<Response, ApiError> {
    let code = state
        .app
        .enable_tfa(
            claims.sub,
            request.device_type,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    enrolment_response(code).await
}
