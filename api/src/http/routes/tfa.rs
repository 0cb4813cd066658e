//! `/tfa`: the second login step, backup codes, and enrolling a device.

use axum::extract::State;
use axum::response::Response;
use secrecy::SecretString;
use serde::Deserialize;
use twofold_domain::user::{DeviceSecret, EnableTfa, UseBackupCode, VerifyTfaCode};
use twofold_domain::{totp, User, UserCommand, UserError, UserEvent};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::DeviceRequest;
use super::dto::TokenResponse;
use super::{
    caller_enrolment_response, enrolment_mail, new_enrolment, png, unknown_user_is_invalid_token,
};
use crate::app::gateway::no_mail;
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, Json, PreTfaToken, Query, RequestContext};
use crate::http::jwt::Claims;
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

fn actor(claims: &Claims) -> String {
    format!("user:{}", claims.sub)
}

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
        (status = 400, description = "`tfa.not_enabled`"),
        (status = 401, description = "`tfa.challenge_closed`"),
        (status = 403, description = "`tfa.invalid_code`, `tfa.code_replayed`, \
            `tfa.email_code_expired`, `auth.account_locked`"),
        (status = 409, description = "`concurrency.conflict`"),
        (status = 429, description = "`auth.locked`, `request.rate_limited`"),
        (status = 503, description = "`service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn login_tfa(
    State(state): State<AppState>,
    context: RequestContext,
    PreTfaToken(claims): PreTfaToken,
    Query(query): Query<LoginTfaQuery>,
) -> Result<Json<TokenResponse>, ApiError> {
    let challenge_id = claims.cid.ok_or(ApiError::InvalidToken)?;
    let command = UserCommand::VerifyTfaCode(VerifyTfaCode {
        challenge_id,
        code: query.tfa_token,
    });
    let events = match state
        .users
        .execute(
            claims.sub,
            command,
            context.metadata(actor(&claims)),
            &no_mail,
        )
        .await
        .map_err(unknown_user_is_invalid_token)
    {
        Ok(events) => events,
        Err(error) => {
            let code = error.status_and_code().1;
            tracing::info!(target: "security", user_id = %claims.sub, code, "second factor refused");
            state.metrics.login("second_factor", code);
            return Err(error);
        }
    };
    if events
        .iter()
        .any(|event| matches!(event, UserEvent::TfaVerified { .. }))
    {
        tracing::info!(target: "security", user_id = %claims.sub, "second factor accepted");
        state.metrics.login("second_factor", "ok");
        return Ok(Json(TokenResponse::for_session(
            &state, claims.sub, &events,
        )?));
    }
    tracing::info!(target: "security", user_id = %claims.sub, "second factor refused: wrong code");
    state.metrics.login("second_factor", "wrong_code");
    Err(ApiError::WrongTfaCode)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecoverTfaQuery {
    /// One of the emailed backup codes; it works once.
    #[param(value_type = String, example = "7G3K-Q9WX-2M4T-HV8P-RC6N-JD1Z")]
    tfa_backup_token: SecretString,
}

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
        (status = 400, description = "`tfa.not_enabled`"),
        (status = 401, description = "`tfa.challenge_closed`"),
        (status = 403, description = "`tfa.invalid_backup_code`, `auth.account_locked`"),
        (status = 404, description = "`tfa.no_backup_codes_left`"),
        (status = 409, description = "`concurrency.conflict`"),
        (status = 429, description = "`auth.locked`, `request.rate_limited`"),
        (status = 503, description = "`service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn recover_tfa(
    State(state): State<AppState>,
    context: RequestContext,
    PreTfaToken(claims): PreTfaToken,
    Query(query): Query<RecoverTfaQuery>,
) -> Result<Json<TokenResponse>, ApiError> {
    let challenge_id = claims.cid.ok_or(ApiError::InvalidToken)?;
    let command = UserCommand::UseBackupCode(UseBackupCode {
        challenge_id,
        code: query.tfa_backup_token,
    });
    let mail = |user: &User, events: &[UserEvent]| {
        let remaining = events.iter().find_map(|event| match event {
            UserEvent::BackupCodeConsumed { remaining, .. } => Some(*remaining),
            _ => None,
        });
        match (user.email(), remaining) {
            (Some(to), Some(remaining)) => vec![state.mail.backup_code_used(
                claims.sub,
                to.as_str(),
                context.request_id(),
                remaining,
            )],
            _ => Vec::new(),
        }
    };
    let events = match state
        .users
        .execute(claims.sub, command, context.metadata(actor(&claims)), &mail)
        .await
        .map_err(unknown_user_is_invalid_token)
    {
        Ok(events) => events,
        Err(error) => {
            let code = error.status_and_code().1;
            tracing::info!(target: "security", user_id = %claims.sub, code, "backup code refused");
            state.metrics.login("backup_code", code);
            return Err(error);
        }
    };
    for event in &events {
        if let UserEvent::BackupCodeConsumed { remaining, .. } = event {
            tracing::info!(target: "security", user_id = %claims.sub, remaining, "backup code used");
            state.metrics.login("backup_code", "ok");
            return Ok(Json(TokenResponse::for_session(
                &state, claims.sub, &events,
            )?));
        }
    }
    tracing::info!(target: "security", user_id = %claims.sub, "backup code refused: wrong or used code");
    state.metrics.login("backup_code", "wrong_code");
    Err(ApiError::WrongBackupCode)
}

/// The QR code of the caller's authenticator app, again.
#[utoipa::path(
    get,
    path = "/get_my_qrcode",
    tag = "tfa",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The QR code (PNG) of the `otpauth://totp/` URI.",
            content_type = "image/png"),
        (status = 400, description = "`tfa.no_code_generator`"),
        (status = 503, description = "`service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn get_my_qrcode(
    State(state): State<AppState>,
    AccessToken(claims): AccessToken,
) -> Result<Response, ApiError> {
    let user = state.users.load(claims.sub).await?;
    let email = user.email().ok_or(ApiError::InvalidToken)?;
    let Some(DeviceSecret::CodeGenerator { seed }) = user.tfa_device().map(|device| &device.secret)
    else {
        return Err(UserError::NoCodeGenerator.into());
    };
    let seed = state
        .services
        .sealer
        .open(seed)
        .map_err(|_| UserError::SecretUnreadable)?;
    let uri = totp::otpauth_uri(&state.totp_issuer, email, &seed);
    Ok(png(crate::http::qr::png(uri).await?))
}

/// Turns on the second factor; the backup codes and a notice are emailed.
#[utoipa::path(
    put,
    path = "/enable_tfa",
    tag = "tfa",
    security(("access_token" = [])),
    request_body = DeviceRequest,
    responses(
        (status = 200, description = "Enabled. For a `code_generator` device the body is the QR \
            code (PNG) to scan; for `email` it is empty.", content_type = "image/png"),
        (status = 400, description = "`tfa.already_enabled`"),
        (status = 409, description = "`concurrency.conflict`"),
        (status = 503, description = "`service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn enable_tfa(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<DeviceRequest>,
) -> Result<Response, ApiError> {
    let (enrolment, secrets) = new_enrolment(&state, request.device_type);
    let command = UserCommand::EnableTfa(EnableTfa { enrolment });
    let mail = |user: &User, _: &[UserEvent]| match user.email() {
        Some(to) => enrolment_mail(
            &state,
            claims.sub,
            to,
            context.request_id(),
            &secrets,
            request.device_type,
        ),
        None => Vec::new(),
    };
    state
        .users
        .execute(claims.sub, command, context.metadata(actor(&claims)), &mail)
        .await
        .map_err(unknown_user_is_invalid_token)?;
    tracing::info!(target: "security", user_id = %claims.sub, "two-factor authentication enabled");
    caller_enrolment_response(&state, claims.sub, secrets).await
}
