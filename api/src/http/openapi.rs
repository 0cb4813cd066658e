//! The OpenAPI 3.1 document. The router and the document come from the same declarations
//! (`utoipa-axum`'s `routes!`), so a route registered that way is always documented.
//!
//! Handlers name the problems they answer in `#[utoipa::path]` as a status whose description
//! lists the codes in backticks, e.g. ``(status = 409, description = "`user.email_taken`")``.
//! [`complete`] then adds the problems every operation of a kind answers (401 for a bearer
//! token, the body, form, query and path rejections, 500), and gives each problem response its
//! `application/problem+json` content with one example per code, built by [`ApiError`]
//! itself so that an example is exactly what the service sends.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Object, OpenApi, Ref, RefOr, ResponseBuilder, Type};
use utoipa::Modify;

use crate::http::error::{ApiError, Problem};
use twofold_domain::user::Refusal;
use twofold_domain::UserError;

/// The media type of every error body.
const PROBLEM_JSON: &str = "application/problem+json";
/// The media type of the login form.
const FORM: &str = "application/x-www-form-urlencoded";

/// The fixed parts of the document: its description, security schemes and tags.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Twofold",
        description = "Password login with JWTs, an optional second factor (TOTP from an \
            authenticator app, or a code sent by email) and single-use backup codes.\n\n\
            Every error is `application/problem+json` with a stable `code`; each operation \
            lists the codes it can answer, with an example of each.\n\n\
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

/// What every operation that takes a bearer token can answer.
const BEARER_PROBLEMS: [&str; 2] = ["auth.missing_token", "auth.invalid_token"];
/// What every operation that takes a JSON body can answer.
const JSON_PROBLEMS: [&str; 5] = [
    "request.unreadable_body",
    "request.too_large",
    "request.unsupported_media_type",
    "request.malformed_json",
    "request.invalid_body",
];
/// What every operation that takes a form body can answer.
const FORM_PROBLEMS: [&str; 4] = [
    "request.unreadable_body",
    "request.too_large",
    "request.unsupported_media_type",
    "request.invalid_form",
];
/// What every operation with query parameters can answer.
const QUERY_PROBLEMS: [&str; 1] = ["request.invalid_query"];
/// What every operation with path parameters can answer.
const PATH_PROBLEMS: [&str; 1] = ["request.invalid_path"];
/// What any operation can answer.
const ANY_PROBLEMS: [&str; 1] = ["internal"];

/// One error of each code the API answers with, by code: where statuses and examples come
/// from. `form` picks the wording of an operation whose body is a form.
fn problem_catalogue(form: bool) -> BTreeMap<&'static str, ApiError> {
    let domain = [
        UserError::InvalidEmail,
        UserError::InvalidFullName,
        UserError::PasswordTooShort,
        UserError::PasswordTooLong,
        UserError::PasswordTooCommon,
        UserError::DeviceRequired,
        UserError::EmailTaken,
        UserError::AlreadyRegistered,
        UserError::UnknownUser,
        UserError::TfaAlreadyEnabled,
        UserError::TfaNotEnabled,
        UserError::NoCodeGenerator,
        UserError::ChallengeClosed,
        UserError::TfaCodeReplayed,
        UserError::EmailCodeExpired,
        UserError::NoBackupCodesLeft,
        UserError::Locked {
            retry_after_secs: 60,
        },
        UserError::AccountLocked,
        UserError::ResetTokenInvalid,
        UserError::SessionEnded,
        UserError::UnknownSession,
        UserError::HasherSaturated,
        UserError::HasherFailed,
    ]
    .map(ApiError::Domain);
    let request = |status, code, detail: &str| ApiError::Request {
        status,
        code,
        detail: detail.to_owned(),
    };
    let requests = [
        request(
            StatusCode::BAD_REQUEST,
            "request.unreadable_body",
            "the request body could not be read",
        ),
        request(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request.too_large",
            "the request body is too large",
        ),
        request(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "request.unsupported_media_type",
            if form {
                "the body must be a form with `Content-Type: application/x-www-form-urlencoded`"
            } else {
                "the body must be JSON with `Content-Type: application/json`"
            },
        ),
        request(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.malformed_json",
            "the body is not valid JSON: the request does not have the expected fields",
        ),
        request(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_body",
            "the field `email` is missing",
        ),
        request(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_form",
            "the field `password` is missing",
        ),
        request(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_query",
            "the field `tfa_token` is missing",
        ),
        request(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_path",
            "the path parameter `session_id` is not valid",
        ),
        request(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.unsupported_grant_type",
            "grant_type must be `password` or empty",
        ),
        request(
            StatusCode::TOO_MANY_REQUESTS,
            "request.rate_limited",
            "too many requests from this address; retry later",
        ),
    ];
    let others = [
        ApiError::InvalidCredentials,
        ApiError::MissingToken,
        ApiError::InvalidToken,
        ApiError::AdminOnly,
        ApiError::Refused(Refusal::RefreshTokenReused),
        ApiError::Refused(Refusal::WrongPassword),
        ApiError::Refused(Refusal::WrongCode),
        ApiError::Refused(Refusal::WrongBackupCode),
        ApiError::NotFound("no such task of yours"),
        ApiError::Conflict,
        ApiError::Unavailable("the database is unreachable".into()),
        ApiError::Internal("unexpected".into()),
    ];
    domain
        .into_iter()
        .chain(requests)
        .chain(others)
        .map(|error| (error.status_and_code().1, error))
        .collect()
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
fn has_own_body(response: &utoipa::openapi::Response) -> bool {
    !response.content.is_empty() && !response.content.contains_key(PROBLEM_JSON)
}

/// The problem codes named in backticks in a response description.
fn codes_in(description: &str) -> Vec<&str> {
    description
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
        })
        .collect()
}

fn complete_operation(operation: &mut Operation) {
    let form = operation
        .request_body
        .as_ref()
        .is_some_and(|body| body.content.contains_key(FORM));
    let catalogue = &problem_catalogue(form);
    let mut implied: Vec<&str> = ANY_PROBLEMS.to_vec();
    if operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty())
    {
        implied.extend(BEARER_PROBLEMS);
    }
    if let Some(body) = &operation.request_body {
        if body.content.contains_key("application/json") {
            implied.extend(JSON_PROBLEMS);
        }
        if body.content.contains_key(FORM) {
            implied.extend(FORM_PROBLEMS);
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
        implied.extend(QUERY_PROBLEMS);
    }
    if has_parameter_in(ParameterIn::Path) {
        implied.extend(PATH_PROBLEMS);
    }

    let responses = &mut operation.responses.responses;
    let mut problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (status, response) in responses.iter() {
        if let RefOr::T(response) = response {
            if status.as_str() >= "400" && !has_own_body(response) {
                let codes = codes_in(&response.description)
                    .into_iter()
                    .map(String::from);
                problems.entry(status.clone()).or_default().extend(codes);
            }
        }
    }
    for code in implied {
        if let Some(error) = catalogue.get(code) {
            let status = error.status_and_code().0.as_u16().to_string();
            problems.entry(status).or_default().push(code.to_owned());
        }
    }
    for (status, codes) in problems {
        let mut unique = Vec::new();
        for code in codes {
            if !unique.contains(&code) {
                unique.push(code);
            }
        }
        responses.insert(
            status.clone(),
            RefOr::T(problem_response(&status, &unique, catalogue)),
        );
    }
}

/// A problem response of `status` that answers `codes`: listed in its description, with one
/// example each whose summary is the message.
fn problem_response(
    status: &str,
    codes: &[String],
    catalogue: &BTreeMap<&'static str, ApiError>,
) -> utoipa::openapi::Response {
    let listed: Vec<String> = codes.iter().map(|code| format!("`{code}`")).collect();
    let description = format!("Problem codes: {}", listed.join(", "));
    let mut examples = Vec::new();
    for code in codes {
        let Some(error) = catalogue.get(code.as_str()) else {
            continue;
        };
        let problem = error.problem();
        let summary = problem.detail().to_owned();
        if let Ok(value) = serde_json::to_value(problem) {
            examples.push((
                code.clone(),
                ExampleBuilder::new()
                    .summary(summary)
                    .value(Some(value))
                    .build(),
            ));
        }
    }
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .examples_from_iter(examples)
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, content);
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

    fn problem_responses() -> Vec<(String, String, utoipa::openapi::Response)> {
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

    #[test]
    fn every_documented_problem_code_is_answered_with_the_documented_status() {
        let catalogue = problem_catalogue(false);
        let responses = problem_responses();
        assert!(!responses.is_empty());
        for (operation, status, response) in responses {
            let codes = codes_in(&response.description);
            assert!(
                !codes.is_empty(),
                "{operation} {status} names no problem code"
            );
            for code in codes {
                let error = catalogue
                    .get(code)
                    .unwrap_or_else(|| panic!("{operation} {status}: unknown code `{code}`"));
                assert_eq!(
                    error.status_and_code().0.as_str(),
                    status,
                    "{operation}: `{code}` is answered with another status"
                );
            }
        }
    }

    #[test]
    fn every_problem_response_is_problem_json_with_an_example_per_code() {
        for (operation, status, response) in problem_responses() {
            let content = response
                .content
                .get(PROBLEM_JSON)
                .unwrap_or_else(|| panic!("{operation} {status} is not problem+json"));
            let codes = codes_in(&response.description);
            assert_eq!(
                content
                    .examples
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .len(),
                codes.len(),
                "{operation} {status}"
            );
            for code in codes {
                let example = content
                    .examples
                    .get(code)
                    .and_then(|example| match example {
                        RefOr::T(example) => example.value.clone(),
                        RefOr::Ref(_) => None,
                    });
                let example =
                    example.unwrap_or_else(|| panic!("{operation}: no example of `{code}`"));
                assert_eq!(example["code"], code);
                assert_eq!(example["status"].to_string(), status);
            }
        }
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
                            if codes_in(&response.description).contains(&"request.invalid_path"))
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

    #[test]
    fn codes_are_read_from_backticks_only() {
        assert_eq!(
            codes_in("Problem codes: `user.email_taken`, `internal`"),
            vec!["user.email_taken", "internal"]
        );
    }
}
