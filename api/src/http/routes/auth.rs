//! `/auth`: sign-up, login, token refresh and the token test.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::Deserialize;
use twofold_domain::user::{LoginOutcome, RefreshOutcome, Refusal};
use twofold_domain::values::{
    DeviceType, Email, FullName, NewPassword, MAX_FULL_NAME_CHARS, MIN_FULL_NAME_CHARS,
};
use twofold_domain::{Actor, UserError};
use twofold_projections::UserView;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::TokenResponse;
use super::{as_caller, enrolment_response};
use crate::app::NewAccount;
use crate::http::error::ApiError;
use crate::http::extract::{Form, Json, LiveUser, RequestContext};
use crate::http::jwt::Refresh;
use crate::http::openapi::problems;
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
    /// The display name (see [`full_name_schema`]).
    #[schema(schema_with = full_name_schema)]
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

/// No control character anywhere, and at least one character that is not white space.
const FULL_NAME_PATTERN: &str =
    r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

/// `full_name` as [`FullName::parse`] takes it: its length limits, and a pattern for the
/// characters. The service trims white space at either end before counting.
fn full_name_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "The display name: {MIN_FULL_NAME_CHARS} to {MAX_FULL_NAME_CHARS} characters once \
             white space at either end is trimmed, no control characters."
        )))
        .min_length(Some(MIN_FULL_NAME_CHARS))
        .max_length(Some(MAX_FULL_NAME_CHARS))
        .pattern(Some(FULL_NAME_PATTERN))
        .build()
}

/// The device part of sign-up and enable-2FA requests.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"device_type": "code_generator"}))]
pub struct DeviceRequest {
    /// `code_generator` for an authenticator app (answered with a QR code), or `email`.
    pub device_type: DeviceType,
}

problems!(
    /// What `sign_up` can answer besides what its inputs and token imply.
    SignUpProblems:
        UserError::EmailTaken,
        ApiError::Conflict,
        UserError::InvalidEmail,
        UserError::InvalidFullName,
        UserError::PasswordTooShort,
        UserError::PasswordTooLong,
        UserError::PasswordTooCommon,
        UserError::PasswordTooWeak,
        UserError::DeviceRequired,
        ApiError::rate_limited(60),
        UserError::HasherSaturated,
        ApiError::unavailable(),
);

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
        (status = 200, description = "Signed up. The body is empty, except with a second \
            factor on a `code_generator` device: then it is the QR code (`image/png`) of the \
            `otpauth://totp/` URI to scan."),
        SignUpProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn sign_up(
    State(state): State<AppState>,
    context: RequestContext,
    Json(request): Json<SignUpRequest>,
) -> Result<Response, ApiError> {
    let device = match (request.tfa_enabled, request.device) {
        (false, _) => None,
        (true, Some(device)) => Some(device.device_type),
        (true, None) => return Err(UserError::DeviceRequired.into()),
    };
    let account = NewAccount {
        email: Email::parse(&request.email)?,
        full_name: FullName::parse(&request.full_name)?,
        password: NewPassword::parse(request.password)?,
        device,
    };
    let code = state
        .app
        .sign_up(account, &context.metadata(Actor::Anonymous))
        .await?;
    enrolment_response(code).await
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
    /// Empty or `password` (see [`grant_type_schema`]).
    #[serde(default)]
    #[schema(schema_with = grant_type_schema)]
    grant_type: Option<String>,
}

/// The grant types the login takes, as OAuth2's password grant names them; any other
/// answers 422 `request.unsupported_grant_type`.
const GRANT_TYPES: [&str; 2] = ["password", ""];

fn grant_type_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("`password`, or empty; absent is as empty."))
        .enum_values(Some(GRANT_TYPES))
        .build()
}

problems!(
    /// What `log_in` can answer besides what its inputs and token imply.
    LogInProblems:
        ApiError::InvalidCredentials,
        UserError::AccountLocked,
        ApiError::Conflict,
        ApiError::unsupported_grant_type(),
        UserError::Locked { retry_after_secs: 60 },
        ApiError::rate_limited(60),
        UserError::HasherSaturated,
        ApiError::unavailable(),
);

/// Checks the password. Without a second factor the answer is a token pair; with one it is
/// a pre-2FA token for `/tfa/login_tfa` or `/tfa/recover_tfa` (and an email device gets its
/// code by email). An unknown email and a wrong password answer alike.
#[utoipa::path(
    post,
    path = "/login",
    tag = "auth",
    request_body(description = "The OAuth2 password form, urlencoded (as `curl -d` sends it) \
        or multipart (as a browser's `FormData` sends it).",
        content(
            (LoginForm = "application/x-www-form-urlencoded"),
            (LoginForm = "multipart/form-data"),
        )
    ),
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
        LogInProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn log_in(
    State(state): State<AppState>,
    context: RequestContext,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    if let Some(grant_type) = form.grant_type.as_deref() {
        if !GRANT_TYPES.contains(&grant_type) {
            return Err(ApiError::unsupported_grant_type());
        }
    }
    let outcome = state
        .app
        .log_in(
            &form.username,
            form.password,
            &context.metadata(Actor::Anonymous),
        )
        .await?;
    match outcome {
        LoginOutcome::LoggedIn(grant) => {
            Ok(Json(TokenResponse::for_session(&state, grant)?).into_response())
        }
        LoginOutcome::SecondFactorRequired {
            user_id,
            challenge_id,
        } => {
            let body = TokenResponse::pre_tfa(&state, user_id, challenge_id)?;
            Ok((StatusCode::ACCEPTED, Json(body)).into_response())
        }
        // A wrong password and an unknown address answer alike.
        LoginOutcome::Refused(_) => Err(ApiError::InvalidCredentials),
    }
}

problems!(
    /// What `test_token` can answer besides what its inputs and token imply.
    TestTokenProblems:
        ApiError::unavailable(),
);

/// The calling user. Never a secret.
#[utoipa::path(
    get,
    path = "/test-token",
    tag = "auth",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The calling user.", body = UserView),
        TestTokenProblems,
    )
)]
async fn test_token(LiveUser(caller): LiveUser) -> Response {
    // Serialized from the cached view itself, not a copy of it.
    Json(&caller.view).into_response()
}

/// A refresh token to exchange.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"refresh_token": "eyJhbGciOiJFZERTQSIs…"}))]
pub struct RefreshRequest {
    /// The `refresh_token` of a login or of the last refresh.
    refresh_token: String,
}

problems!(
    /// What `refresh` can answer besides what its inputs and token imply.
    RefreshProblems:
        ApiError::InvalidToken,
        Refusal::RefreshTokenReused,
        UserError::SessionEnded,
        UserError::AccountLocked,
        ApiError::Conflict,
        ApiError::rate_limited(60),
        ApiError::unavailable(),
);

/// Rotates the session's refresh token; a rotated one presented again revokes the session.
#[utoipa::path(
    post,
    path = "/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new access and refresh token; the old refresh token is \
            spent.", body = TokenResponse),
        RefreshProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn refresh(
    State(state): State<AppState>,
    context: RequestContext,
    Json(request): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let claims = state.tokens.verify::<Refresh>(&request.refresh_token)?;
    let outcome = state
        .app
        .refresh(
            claims.sub,
            claims.session_id(),
            claims.refresh_id(),
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    match outcome {
        RefreshOutcome::Refreshed(grant) => Ok(Json(TokenResponse::for_session(&state, grant)?)),
        RefreshOutcome::Refused(refusal) => Err(ApiError::Refused(refusal)),
    }
}
