//! `/auth`: sign-up, login, token refresh and the token test.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::Deserialize;
use twofold_domain::user::{LogIn, RefreshSession, SessionEndReason, SignUp};
use twofold_domain::values::{DeviceType, Email, FullName, NewPassword, RefreshTokenId, UserId};
use twofold_domain::{User, UserCommand, UserError, UserEvent};
use twofold_projections::UserView;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::TokenResponse;
use super::{email_code, enrolment_response, new_enrolment, unknown_user_is_invalid_token};
use crate::app::gateway::no_mail;
use crate::config::ExistingEmail;
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, Form, Json, RequestContext};
use crate::http::jwt::TokenKind;
use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(log_in))
        .routes(routes!(test_token))
        .routes(routes!(refresh))
        .merge(super::sessions::router())
        .merge(super::password::router())
}

/// A new account, optionally with a second factor.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({
    "email": "ada@example.com",
    "full_name": "Ada Lovelace",
    "password": "correct horse battery",
    "tfa_enabled": true,
    "device": {"device_type": "code_generator"}
}))]
pub struct SignUpRequest {
    /// The email address, unique in any letter case.
    #[schema(format = Email)]
    email: String,
    /// The display name: 1 to 200 characters without control characters.
    full_name: String,
    /// 8 to 128 characters, not a common password.
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 128)]
    password: SecretString,
    /// Whether logins need a second factor (default `false`).
    #[serde(default)]
    tfa_enabled: bool,
    /// The second-factor device: required when `tfa_enabled` is true, ignored otherwise.
    #[serde(default)]
    device: Option<DeviceRequest>,
}

/// The device part of sign-up and enable-2FA requests.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"device_type": "code_generator"}))]
pub struct DeviceRequest {
    /// `code_generator` for an authenticator app (answered with a QR code), or `email`.
    pub device_type: DeviceType,
}

/// Creates an account. With a second factor, the backup codes are emailed and a
/// `code_generator` device is answered with the QR code to scan. A taken address answers 409
/// by default; when the service conceals existing accounts
/// (`TWOFOLD_SIGNUP_EXISTING_EMAIL=conceal`) it gets a new account's answer instead and its
/// owner an email.
#[utoipa::path(
    post,
    path = "/signup",
    tag = "auth",
    request_body = SignUpRequest,
    responses(
        (status = 200, description = "Signed up. With a `code_generator` device the body is the \
            QR code (PNG) of the `otpauth://totp/` URI to scan; otherwise it is empty.",
            content_type = "image/png"),
        (status = 409, description = "`user.email_taken`, `concurrency.conflict`"),
        (status = 422, description = "`user.invalid_email`, `user.invalid_full_name`, \
            `user.password_too_short`, `user.password_too_long`, `user.password_too_common`, \
            `tfa.device_required`"),
        (status = 429, description = "`request.rate_limited`"),
        (status = 503, description = "`service.busy`, `service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn sign_up(
    State(state): State<AppState>,
    context: RequestContext,
    Json(request): Json<SignUpRequest>,
) -> Result<Response, ApiError> {
    let email = Email::parse(&request.email)?;
    let full_name = FullName::parse(&request.full_name)?;
    let password = NewPassword::parse(request.password)?;
    let device_type = match (request.tfa_enabled, request.device) {
        (false, _) => None,
        (true, Some(device)) => Some(device.device_type),
        (true, None) => return Err(UserError::DeviceRequired.into()),
    };
    let user_id = UserId::from_uuid(state.services.rng.uuid());
    let (tfa, secrets) = match device_type {
        Some(device_type) => {
            let (command, secrets) = new_enrolment(&state, device_type);
            (Some(command), Some(secrets))
        }
        None => (None, None),
    };
    let command = UserCommand::SignUp(SignUp {
        user_id,
        email: email.clone(),
        full_name,
        password,
        tfa,
    });
    let codes = secrets.as_ref().map(|secrets| secrets.codes.clone());
    let mail = |_: &User, _: &[UserEvent]| match &codes {
        Some(codes) => {
            vec![state
                .mail
                .backup_codes(user_id, email.as_str(), context.request_id(), codes)]
        }
        None => Vec::new(),
    };
    let signed_up = state
        .users
        .execute(
            user_id,
            command,
            context.metadata("anonymous".to_owned()),
            &mail,
        )
        .await;
    match signed_up {
        Ok(_) => {
            tracing::info!(target: "security", %user_id, "signed up");
            if secrets.is_some() {
                tracing::info!(target: "security", %user_id, "two-factor authentication enabled");
            }
        }
        Err(ApiError::Domain(UserError::EmailTaken))
            if state.signup_existing_email == ExistingEmail::Conceal =>
        {
            tell_owner_of_sign_up_attempt(&state, &email, &context).await?;
        }
        Err(error) => return Err(error),
    }
    // Concealed or not, the answer is a new account's: the QR code of a seed that, for a
    // taken address, was never stored.
    match secrets {
        Some(secrets) => enrolment_response(&state, &email, secrets).await,
        None => Ok(StatusCode::OK.into_response()),
    }
}

/// A sign-up with a taken address, when sign-up conceals existing accounts: the owner is
/// told by email (at most once per `SIGN_UP_NOTICE_INTERVAL`), and nothing else changes.
async fn tell_owner_of_sign_up_attempt(
    state: &AppState,
    email: &Email,
    context: &RequestContext,
) -> Result<(), ApiError> {
    let Some(owner) = state.users.find_by_email(email).await? else {
        // Addresses are never released, so this cannot happen; the answer stays the same.
        return Ok(());
    };
    let mail = |user: &User, events: &[UserEvent]| match user.email() {
        Some(to) if !events.is_empty() => {
            vec![state
                .mail
                .sign_up_attempted(owner, to.as_str(), context.request_id())]
        }
        _ => Vec::new(),
    };
    state
        .users
        .execute(
            owner,
            UserCommand::NoteSignUpAttempt,
            context.metadata("anonymous".to_owned()),
            &mail,
        )
        .await?;
    tracing::info!(target: "security", user_id = %owner, "sign-up with a taken address concealed");
    Ok(())
}

/// The OAuth2 password form. `scope`, `client_id` and `client_secret` are accepted and
/// ignored, as in the original.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"username": "ada@example.com", "password": "correct horse battery"}))]
pub struct LoginForm {
    /// The email address.
    username: String,
    /// The password.
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// Empty or `password`.
    #[serde(default)]
    grant_type: Option<String>,
}

/// Checks the password. Without a second factor the answer is a token pair; with one it is
/// a pre-2FA token for `/tfa/login_tfa` or `/tfa/recover_tfa` (and an email device gets its
/// code by email). An unknown email and a wrong password answer alike.
#[utoipa::path(
    post,
    path = "/login",
    tag = "auth",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Logged in: an access and a refresh token.",
            body = TokenResponse, example = json!({
                "access_token": "eyJhbGciOiJFZERTQSIs…",
                "refresh_token": "eyJhbGciOiJFZERTQSIs…",
                "token_type": "bearer"
            })),
        (status = 202, description = "The password is right and a second factor is required: \
            `access_token` is a pre-2FA token and `refresh_token` is null.",
            body = TokenResponse, example = json!({
                "access_token": "eyJhbGciOiJFZERTQSIs…",
                "refresh_token": null,
                "token_type": "bearer"
            })),
        (status = 401, description = "`auth.invalid_credentials`"),
        (status = 403, description = "`auth.account_locked`"),
        (status = 409, description = "`concurrency.conflict`"),
        (status = 422, description = "`request.unsupported_grant_type`"),
        (status = 429, description = "`auth.locked`, `request.rate_limited`"),
        (status = 503, description = "`service.busy`, `service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn log_in(
    State(state): State<AppState>,
    context: RequestContext,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    if let Some(grant_type) = form.grant_type.as_deref() {
        if !grant_type.is_empty() && grant_type != "password" {
            return Err(ApiError::Request {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "request.unsupported_grant_type",
                detail: "grant_type must be `password` or empty".to_owned(),
            });
        }
    }
    let user_id = match Email::parse(&form.username) {
        Ok(email) => state.users.find_by_email(&email).await?,
        Err(_) => None,
    };
    let Some(user_id) = user_id else {
        return refuse_unknown_account(&state, &form).await;
    };
    let code = email_code(&state);
    let command = UserCommand::LogIn(LogIn {
        password: form.password,
        email_code: code.clone(),
    });
    let mail = |user: &User, events: &[UserEvent]| {
        let code_issued = events
            .iter()
            .any(|event| matches!(event, UserEvent::EmailCodeIssued { .. }));
        match user.email() {
            Some(to) if code_issued => {
                vec![state
                    .mail
                    .login_code(user_id, to.as_str(), context.request_id(), &code)]
            }
            _ => Vec::new(),
        }
    };
    let events = match state
        .users
        .execute(
            user_id,
            command,
            context.metadata("anonymous".to_owned()),
            &mail,
        )
        .await
    {
        Ok(events) => events,
        Err(error) => {
            let code = error.status_and_code().1;
            tracing::info!(target: "security", %user_id, code, "login refused");
            state.metrics.login("password", code);
            return Err(error);
        }
    };
    for event in &events {
        match event {
            UserEvent::LoggedIn { .. } => {
                tracing::info!(target: "security", %user_id, "login succeeded");
                state.metrics.login("password", "ok");
                let tokens = TokenResponse::for_session(&state, user_id, &events)?;
                return Ok(Json(tokens).into_response());
            }
            UserEvent::SecondFactorRequired { challenge_id, .. } => {
                tracing::info!(target: "security", %user_id, "password accepted; second factor required");
                state.metrics.login("password", "second_factor_required");
                let body = TokenResponse::pre_tfa(&state, user_id, *challenge_id)?;
                return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
            }
            _ => {}
        }
    }
    tracing::info!(target: "security", %user_id, "login failed: wrong password");
    state.metrics.login("password", "wrong_password");
    Err(ApiError::InvalidCredentials)
}

/// The calling user. Never a secret.
/// A login to an address with no account: the same work, throttle and answer as a wrong
/// password, so neither the answer, its timing nor a lockout tells whether the account exists.
async fn refuse_unknown_account(state: &AppState, form: &LoginForm) -> Result<Response, ApiError> {
    let address = form.username.trim().to_lowercase();
    let key = state.services.sealer.digest(address.as_bytes()).digest;
    let now = state.services.clock.now();
    state.unknown_accounts.check(&key, now).await?;
    state
        .hasher
        .verify_dummy(&form.password)
        .await
        .map_err(UserError::from)?;
    if let Some(until) = state.unknown_accounts.record_failure(&key, now).await? {
        tracing::info!(target: "security", %until, "logins to an address with no account locked");
    }
    tracing::info!(target: "security", "login failed: unknown account");
    state.metrics.login("password", "unknown_account");
    Err(ApiError::InvalidCredentials)
}

#[utoipa::path(
    get,
    path = "/test-token",
    tag = "auth",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The calling user.", body = UserView),
        (status = 503, description = "`service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn test_token(
    State(state): State<AppState>,
    AccessToken(claims): AccessToken,
) -> Result<Json<UserView>, ApiError> {
    state
        .directory
        .find(claims.sub)
        .await?
        .map(Json)
        .ok_or(ApiError::InvalidToken)
}

/// A refresh token to exchange.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"refresh_token": "eyJhbGciOiJFZERTQSIs…"}))]
pub struct RefreshRequest {
    /// The `refresh_token` of a login or of the last refresh.
    refresh_token: String,
}

/// Rotates the session's refresh token; a rotated one presented again revokes the session.
#[utoipa::path(
    post,
    path = "/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new access and refresh token; the old refresh token is \
            spent.", body = TokenResponse),
        (status = 401, description = "`auth.invalid_token`, `auth.refresh_token_reused`, \
            `auth.session_ended`"),
        (status = 403, description = "`auth.account_locked`"),
        (status = 409, description = "`concurrency.conflict`"),
        (status = 429, description = "`request.rate_limited`"),
        (status = 503, description = "`service.unavailable`"),
    )
)]
#[tracing::instrument(skip_all)]
async fn refresh(
    State(state): State<AppState>,
    context: RequestContext,
    Json(request): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let claims = state
        .tokens
        .verify(&request.refresh_token, TokenKind::Refresh)?;
    let session_id = claims.sid.ok_or(ApiError::InvalidToken)?;
    let command = UserCommand::RefreshSession(RefreshSession {
        session_id,
        refresh_id: RefreshTokenId::from_uuid(claims.jti),
        reuse_grace: state.refresh_reuse_grace,
    });
    let actor = format!("user:{}", claims.sub);
    let events = state
        .users
        .execute(claims.sub, command, context.metadata(actor), &no_mail)
        .await
        .map_err(unknown_user_is_invalid_token)?;
    for event in &events {
        if let UserEvent::SessionEnded { reason, .. } = event {
            return Err(match reason {
                SessionEndReason::RefreshTokenReused => {
                    tracing::warn!(target: "security", user_id = %claims.sub, %session_id,
                        "rotated refresh token presented again: session revoked");
                    ApiError::RefreshTokenReused
                }
                _ => ApiError::Domain(UserError::SessionEnded),
            });
        }
    }
    Ok(Json(TokenResponse::for_session(
        &state, claims.sub, &events,
    )?))
}
