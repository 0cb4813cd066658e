//! The one error type of the API and its mapping to `application/problem+json` (RFC 9457).
//! Every failure a client can see has a status and a stable `code`; internal causes are logged
//! once and never sent.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use twofold_domain::user::Refusal;
use twofold_domain::UserError;

use crate::app::AppError;

/// Everything that can go wrong in a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A domain rule refused the command.
    #[error(transparent)]
    Domain(#[from] UserError),
    /// Wrong password or unknown email: deliberately indistinguishable.
    #[error("incorrect email or password")]
    InvalidCredentials,
    /// No `Authorization: Bearer` header.
    #[error("this endpoint requires a bearer token")]
    MissingToken,
    /// The token is malformed, expired, of the wrong kind, or its user is gone.
    #[error("the token is invalid or has expired")]
    InvalidToken,
    /// The caller is authenticated but not an admin.
    #[error("this endpoint is for admins only")]
    AdminOnly,
    /// A proof was wrong, or a session ended instead of refreshing; recorded as an event.
    #[error("{}", refusal_detail(*.0))]
    Refused(Refusal),
    /// The request itself is malformed (body, form, query, path).
    #[error("{detail}")]
    Request {
        /// 400, 413, 415 or 422.
        status: StatusCode,
        /// The stable code.
        code: &'static str,
        /// What is wrong, for humans.
        detail: String,
    },
    /// No such resource.
    #[error("{0}")]
    NotFound(&'static str),
    /// The command kept losing races with concurrent commands on the same user.
    #[error("the user was changed concurrently; retry")]
    Conflict,
    /// The database cannot be reached.
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Anything else; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A problem details body (RFC 9457), as every error answers with
/// `Content-Type: application/problem+json`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "urn:twofold:problem:auth.invalid_credentials",
    "title": "Unauthorized",
    "status": 401,
    "detail": "incorrect email or password",
    "code": "auth.invalid_credentials"
}))]
pub struct Problem {
    /// `urn:twofold:problem:` followed by the code.
    #[serde(rename = "type")]
    kind: String,
    /// The reason phrase of the status.
    title: &'static str,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong, for humans; clients should read `code` instead.
    detail: String,
    /// The stable machine-readable code (`area.snake_case`).
    code: &'static str,
}

impl ApiError {
    /// Status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Domain(error) => (domain_status(*error), error.code()),
            Self::InvalidCredentials => (StatusCode::UNAUTHORIZED, "auth.invalid_credentials"),
            Self::MissingToken => (StatusCode::UNAUTHORIZED, "auth.missing_token"),
            Self::InvalidToken => (StatusCode::UNAUTHORIZED, "auth.invalid_token"),
            Self::AdminOnly => (StatusCode::FORBIDDEN, "auth.admin_only"),
            Self::Refused(refusal) => refusal_status_and_code(*refusal),
            Self::Request { status, code, .. } => (*status, code),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "request.not_found"),
            Self::Conflict => (StatusCode::CONFLICT, "concurrency.conflict"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "service.unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// A refused authentication or authorisation: a missing or refused token, a non-admin at
    /// an admin endpoint, a wrong or replayed proof, a throttled factor or an admin-locked
    /// account. Each is logged under the `security` target when it is answered.
    fn is_security_refusal(&self) -> bool {
        let (status, _) = self.status_and_code();
        status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
            || matches!(self, Self::Domain(UserError::Locked { .. }))
    }

    /// Too many requests from one client address; retry in `seconds`.
    pub fn rate_limited(seconds: u64) -> Self {
        Self::request(
            StatusCode::TOO_MANY_REQUESTS,
            "request.rate_limited",
            format!("too many requests from this address; retry in {seconds} seconds"),
        )
    }

    /// A login form whose `grant_type` is neither `password` nor empty.
    pub fn unsupported_grant_type() -> Self {
        Self::request(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.unsupported_grant_type",
            "grant_type must be `password` or empty",
        )
    }

    /// The database is out of reach (as the documentation shows it; the cause is never sent).
    pub fn unavailable() -> Self {
        Self::Unavailable("a store is unreachable".into())
    }

    fn request(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self::Request {
            status,
            code,
            detail: detail.into(),
        }
    }
}

fn domain_status(error: UserError) -> StatusCode {
    match error {
        UserError::InvalidEmail
        | UserError::InvalidFullName
        | UserError::PasswordTooShort
        | UserError::PasswordTooLong
        | UserError::PasswordTooCommon
        | UserError::DeviceRequired => StatusCode::UNPROCESSABLE_ENTITY,
        UserError::EmailTaken | UserError::AlreadyRegistered => StatusCode::CONFLICT,
        UserError::UnknownUser | UserError::NoBackupCodesLeft | UserError::UnknownSession => {
            StatusCode::NOT_FOUND
        }
        UserError::TfaAlreadyEnabled
        | UserError::TfaNotEnabled
        | UserError::NoCodeGenerator
        | UserError::ResetTokenInvalid
        | UserError::SecondFactorRequired => StatusCode::BAD_REQUEST,
        UserError::ChallengeClosed | UserError::SessionEnded => StatusCode::UNAUTHORIZED,
        UserError::TfaCodeReplayed | UserError::EmailCodeExpired | UserError::AccountLocked => {
            StatusCode::FORBIDDEN
        }
        UserError::Locked { .. } => StatusCode::TOO_MANY_REQUESTS,
        UserError::HasherSaturated => StatusCode::SERVICE_UNAVAILABLE,
        UserError::HasherFailed | UserError::SecretUnreadable => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Problem {
    /// What went wrong, for humans.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl ApiError {
    /// The body this error answers with. A 5xx says no more than its status.
    pub fn problem(&self) -> Problem {
        let (status, code) = self.status_and_code();
        let detail = match self {
            Self::Unavailable(_) | Self::Internal(_) => status
                .canonical_reason()
                .unwrap_or("internal error")
                .to_owned(),
            other => other.to_string(),
        };
        Problem {
            kind: format!("urn:twofold:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            code,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Unavailable(_) | Self::Internal(_) = &self {
            tracing::error!(error.cause_chain = ?self, code, "request failed");
        }
        if self.is_security_refusal() {
            // The request span adds the method, path and request id; the code names the
            // refusal. Neither the body nor any credential is logged.
            tracing::info!(target: "security", code, status = status.as_u16(), "request refused");
        }
        let problem = self.problem();
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match self {
                Self::InvalidToken
                | Self::Refused(Refusal::RefreshTokenReused | Refusal::SessionExpired)
                | Self::Domain(UserError::ChallengeClosed | UserError::SessionEnded) => {
                    "Bearer error=\"invalid_token\""
                }
                _ => "Bearer",
            };
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::Domain(UserError::Locked { retry_after_secs }) = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Domain(error) => Self::Domain(error),
            AppError::Conflict => Self::Conflict,
            AppError::Unavailable(error) => Self::Unavailable(error),
            AppError::Internal(error) => Self::Internal(error),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

/// The status and code of a refusal.
fn refusal_status_and_code(refusal: Refusal) -> (StatusCode, &'static str) {
    match refusal {
        Refusal::WrongPassword => (StatusCode::FORBIDDEN, "auth.wrong_password"),
        Refusal::WrongCode => (StatusCode::FORBIDDEN, "tfa.invalid_code"),
        Refusal::WrongBackupCode => (StatusCode::FORBIDDEN, "tfa.invalid_backup_code"),
        Refusal::RefreshTokenReused => (StatusCode::UNAUTHORIZED, "auth.refresh_token_reused"),
        Refusal::SessionExpired => (StatusCode::UNAUTHORIZED, UserError::SessionEnded.code()),
    }
}

/// What a refusal says to the client.
fn refusal_detail(refusal: Refusal) -> String {
    match refusal {
        Refusal::WrongPassword => "the current password is not correct".to_owned(),
        Refusal::WrongCode => "the code is not valid".to_owned(),
        Refusal::WrongBackupCode => "the backup code is not valid or was already used".to_owned(),
        Refusal::RefreshTokenReused => {
            "this refresh token was already used; the session is revoked for safety".to_owned()
        }
        Refusal::SessionExpired => UserError::SessionEnded.to_string(),
    }
}

/// What is wrong with a body, in our words: the field at fault when the parser names one,
/// never the parser's own message.
fn serde_detail(body_text: String) -> String {
    let quoted = |text: &str| {
        text.split('`').nth(1).map(|name| {
            name.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
    };
    if let Some(rest) = body_text.split("missing field ").nth(1) {
        if let Some(field) = quoted(rest) {
            return format!("the field `{field}` is missing");
        }
    }
    if let Some(rest) = body_text.split("unknown variant ").nth(1) {
        if let Some(value) = quoted(rest) {
            return format!("`{value}` is not one of the accepted values");
        }
    }
    if body_text.contains("invalid type") || body_text.contains("invalid value") {
        return "a field has a value of the wrong type".to_owned();
    }
    "the request does not have the expected fields".to_owned()
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::request(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request.unsupported_media_type",
                "the body must be JSON with `Content-Type: application/json`",
            ),
            JsonRejection::JsonSyntaxError(error) => Self::request(
                StatusCode::UNPROCESSABLE_ENTITY,
                "request.malformed_json",
                format!(
                    "the body is not valid JSON: {}",
                    serde_detail(error.body_text())
                ),
            ),
            JsonRejection::JsonDataError(error) => Self::request(
                StatusCode::UNPROCESSABLE_ENTITY,
                "request.invalid_body",
                serde_detail(error.body_text()),
            ),
            other => body_rejection(other.status()),
        }
    }
}

impl From<FormRejection> for ApiError {
    fn from(rejection: FormRejection) -> Self {
        match rejection {
            FormRejection::InvalidFormContentType(_) => Self::request(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request.unsupported_media_type",
                "the body must be a form with `Content-Type: application/x-www-form-urlencoded`",
            ),
            FormRejection::FailedToDeserializeForm(error) => Self::request(
                StatusCode::UNPROCESSABLE_ENTITY,
                "request.invalid_form",
                serde_detail(error.body_text()),
            ),
            FormRejection::FailedToDeserializeFormBody(error) => Self::request(
                StatusCode::UNPROCESSABLE_ENTITY,
                "request.invalid_form",
                serde_detail(error.body_text()),
            ),
            other => body_rejection(other.status()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::request(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_query",
            serde_detail(rejection.body_text()),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        match rejection {
            PathRejection::FailedToDeserializePathParams(error) => {
                let detail = match error.kind() {
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::InvalidUtf8InPathParam { key }
                    | ErrorKind::DeserializeError { key, .. } => {
                        format!("the path parameter `{key}` is not valid")
                    }
                    _ => "a path parameter is not valid".to_owned(),
                };
                Self::request(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "request.invalid_path",
                    detail,
                )
            }
            // The route and its handler disagree: our fault, not the client's.
            other => Self::Internal(Box::new(other)),
        }
    }
}

fn body_rejection(status: StatusCode) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::request(status, "request.too_large", "the request body is too large")
    } else {
        ApiError::request(
            StatusCode::BAD_REQUEST,
            "request.unreadable_body",
            "the request body could not be read",
        )
    }
}
