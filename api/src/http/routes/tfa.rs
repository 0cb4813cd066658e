//! `/tfa`: the second login step, backup codes, enrolling a device, the authenticator app's
//! QR code again (after a re-authentication) and confirmation codes for email devices.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::SecretString;
use serde::Deserialize;
use twofold_domain::user::{LoginOutcome, Refusal};
use twofold_domain::{Actor, UserError};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::DeviceRequest;
use super::dto::{ReauthenticationRequest, TokenResponse};
use super::{as_caller, enrolment_response, png};
use crate::app::{AuthenticatorCode, Proofs};
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, Json, PreTfaToken, Query, RequestContext};
use crate::http::jwt::{Access, Claims};
use crate::http::openapi::problems;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login_tfa))
        .routes(routes!(recover_tfa))
        .routes(routes!(get_my_qrcode, get_my_qrcode_with_proofs))
        .routes(routes!(email_code))
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
pub(super) fn second_step_answer(
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
        UserError::ReauthenticationRequired,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// The QR code of the caller's authenticator app, again. It holds the TOTP seed, so it is
/// answered only within the re-authentication window after a full sign-in
/// (`TWOFOLD_REAUTH_WINDOW`, 5 minutes by default; a refresh does not renew it); after it,
/// use `POST /api/v1/tfa/get_my_qrcode` with the proofs.
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
    context: RequestContext,
    AccessToken(claims): AccessToken,
) -> Result<Response, ApiError> {
    qr_code_answer(&state, &context, &claims, None).await
}

problems!(
    /// What `get_my_qrcode_with_proofs` can answer besides what its inputs and token imply.
    GetMyQrcodeWithProofsProblems:
        proofs,
        UserError::NoCodeGenerator,
        UserError::SecondFactorRequired,
);

/// The QR code of the caller's authenticator app, again, at any time: with the password and
/// a current second factor (a TOTP code or an unused backup code, which is spent). Wrong
/// proofs are recorded and throttled as for the other sensitive changes.
#[utoipa::path(
    post,
    path = "/get_my_qrcode",
    tag = "tfa",
    security(("access_token" = [])),
    request_body = ReauthenticationRequest,
    responses(
        (status = 200, description = "The QR code (PNG) of the `otpauth://totp/` URI.",
            content_type = "image/png"),
        GetMyQrcodeWithProofsProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn get_my_qrcode_with_proofs(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<ReauthenticationRequest>,
) -> Result<Response, ApiError> {
    qr_code_answer(&state, &context, &claims, Some(request.into())).await
}

/// The QR code, once the caller re-authenticated with `proofs` or a recent sign-in.
async fn qr_code_answer(
    state: &AppState,
    context: &RequestContext,
    claims: &Claims<Access>,
    proofs: Option<Proofs>,
) -> Result<Response, ApiError> {
    let shown = state
        .app
        .authenticator_code(
            claims.sub,
            claims.session_id(),
            proofs,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    match shown {
        AuthenticatorCode::Shown(code) => {
            Ok(png(crate::http::qr::png(code.uri().to_owned()).await?))
        }
        AuthenticatorCode::Refused(refusal) => Err(ApiError::Refused(refusal)),
    }
}

problems!(
    /// What `email_code` can answer besides what its inputs and token imply.
    EmailCodeProblems:
        UserError::TfaNotEnabled,
        UserError::NoEmailDevice,
        UserError::AccountLocked,
        UserError::ConfirmationCodeTooSoon { retry_after_secs: 60 },
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// Emails a confirmation code to a user whose second factor is email. It proves the second
/// factor once, within 10 minutes, as the `code` of `disable_tfa`, `switch_device`,
/// `backup_codes`, `POST get_my_qrcode` and the ending of sessions, never of a login. One
/// code a minute; a new code replaces the pending one.
#[utoipa::path(
    post,
    path = "/email_code",
    tag = "tfa",
    security(("access_token" = [])),
    responses(
        (status = 202, description = "A code is on its way to the user's address."),
        EmailCodeProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn email_code(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
) -> Result<StatusCode, ApiError> {
    state
        .app
        .send_confirmation_code(claims.sub, &context.metadata(Actor::User(claims.sub)))
        .await
        .map_err(as_caller)?;
    Ok(StatusCode::ACCEPTED)
}

problems!(
    /// What `enable_tfa` can answer besides what its inputs and token imply.
    EnableTfaProblems:
        UserError::TfaAlreadyEnabled,
        UserError::PasskeySignInRequired,
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
            claims.session_id(),
            request.device_type,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    enrolment_response(code).await
}
