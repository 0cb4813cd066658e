//! `/tfa/disable_tfa`, `/tfa/switch_device` and `/tfa/backup_codes`: managing the second
//! factor once it is on. Each needs a current second factor (a TOTP code or a backup code);
//! turning it off and switching device need the password too. Every change sends a notice.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use twofold_domain::backup_codes;
use twofold_domain::user::{DisableTfa, RegenerateBackupCodes, SwitchTfaDevice};
use twofold_domain::values::DeviceType;
use twofold_domain::{Factor, User, UserCommand, UserEvent};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    caller_enrolment_response, enrolment_mail, new_enrolment, unknown_user_is_invalid_token,
};
use crate::app::gateway::MailPlan;
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, Json, RequestContext};
use crate::http::jwt::Claims;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(disable_tfa))
        .routes(routes!(switch_device))
        .routes(routes!(backup_codes_left, regenerate_backup_codes))
}

/// Runs a management command; `done` tells its success event apart. A wrong password or
/// code is a recorded failure, answered 403.
async fn manage(
    state: &AppState,
    context: &RequestContext,
    claims: &Claims,
    command: UserCommand,
    mail: MailPlan<'_>,
    done: fn(&UserEvent) -> bool,
) -> Result<(), ApiError> {
    let actor = format!("user:{}", claims.sub);
    let events = state
        .users
        .execute(claims.sub, command, context.metadata(actor), mail)
        .await
        .map_err(unknown_user_is_invalid_token)
        .inspect_err(|error| {
            tracing::info!(target: "security", user_id = %claims.sub,
                code = error.status_and_code().1, "two-factor change refused");
        })?;
    if events.iter().any(done) {
        return Ok(());
    }
    let wrong_password = events.iter().any(|event| {
        matches!(
            event,
            UserEvent::LoginFailed {
                factor: Factor::Password,
                ..
            }
        )
    });
    let refusal = if wrong_password {
        ApiError::WrongPassword
    } else {
        ApiError::WrongTfaCode
    };
    tracing::info!(target: "security", user_id = %claims.sub, code = refusal.status_and_code().1,
        "two-factor change refused");
    Err(refusal)
}

/// The proofs needed to turn the second factor off.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"password": "correct horse battery", "code": "123456"}))]
pub struct DisableTfaRequest {
    /// The current password.
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// A current TOTP code or an unused backup code.
    #[schema(value_type = String)]
    code: SecretString,
}

/// Turns the second factor off; a notice is emailed.
#[utoipa::path(
    post,
    path = "/disable_tfa",
    tag = "tfa",
    security(("access_token" = [])),
    request_body = DisableTfaRequest,
    responses(
        (status = 204, description = "Turned off."),
        (status = 400, description = "`tfa.not_enabled`"),
        (status = 403, description = "`auth.wrong_password`, `tfa.invalid_code`, \
            `tfa.code_replayed`, `auth.account_locked`"),
        (status = 409, description = "`concurrency.conflict`"),
        (status = 429, description = "`auth.locked`"),
        (status = 503, description = "`service.busy`, `service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn disable_tfa(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<DisableTfaRequest>,
) -> Result<StatusCode, ApiError> {
    let command = UserCommand::DisableTfa(DisableTfa {
        password: request.password,
        code: request.code,
    });
    let mail = |user: &User, events: &[UserEvent]| {
        let disabled = events
            .iter()
            .any(|event| matches!(event, UserEvent::TfaDisabled { .. }));
        match user.email() {
            Some(to) if disabled => {
                vec![state
                    .mail
                    .tfa_disabled(claims.sub, to.as_str(), context.request_id())]
            }
            _ => Vec::new(),
        }
    };
    manage(&state, &context, &claims, command, &mail, |event| {
        matches!(event, UserEvent::TfaDisabled { .. })
    })
    .await?;
    tracing::info!(target: "security", user_id = %claims.sub, "two-factor authentication disabled");
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
    /// A current TOTP code or an unused backup code.
    #[schema(value_type = String)]
    code: SecretString,
    /// The new device.
    device_type: DeviceType,
}

/// Replaces the device: a QR code for a new authenticator app, or an empty body for email;
/// new backup codes are emailed.
#[utoipa::path(
    put,
    path = "/switch_device",
    tag = "tfa",
    security(("access_token" = [])),
    request_body = SwitchDeviceRequest,
    responses(
        (status = 200, description = "Switched. For a `code_generator` device the body is the \
            QR code (PNG) to scan; for `email` it is empty.", content_type = "image/png"),
        (status = 400, description = "`tfa.not_enabled`"),
        (status = 403, description = "`auth.wrong_password`, `tfa.invalid_code`, \
            `tfa.code_replayed`, `auth.account_locked`"),
        (status = 409, description = "`concurrency.conflict`"),
        (status = 429, description = "`auth.locked`"),
        (status = 503, description = "`service.busy`, `service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn switch_device(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<SwitchDeviceRequest>,
) -> Result<Response, ApiError> {
    let (enrolment, secrets) = new_enrolment(&state, request.device_type);
    let command = UserCommand::SwitchTfaDevice(SwitchTfaDevice {
        password: request.password,
        code: request.code,
        enrolment,
    });
    let mail = |user: &User, events: &[UserEvent]| {
        let changed = events
            .iter()
            .any(|event| matches!(event, UserEvent::TfaDeviceChanged { .. }));
        match user.email() {
            Some(to) if changed => enrolment_mail(
                &state,
                claims.sub,
                to,
                context.request_id(),
                &secrets,
                request.device_type,
            ),
            _ => Vec::new(),
        }
    };
    manage(&state, &context, &claims, command, &mail, |event| {
        matches!(event, UserEvent::TfaDeviceChanged { .. })
    })
    .await?;
    tracing::info!(target: "security", user_id = %claims.sub, device_type = ?request.device_type,
        "two-factor device switched");
    caller_enrolment_response(&state, claims.sub, secrets).await
}

/// The proof needed to replace the backup codes.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"code": "123456"}))]
pub struct RegenerateRequest {
    /// A current TOTP code or an unused backup code.
    #[schema(value_type = String)]
    code: SecretString,
}

/// Replaces the backup codes (the new ones are emailed); the old ones stop working.
#[utoipa::path(
    post,
    path = "/backup_codes",
    tag = "tfa",
    security(("access_token" = [])),
    request_body = RegenerateRequest,
    responses(
        (status = 204, description = "Replaced; the new codes are emailed."),
        (status = 400, description = "`tfa.not_enabled`"),
        (status = 403, description = "`tfa.invalid_code`, `tfa.code_replayed`"),
        (status = 409, description = "`concurrency.conflict`"),
        (status = 429, description = "`auth.locked`"),
        (status = 503, description = "`service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn regenerate_backup_codes(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<RegenerateRequest>,
) -> Result<StatusCode, ApiError> {
    let rng: &dyn twofold_domain::services::Randomness = state.services.rng.as_ref();
    let codes = backup_codes::generate_set(rng, state.backup_codes);
    let clear: Vec<String> = codes
        .iter()
        .map(|code| secrecy::ExposeSecret::expose_secret(code).to_owned())
        .collect();
    let command = UserCommand::RegenerateBackupCodes(RegenerateBackupCodes {
        code: request.code,
        codes,
    });
    let mail = |user: &User, events: &[UserEvent]| {
        let regenerated = events
            .iter()
            .any(|event| matches!(event, UserEvent::BackupCodesRegenerated { .. }));
        match user.email() {
            Some(to) if regenerated => {
                vec![state
                    .mail
                    .backup_codes(claims.sub, to.as_str(), context.request_id(), &clear)]
            }
            _ => Vec::new(),
        }
    };
    manage(&state, &context, &claims, command, &mail, |event| {
        matches!(event, UserEvent::BackupCodesRegenerated { .. })
    })
    .await?;
    tracing::info!(target: "security", user_id = %claims.sub, "backup codes regenerated");
    Ok(StatusCode::NO_CONTENT)
}

/// How many backup codes are left.
#[derive(Serialize, ToSchema)]
struct BackupCodesLeft {
    /// Unused backup codes.
    #[schema(example = 5)]
    remaining: usize,
}

/// How many backup codes the caller has left.
#[utoipa::path(
    get,
    path = "/backup_codes",
    tag = "tfa",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The count.", body = BackupCodesLeft),
        (status = 503, description = "`service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn backup_codes_left(
    State(state): State<AppState>,
    AccessToken(claims): AccessToken,
) -> Result<Json<BackupCodesLeft>, ApiError> {
    let user = state.users.load(claims.sub).await?;
    if user.email().is_none() {
        return Err(ApiError::InvalidToken);
    }
    Ok(Json(BackupCodesLeft {
        remaining: user.backup_codes_remaining(),
    }))
}
