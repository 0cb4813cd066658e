//! The OpenAPI 3.1 document. The router and the document come from the same declarations
//! (`utoipa-axum`'s `routes!`), so a route registered that way is always documented.
//!
//! Each handler names the problems it answers as [`ApiError`] values, in a type declared with
//! [`problems!`] and listed in the `responses(...)` of its `#[utoipa::path]`. [`complete`] then
//! adds the problems every operation of a kind answers (401 for a bearer token, the body, form,
//! query and path rejections, 500). Every problem response is `application/problem+json` with
//! one example per code, built by the error value itself, so that the status, the code and the
//! example are exactly what the service sends.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, Object, OpenApi, Ref, RefOr, Response, ResponseBuilder, Type,
};
use utoipa::Modify;

use crate::http::error::{ApiError, Problem};
use twofold_domain::user::Refusal;
use twofold_domain::UserError;

/// The media type of every error body.
const PROBLEM_JSON: &str = "application/problem+json";
/// The media type of the login form.
const FORM: &str = "application/x-www-form-urlencoded";
/// The other media type of the login form, as a browser's `FormData` sends it.
const MULTIPART: &str = "multipart/form-data";

/// The fixed parts of the document: its description, security schemes and tags.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Twofold",
        description = "Password login with JWTs, an optional second factor (TOTP from an \
            authenticator app, or a code sent by email) and single-use backup codes.\n\n\
            Every error is `application/problem+json` with a stable `code`; each operation \
            lists the codes it can answer, with an example of each. A method a path does not \
            take answers 405 `request.method_not_allowed` (with `Allow`); a path that no \
            route serves answers 404 `request.not_found`, or with a trailing slash a 307 \
            redirect to the path without it.\n\n\
            Tokens: `access_token` (30 minutes) for most endpoints; `pre_2fa_token` (the \
            `access_token` of a 202 login, 5 minutes) only for the second login step; the \
            refresh token (24 hours, rotated at each use) only in the body of `/auth/refresh`."
    ),
    modifiers(&SecuritySchemes),
    components(schemas(Problem)),
    tags(
        (name = "auth", description = "Sign-up, login, tokens and passwords"),
        (name = "sessions", description = "The caller's sessions"),
        (name = "tfa", description = "The second factor: the second login step, enrolment and management"),
        (name = "passkeys", description = "The caller's passkeys (WebAuthn): registering, listing, renaming, removing"),
        (name = "users", description = "Admin endpoints"),
        (name = "tasks", description = "A test email and the status of queued emails"),
        (name = "keys", description = "The public keys that verify Twofold's tokens"),
        (name = "operations", description = "Health checks and metrics for operators"),
    )
)]
pub struct ApiDoc;

/// The bearer token kinds, as security schemes.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            let mut scheme = Http::new(HttpAuthScheme::Bearer);
            scheme.bearer_format = Some("JWT".to_owned());
            scheme.description = Some(description.to_owned());
            SecurityScheme::Http(scheme)
        };
        components.add_security_scheme(
            "access_token",
            bearer(
                "An access token: the `access_token` of a 200 login, of the second login step \
                 or of a refresh. The admin endpoints need an admin's.",
            ),
        );
        components.add_security_scheme(
            "pre_2fa_token",
            bearer(
                "A pre-2FA token: the `access_token` of a 202 login. It only unlocks the second \
                 step, expires within minutes and dies after 5 wrong codes.",
            ),
        );
    }
}

/// Declares a type that lists the problems one operation answers, for the `responses(...)` of
/// its `#[utoipa::path]`. Each entry is a value that converts into [`ApiError`], so the status,
/// code and example the document shows are the ones the service sends. A list that starts with
/// `proofs` also holds [`proof_problems`]: what checking the password and a second factor
/// answers.
macro_rules! problems {
    ($(#[$doc:meta])* $name:ident: proofs $(, $error:expr)* $(,)?) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                let mut responses = std::collections::BTreeMap::new();
                let errors = [$($crate::http::error::ApiError::from($error)),*];
                for error in errors
                    .into_iter()
                    .chain($crate::http::openapi::proof_problems())
                {
                    $crate::http::openapi::add_problem(&mut responses, &error);
                }
                responses
            }
        }
    };
    ($(#[$doc:meta])* $name:ident: $($error:expr),+ $(,)?) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                let mut responses = std::collections::BTreeMap::new();
                for error in [$($crate::http::error::ApiError::from($error)),+] {
                    $crate::http::openapi::add_problem(&mut responses, &error);
                }
                responses
            }
        }
    };
}
pub(crate) use problems;

/// A rejected request of `status` and `code`, with an example message.
fn rejected(status: StatusCode, code: &'static str, detail: &str) -> ApiError {
    ApiError::Request {
        status,
        code,
        detail: detail.to_owned(),
    }
}

/// What every operation that checks the password and a current second factor (a TOTP code, a
/// backup code or an emailed code) can answer: wrong or spent proofs, the throttle they feed, a
/// concurrent change, a busy hash pool and a store that is down.
pub fn proof_problems() -> Vec<ApiError> {
    vec![
        Refusal::WrongPassword.into(),
        Refusal::WrongCode.into(),
        UserError::TfaCodeReplayed.into(),
        UserError::EmailCodeExpired.into(),
        UserError::AccountLocked.into(),
        ApiError::Conflict,
        UserError::Locked {
            retry_after_secs: 60,
        }
        .into(),
        UserError::HasherSaturated.into(),
        ApiError::unavailable(),
    ]
}

/// What every operation that takes a bearer token can answer.
fn bearer_problems() -> Vec<ApiError> {
    vec![ApiError::MissingToken, ApiError::InvalidToken]
}

/// What every operation that takes a body can answer, whatever its type.
fn body_problems() -> Vec<ApiError> {
    vec![
        rejected(
            StatusCode::BAD_REQUEST,
            "request.unreadable_body",
            "the request body could not be read",
        ),
        rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request.too_large",
            "the request body is too large",
        ),
    ]
}

/// What every operation that takes a JSON body can answer.
fn json_problems() -> Vec<ApiError> {
    let mut problems = body_problems();
    problems.extend([
        rejected(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "request.unsupported_media_type",
            "the body must be JSON with `Content-Type: application/json`",
        ),
        rejected(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.malformed_json",
            "the body is not valid JSON: it ends at line 1, column 10, before the JSON is complete",
        ),
        rejected(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_body",
            "the field `device.device_type` must be `email` or `code_generator`",
        ),
    ]);
    problems
}

/// What every operation that takes a form body (`multipart` if also as multipart) can answer.
fn form_problems(multipart: bool) -> Vec<ApiError> {
    let mut problems = body_problems();
    problems.extend([
        rejected(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "request.unsupported_media_type",
            "the body must be a form: `application/x-www-form-urlencoded` or `multipart/form-data`",
        ),
        rejected(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_form",
            "the field `password` is missing",
        ),
    ]);
    if multipart {
        problems.push(rejected(
            StatusCode::BAD_REQUEST,
            "request.invalid_form",
            "the multipart body is malformed or ends too early",
        ));
    }
    problems
}

/// What every operation with query parameters can answer.
fn query_problems() -> Vec<ApiError> {
    vec![rejected(
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid_query",
        "the field `tfa_token` is missing",
    )]
}

/// What every operation with path parameters can answer.
fn path_problems() -> Vec<ApiError> {
    vec![rejected(
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid_path",
        "the path parameter `session_id` is not valid",
    )]
}

/// Completes every operation's problem responses (see the module documentation).
pub fn complete(openapi: &mut OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            complete_operation(operation);
        }
    }
}

/// Whether an error response documents a body of its own rather than a problem (the
/// readiness check's 503 lists the failed checks).
fn has_own_body(response: &Response) -> bool {
    !response.content.is_empty() && !response.content.contains_key(PROBLEM_JSON)
}

/// The problems an operation answers because of what it takes: a token, a body, query or
/// path parameters; and any operation can fail inside.
fn implied_problems(operation: &Operation) -> Vec<ApiError> {
    let mut implied = vec![
        ApiError::Internal("unexpected".into()),
        ApiError::uri_too_long(crate::http::hygiene::MAX_URI_BYTES),
    ];
    if operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty())
    {
        implied.extend(bearer_problems());
    }
    if let Some(body) = &operation.request_body {
        if body.content.contains_key("application/json") {
            implied.extend(json_problems());
        }
        if body.content.contains_key(FORM) {
            implied.extend(form_problems(body.content.contains_key(MULTIPART)));
        }
    }
    let has_parameter_in = |place: ParameterIn| {
        operation
            .parameters
            .iter()
            .flatten()
            .any(|parameter| parameter.parameter_in == place)
    };
    if has_parameter_in(ParameterIn::Query) {
        implied.extend(query_problems());
    }
    if has_parameter_in(ParameterIn::Path) {
        implied.extend(path_problems());
    }
    implied
}

fn complete_operation(operation: &mut Operation) {
    for error in implied_problems(operation) {
        add_problem(&mut operation.responses.responses, &error);
    }
}

/// Adds `error` to the problem response of its status in `responses` (creating it), as an
/// example named by its code, and lists the codes in the response's description. A status
/// whose response documents a body of its own is left alone.
pub fn add_problem(responses: &mut BTreeMap<String, RefOr<Response>>, error: &ApiError) {
    let (status, code) = error.status_and_code();
    let status = status.as_u16().to_string();
    let response = responses
        .entry(status.clone())
        .or_insert_with(|| RefOr::T(empty_problem_response(&status)));
    let RefOr::T(response) = response else {
        return;
    };
    if has_own_body(response) {
        return;
    }
    let problem = error.problem();
    let summary = problem.detail().to_owned();
    let Ok(value) = serde_json::to_value(problem) else {
        return;
    };
    let content = response
        .content
        .entry(PROBLEM_JSON.to_owned())
        .or_insert_with(problem_content);
    content.examples.insert(
        code.to_owned(),
        RefOr::T(
            ExampleBuilder::new()
                .summary(summary)
                .value(Some(value))
                .build(),
        ),
    );
    let listed: Vec<String> = content
        .examples
        .keys()
        .map(|code| format!("`{code}`"))
        .collect();
    response.description = format!("Problem codes: {}", listed.join(", "));
}

fn problem_content() -> utoipa::openapi::content::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build()
}

/// A problem response of `status` with no example yet, and the headers its status carries.
fn empty_problem_response(status: &str) -> Response {
    let mut response = ResponseBuilder::new()
        .description("Problem codes:")
        .content(PROBLEM_JSON, problem_content());
    let header = |description: &str| {
        HeaderBuilder::new()
            .schema(Object::with_type(Type::String))
            .description(Some(description))
            .build()
    };
    match status {
        "401" => {
            response = response.header(
                "WWW-Authenticate",
                header("`Bearer`, with `error=\"invalid_token\"` for a token that was refused"),
            );
        }
        "429" | "503" => {
            response = response.header("Retry-After", header("Seconds to wait before retrying"));
        }
        _ => {}
    }
    response.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem_responses() -> Vec<(String, String, Response)> {
        let document = crate::http::routes::openapi();
        let mut found = Vec::new();
        for (path, item) in document.paths.paths {
            let operations = [
                ("get", item.get),
                ("put", item.put),
                ("post", item.post),
                ("delete", item.delete),
                ("patch", item.patch),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                for (status, response) in operation.responses.responses {
                    if let RefOr::T(response) = response {
                        if status.as_str() >= "400" && !has_own_body(&response) {
                            found.push((format!("{method} {path}"), status, response));
                        }
                    }
                }
            }
        }
        found
    }

    /// The codes a problem response has examples of.
    fn codes(response: &Response) -> Vec<String> {
        response
            .content
            .get(PROBLEM_JSON)
            .map(|content| content.examples.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn every_problem_response_is_problem_json_with_an_example_per_listed_code() {
        let responses = problem_responses();
        assert!(responses.len() > 50);
        for (operation, status, response) in responses {
            let codes = codes(&response);
            assert!(!codes.is_empty(), "{operation} {status} has no example");
            let listed: Vec<String> = codes.iter().map(|code| format!("`{code}`")).collect();
            assert_eq!(
                response.description,
                format!("Problem codes: {}", listed.join(", ")),
                "{operation} {status}"
            );
            let content = &response.content[PROBLEM_JSON];
            for code in codes {
                let example = match &content.examples[&code] {
                    RefOr::T(example) => example.value.clone(),
                    RefOr::Ref(_) => None,
                }
                .unwrap_or_else(|| panic!("{operation}: no example of `{code}`"));
                assert_eq!(example["code"], code.as_str(), "{operation}");
                assert_eq!(example["status"].to_string(), status, "{operation}");
            }
        }
    }

    #[test]
    fn a_declared_problem_lands_under_its_own_status_beside_the_others() {
        problems!(Declared: ApiError::Conflict, UserError::AccountLocked, UserError::TfaCodeReplayed);
        let responses = <Declared as utoipa::IntoResponses>::responses();
        let by_status: Vec<(String, Vec<String>)> = responses
            .into_iter()
            .map(|(status, response)| match response {
                RefOr::T(response) => (status, codes(&response)),
                RefOr::Ref(_) => (status, Vec::new()),
            })
            .collect();
        assert_eq!(
            by_status,
            [
                (
                    "403".to_owned(),
                    vec![
                        "auth.account_locked".to_owned(),
                        "tfa.code_replayed".to_owned()
                    ]
                ),
                ("409".to_owned(), vec!["concurrency.conflict".to_owned()]),
            ]
        );
    }

    #[test]
    fn operations_list_the_path_rejection_exactly_when_they_take_path_parameters() {
        let document = crate::http::routes::openapi();
        let mut with_path = 0;
        for (path, item) in document.paths.paths {
            let operations = [item.get, item.put, item.post, item.delete, item.patch];
            for operation in operations.into_iter().flatten() {
                let takes_path = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|parameter| parameter.parameter_in == ParameterIn::Path);
                let lists_it = operation
                    .responses
                    .responses
                    .get("422")
                    .is_some_and(|response| {
                        matches!(response, RefOr::T(response)
                            if codes(response).iter().any(|code| code == "request.invalid_path"))
                    });
                assert_eq!(takes_path, lists_it, "{path}");
                with_path += usize::from(takes_path);
            }
        }
        assert!(
            with_path >= 4,
            "only {with_path} operations with path parameters"
        );
    }
}
