//! The one error type of the API and its mapping to `application/problem+json` (RFC 9457).
//! Every failure a client can see has a status and a stable `code`; internal causes are logged
//! once and never sent.

use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::path::ErrorKind;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use twofold_domain::user::Refusal;
use twofold_domain::UserError;

use crate::app::passkeys::PasskeyFailure;
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
    /// A WebAuthn ceremony could not go on.
    #[error(transparent)]
    Passkey(#[from] PasskeyFailure),
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
            Self::Passkey(failure) => (passkey_status(*failure), failure.code()),
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

fn passkey_status(failure: PasskeyFailure) -> StatusCode {
    match failure {
        PasskeyFailure::CeremonyClosed | PasskeyFailure::NoPasskey => StatusCode::NOT_FOUND,
        PasskeyFailure::RegistrationRefused | PasskeyFailure::WrongOrigin => StatusCode::FORBIDDEN,
    }
}

fn domain_status(error: UserError) -> StatusCode {
    match error {
        UserError::InvalidEmail
        | UserError::InvalidFullName
        | UserError::PasswordTooShort
        | UserError::PasswordTooLong
        | UserError::PasswordTooCommon
        | UserError::PasswordTooWeak
        | UserError::InvalidPasskeyName => StatusCode::UNPROCESSABLE_ENTITY,
        // The original's validator answered 400 to 2FA without a device.
        UserError::DeviceRequired => StatusCode::BAD_REQUEST,
        UserError::EmailTaken
        | UserError::AlreadyRegistered
        | UserError::PasskeyNameTaken
        | UserError::PasskeyLimitReached
        | UserError::PasskeyAlreadyRegistered => StatusCode::CONFLICT,
        UserError::UnknownUser
        | UserError::NoBackupCodesLeft
        | UserError::UnknownSession
        | UserError::UnknownPasskey => StatusCode::NOT_FOUND,
        UserError::TfaAlreadyEnabled
        | UserError::TfaNotEnabled
        | UserError::NoCodeGenerator
        | UserError::NoEmailDevice
        | UserError::ResetTokenInvalid
        | UserError::SecondFactorRequired => StatusCode::BAD_REQUEST,
        UserError::ChallengeClosed | UserError::SessionEnded => StatusCode::UNAUTHORIZED,
        UserError::TfaCodeReplayed
        | UserError::EmailCodeExpired
        | UserError::AccountLocked
        | UserError::ReauthenticationRequired
        | UserError::PasskeySignInRequired => StatusCode::FORBIDDEN,
        UserError::Locked { .. } | UserError::ConfirmationCodeTooSoon { .. } => {
            StatusCode::TOO_MANY_REQUESTS
        }
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
        if let Self::Domain(
            UserError::Locked { retry_after_secs }
            | UserError::ConfirmationCodeTooSoon { retry_after_secs },
        ) = self
        {
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
            AppError::Passkey(failure) => Self::Passkey(failure),
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
        Refusal::WrongPasskey => (StatusCode::UNAUTHORIZED, "passkey.refused"),
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
        Refusal::WrongPasskey => "the passkey was not accepted".to_owned(),
        Refusal::RefreshTokenReused => {
            "this refresh token was already used; the session is revoked for safety".to_owned()
        }
        Refusal::SessionExpired => UserError::SessionEnded.to_string(),
    }
}

/// Where a rejected input came from: it chooses the problem's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A JSON request body.
    Json,
    /// A form body (urlencoded or multipart).
    Form,
    /// The query string.
    Query,
}

impl Input {
    /// The code of a value of the right syntax but the wrong shape.
    fn invalid_code(self) -> &'static str {
        match self {
            Self::Json => "request.invalid_body",
            Self::Form => "request.invalid_form",
            Self::Query => "request.invalid_query",
        }
    }
}

/// Parses a JSON body into `T`, or answers what is wrong with it: where the syntax breaks, or
/// which field is missing or has the wrong type, in our words (never the parser's).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::request(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.malformed_json",
            "the body is empty; a JSON object is expected",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| json_error(&error.path().to_string(), error.inner()))?;
    deserializer
        .end()
        .map_err(|error| json_error(".", &error))?;
    Ok(parsed)
}

/// The problem of a JSON body `serde_json` refused at `path`.
fn json_error(path: &str, error: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let (line, column) = (error.line(), error.column());
    let malformed = |detail: String| {
        ApiError::request(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.malformed_json",
            detail,
        )
    };
    match error.classify() {
        Category::Eof => malformed(format!(
            "the body is not valid JSON: it ends at line {line}, column {column}, before the \
             JSON is complete"
        )),
        Category::Syntax | Category::Io => malformed(format!(
            "the body is not valid JSON at line {line}, column {column}: {}",
            without_location(&error.to_string())
        )),
        Category::Data => ApiError::request(
            StatusCode::UNPROCESSABLE_ENTITY,
            Input::Json.invalid_code(),
            describe(path, &without_location(&error.to_string()), Input::Json),
        ),
    }
}

/// Parses an `application/x-www-form-urlencoded` text (a form body or a query string) into
/// `T`, or answers which field is missing or not valid.
pub fn parse_urlencoded<T: serde::de::DeserializeOwned>(
    text: &[u8],
    input: Input,
) -> Result<T, ApiError> {
    let deserializer = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(text));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        ApiError::request(
            StatusCode::UNPROCESSABLE_ENTITY,
            input.invalid_code(),
            describe(&error.path().to_string(), &error.inner().to_string(), input),
        )
    })
}

/// A parser's message without the ` at line L column C` that `serde_json` appends.
fn without_location(message: &str) -> String {
    message
        .rsplit_once(" at line ")
        .map_or(message, |(before, _)| before)
        .to_owned()
}

/// What is wrong at `path`, from the parser's `message` about it, in our words. A value the
/// client sent is never repeated (it could be a password sent in the wrong field).
fn describe(path: &str, message: &str, input: Input) -> String {
    // `serde_path_to_error` writes the top level as `.`.
    let path = if path == "." { "" } else { path };
    let subject = if path.is_empty() {
        match input {
            Input::Json => "the body".to_owned(),
            Input::Form => "the form".to_owned(),
            Input::Query => "the query string".to_owned(),
        }
    } else {
        format!("the field `{path}`")
    };
    let named = |quoted: &str| {
        let name = quoted.trim().trim_matches('`');
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("the field `{}` is missing", named(field));
    }
    if let Some(field) = message.strip_prefix("duplicate field ") {
        return format!("the field `{}` is given more than once", named(field));
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let field = rest.split(',').next().unwrap_or(rest);
        return format!("the field `{}` is not accepted here", named(field));
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!(
                "{subject} must be {}, not {}",
                expected_words(expected),
                found_kind(found)
            );
        }
    }
    for prefix in ["unknown variant ", "invalid value: ", "invalid length "] {
        if let Some((_, expected)) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once(", expected "))
        {
            return format!("{subject} must be {}", expected_words(expected));
        }
    }
    if message.starts_with("UUID parsing failed") {
        return format!("{subject} must be a UUID (like 67e55044-10b1-426f-9247-bb680e5fe0c8)");
    }
    if message.contains("invalid digit") || message.contains("number too large") {
        return format!("{subject} must be a whole number in range");
    }
    format!("{subject} is not valid")
}

/// What the parser expected, for a client: JSON's words rather than Rust's.
fn expected_words(expected: &str) -> String {
    let expected = expected.trim();
    let integer = [
        "u8", "u16", "u32", "u64", "u128", "i8", "i16", "i32", "i64", "i128", "usize", "isize",
    ];
    if integer.contains(&expected) {
        "a whole number".to_owned()
    } else if expected == "f32" || expected == "f64" {
        "a number".to_owned()
    } else if expected.starts_with("struct ") || expected == "a map" {
        "an object".to_owned()
    } else if expected == "a sequence" || expected.starts_with("a sequence") {
        "a list".to_owned()
    } else if expected.starts_with("enum ") || expected == "variant identifier" {
        "a string naming one of the accepted values".to_owned()
    } else {
        expected.to_owned()
    }
}

/// The kind of value the client sent, without the value.
fn found_kind(found: &str) -> &'static str {
    let kind = found
        .split([' ', '`', '"'])
        .next()
        .unwrap_or_default()
        .trim();
    match kind {
        "integer" | "floating" => "a number",
        "string" | "character" => "a string",
        "boolean" => "a boolean",
        "null" | "unit" | "Option" => "null",
        "map" => "an object",
        "sequence" => "a list",
        _ => "a value of another type",
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

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        body_rejection(rejection.status())
    }
}

impl From<MultipartRejection> for ApiError {
    fn from(_: MultipartRejection) -> Self {
        Self::request(
            StatusCode::BAD_REQUEST,
            "request.invalid_form",
            "the multipart body has no valid boundary in its `Content-Type`",
        )
    }
}

impl From<MultipartError> for ApiError {
    fn from(error: MultipartError) -> Self {
        match error.status() {
            StatusCode::PAYLOAD_TOO_LARGE => body_rejection(StatusCode::PAYLOAD_TOO_LARGE),
            _ => Self::request(
                StatusCode::BAD_REQUEST,
                "request.invalid_form",
                "the multipart body is malformed or ends too early",
            ),
        }
    }
}

impl ApiError {
    /// A body whose `Content-Type` the endpoint does not take; `expected` names those it does.
    pub fn unsupported_media_type(expected: &str) -> Self {
        Self::request(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "request.unsupported_media_type",
            format!("the body must be {expected}"),
        )
    }

    /// A request URI longer than the service reads.
    pub fn uri_too_long(limit: usize) -> Self {
        Self::request(
            StatusCode::URI_TOO_LONG,
            "request.uri_too_long",
            format!("the request URI is longer than {limit} bytes"),
        )
    }

    /// A method the path does not take (the `Allow` header lists those it does).
    pub fn method_not_allowed() -> Self {
        Self::request(
            StatusCode::METHOD_NOT_ALLOWED,
            "request.method_not_allowed",
            "this endpoint does not take this method; the `Allow` header lists those it takes",
        )
    }

    /// The problem for an error answer that a layer below the routes gave without a body: its
    /// status kept, a code for it.
    pub fn bare(status: StatusCode) -> Self {
        let (code, detail) = match status {
            StatusCode::NOT_FOUND => return Self::NotFound("no such endpoint"),
            StatusCode::METHOD_NOT_ALLOWED => return Self::method_not_allowed(),
            StatusCode::BAD_REQUEST => ("request.bad_request", "the request is malformed"),
            StatusCode::REQUEST_TIMEOUT => {
                ("request.timeout", "the request was not received in time")
            }
            StatusCode::PAYLOAD_TOO_LARGE => ("request.too_large", "the request body is too large"),
            StatusCode::URI_TOO_LONG => ("request.uri_too_long", "the request URI is too long"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "request.unsupported_media_type",
                "the body's `Content-Type` is not one this endpoint takes",
            ),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
                "request.headers_too_large",
                "the request headers are too large",
            ),
            StatusCode::TOO_MANY_REQUESTS => {
                ("request.rate_limited", "too many requests; retry later")
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                return Self::Unavailable("a layer answered 503".into())
            }
            status if status.is_server_error() => ("internal", "internal error"),
            _ => ("request.rejected", "the request was rejected"),
        };
        Self::request(status, code, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // Read only through the parser's errors.
    struct Signup {
        email: String,
        device: Option<Device>,
        count: Option<u32>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // Read only through the parser's errors.
    struct Device {
        device_type: String,
    }

    fn detail(error: ApiError) -> (StatusCode, &'static str, String) {
        let (status, code) = error.status_and_code();
        (status, code, error.problem().detail().to_owned())
    }

    #[test]
    fn a_json_field_at_fault_is_named_with_its_path_and_what_it_must_be() {
        let refused = |body: &str| detail(parse_json::<Signup>(body.as_bytes()).unwrap_err());
        assert_eq!(
            refused(r#"{"email": "a@b.c", "device": {}}"#).2,
            "the field `device.device_type` is missing"
        );
        assert_eq!(
            refused(r#"{"email": "a@b.c", "count": -1}"#).2,
            "the field `count` must be a whole number"
        );
        assert_eq!(
            refused(r#"{"email": "a@b.c", "count": "seven"}"#).2,
            "the field `count` must be a whole number, not a string"
        );
        assert_eq!(
            refused(r#"{"email": "a@b.c", "email": "d@e.f"}"#).2,
            "the field `email` is given more than once"
        );
        let (status, code, _) = refused(r#"{"email": "a@b.c"} trailing"#);
        assert_eq!(
            (status, code),
            (StatusCode::UNPROCESSABLE_ENTITY, "request.malformed_json")
        );
    }

    #[test]
    fn a_value_the_client_sent_is_never_repeated_in_the_detail() {
        for body in [
            r#"{"email": "hunter2-secret-value", "count": "hunter2-secret-value"}"#,
            r#"{"email": ["hunter2-secret-value"]}"#,
            r#"{"email": "a@b.c", "device": "hunter2-secret-value"}"#,
        ] {
            let (_, _, text) = detail(parse_json::<Signup>(body.as_bytes()).unwrap_err());
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn a_query_or_form_field_at_fault_is_named() {
        let refused = |text: &str, input| {
            detail(parse_urlencoded::<Signup>(text.as_bytes(), input).unwrap_err())
        };
        assert_eq!(
            refused("email=a%40b.c&count=99999999999", Input::Query),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "request.invalid_query",
                "the field `count` must be a whole number in range".to_owned()
            )
        );
        assert_eq!(
            refused("count=1", Input::Form),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "request.invalid_form",
                "the field `email` is missing".to_owned()
            )
        );
    }
}
