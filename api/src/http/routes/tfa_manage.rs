//! `/tfa/disable_tfa`, `/tfa/switch_device` and `/tfa/backup_codes`: managing the second
//! factor once it is on. Each needs a current second factor (a TOTP code, an emailed
//! confirmation code or a backup code);
//! turning it off and switching device need the password too. Every change sends a notice.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use twofold_domain::user::{ChangeOutcome, Refusal};
use twofold_domain::values::DeviceType;
use twofold_domain::{Actor, UserError};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{as_caller, enrolment_response};
use crate::app::DeviceSwitch;
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, Json, RequestContext};
use crate::http::openapi::problems;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(disable_tfa))
        .routes(routes!(switch_device))
        .routes(routes!(backup_codes_left, regenerate_backup_codes))
}

/// The answer to a sensitive change: done, or refused with the recorded refusal.
pub(super) fn answer(outcome: ChangeOutcome) -> Result<(), ApiError> {
    match outcome {
        ChangeOutcome::Changed => Ok(()),
        ChangeOutcome::Refused(refusal) => Err(ApiError::Refused(refusal)),
    }
}

/// The proofs needed to turn the second factor off.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"password": "correct horse battery", "code": "123456"}))]
pub struct DisableTfaRequest {
    /// The current password.
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// A current TOTP code, a confirmation code from `POST /api/v1/tfa/email_code` (email
    /// device), or an unused backup code.
    #[schema(value_type = String)]
    code: SecretString,
}

problems!(
    /// What `disable_tfa` can answer besides what its inputs and token imply.
    DisableTfaProblems:
        proofs,
        UserError::TfaNotEnabled,
);

/// Turns the second factor off; a notice is emailed.
#[utoipa::path(
    post,
    path = "/disable_tfa",
    tag = "tfa",
    security(("access_token" = [])),
    request_body = DisableTfaRequest,
    responses(
        (status = 204, description = "Turned off."),
        DisableTfaProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn disable_tfa(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<DisableTfaRequest>,
) -> Result<StatusCode, ApiError> {
    let outcome = state
        .app
        .disable_tfa(
            claims.sub,
            request.password,
            request.code,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    answer(outcome)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The proofs needed to replace the device, and the new device.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({
    "password": "correct horse battery",
    "code": "123456",
    "device_type": "email"
}))]
pub struct SwitchDeviceRequest {
    /// The current password.
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// A current TOTP code, a confirmation code from `POST /api/v1/tfa/email_code` (email
    /// device), or an unused backup code.
    #[schema(value_type = String)]
    code: SecretString,
    /// The new device.
    device_type: DeviceType,
}

problems!(
    /// What `switch_device` can answer besides what its inputs and token imply.
    SwitchDeviceProblems:
        proofs,
        UserError::TfaNotEnabled,
);

/// Replaces the device: a QR code for a new authenticator app, or an empty body for email;
/// new backup codes are emailed.
#[utoipa::path(
    put,
    path = "/switch_device",
    tag = "tfa",
    security(("access_token" = [])),
    request_body = SwitchDeviceRequest,
    responses(
        (status = 200, description = "Switched. For `email` the body is empty; for a \
            `code_generator` device it is the QR code (`image/png`) to scan."),
        SwitchDeviceProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn switch_device(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<SwitchDeviceRequest>,
) -> Result<Response, ApiError> {
    let switched = state
        .app
        .switch_tfa_device(
            claims.sub,
            request.password,
            request.code,
            request.device_type,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    match switched {
        DeviceSwitch::Switched(code) => enrolment_response(code).await,
        DeviceSwitch::Refused(refusal) => Err(ApiError::Refused(refusal)),
    }
}

/// The proof needed to replace the backup codes.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"code": "123456"}))]
pub struct RegenerateRequest {
    /// A current TOTP code, a confirmation code from `POST /api/v1/tfa/email_code` (email
    /// device), or an unused backup code.
    #[schema(value_type = String)]
    code: SecretString,
}

problems!(
    /// What `regenerate_backup_codes` can answer besides what its inputs and token imply.
    RegenerateBackupCodesProblems:
        UserError::TfaNotEnabled,
        Refusal::WrongCode,
        UserError::TfaCodeReplayed,
        UserError::EmailCodeExpired,
        ApiError::Conflict,
        UserError::Locked { retry_after_secs: 60 },
        ApiError::unavailable(),
);

/// Replaces the backup codes (the new ones are emailed); the old ones stop working.
#[utoipa::path(
    post,
    path = "/backup_codes",
    tag = "tfa",
    security(("access_token" = [])),
    request_body = RegenerateRequest,
    responses(
        (status = 204, description = "Replaced; the new codes are emailed."),
        RegenerateBackupCodesProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn regenerate_backup_codes(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<RegenerateRequest>,
) -> Result<StatusCode, ApiError> {
    let outcome = state
        .app
        .regenerate_backup_codes(
            claims.sub,
            request.code,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    answer(outcome)?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many backup codes are left.
#[derive(Serialize, ToSchema)]
struct BackupCodesLeft {
    /// Unused backup codes.
    #[schema(example = 5)]
    remaining: usize,
}

problems!(
    /// What `backup_codes_left` can answer besides what its inputs and token imply.
    BackupCodesLeftProblems:
        ApiError::unavailable(),
);

/// How many backup codes the caller has left.
#[utoipa::path(
    get,
    path = "/backup_codes",
    tag = "tfa",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The count.", body = BackupCodesLeft),
        BackupCodesLeftProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn backup_codes_left(
    State(state): State<AppState>,
    AccessToken(claims): AccessToken,
) -> Result<Json<BackupCodesLeft>, ApiError> {
    let remaining = state
        .app
        .backup_codes_left(claims.sub)
        .await
        .map_err(as_caller)?;
    Ok(Json(BackupCodesLeft { remaining }))
}
