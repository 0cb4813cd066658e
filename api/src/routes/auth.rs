//! `/auth`: sign-up, login, token refresh and the token test.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use secrecy::SecretString;
use serde::Deserialize;
use twofold_domain::user::{LogIn, RefreshSession, SessionEndReason, SignUp};
use twofold_domain::values::{DeviceType, Email, FullName, NewPassword, RefreshTokenId, UserId};
use twofold_domain::{User, UserCommand, UserError, UserEvent};
use twofold_projections::UserView;

use super::dto::TokenResponse;
use super::{email_code, enrolment_response, new_enrolment, unknown_user_is_invalid_token};
use crate::error::ApiError;
use crate::extract::{AccessToken, Form, Json, RequestContext};
use crate::gateway::no_mail;
use crate::jwt::TokenKind;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signup", post(sign_up))
        .route("/login", post(log_in))
        .route("/test-token", get(test_token))
        .route("/refresh", post(refresh))
        .merge(super::sessions::router())
        .merge(super::password::router())
}

#[derive(Deserialize)]
pub struct SignUpRequest {
    email: String,
    full_name: String,
    password: SecretString,
    #[serde(default)]
    tfa_enabled: bool,
    #[serde(default)]
    device: Option<DeviceRequest>,
}

/// The device part of sign-up and enable-2FA requests.
#[derive(Deserialize)]
pub struct DeviceRequest {
    pub device_type: DeviceType,
}

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
    state
        .users
        .execute(
            user_id,
            command,
            context.metadata("anonymous".to_owned()),
            &mail,
        )
        .await?;
    tracing::info!(target: "security", %user_id, "signed up");
    match secrets {
        Some(secrets) => enrolment_response(&state, user_id, &email, secrets).await,
        None => Ok(StatusCode::OK.into_response()),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: SecretString,
    #[serde(default)]
    grant_type: Option<String>,
}

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
        // Same work and same answer as a wrong password: no account enumeration by timing.
        state
            .hasher
            .verify_dummy(&form.password)
            .await
            .map_err(UserError::from)?;
        tracing::info!(target: "security", "login failed: unknown account");
        state.metrics.login("password", "unknown_account");
        return Err(ApiError::InvalidCredentials);
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

#[derive(Deserialize)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// Rotates the session's refresh token; a rotated one presented again revokes the session.
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
