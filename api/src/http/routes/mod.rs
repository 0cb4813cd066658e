//! The HTTP routes, grouped as in the original service under `/api/v1`.

mod account;
mod auth;
mod dto;
mod erasure;
mod health;
mod passkeys;
mod password;
mod sessions;
mod tasks;
mod tfa;
mod tfa_manage;
mod users;
mod views;
mod well_known;

use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;
use twofold_domain::UserError;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::{AppError, ScanCode};
use crate::http::error::ApiError;
use crate::http::openapi::ApiDoc;
use crate::http::state::AppState;

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/docs";

/// Swagger UI runs its own scripts and styles (all served from here, none inline) and fetches
/// the document; everything else keeps the API's `default-src 'none'`. Its React components
/// set inline `style` attributes and its stylesheet embeds SVG icons as `data:` URLs.
const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'";

/// Every API route, each declared once for both the router and the OpenAPI document.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(
            "/api/v1",
            OpenApiRouter::new()
                .nest(
                    "/auth",
                    auth::router().nest("/passkey", passkeys::passwordless_router()),
                )
                .nest(
                    "/tfa",
                    tfa::router().nest("/passkey", passkeys::second_factor_router()),
                )
                .merge(passkeys::router())
                .nest("/users", users::router().merge(erasure::router()))
                .nest("/tasks", tasks::router())
                .nest("/admin", views::router()),
        )
        .merge(well_known::router())
        .merge(health::router())
}

/// The router and the OpenAPI document, completed with the problem responses.
fn documented() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut document) = api().split_for_parts();
    crate::http::openapi::complete(&mut document);
    (router, document)
}

/// The OpenAPI document of every route, as served at [`OPENAPI_PATH`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().1
}

/// Every route, the OpenAPI document at [`OPENAPI_PATH`], Swagger UI at [`DOCS_PATH`] and
/// the passkey page at [`account::PASSKEY_PAGE_PATH`].
pub fn router() -> Router<AppState> {
    let (router, document) = documented();
    let docs = Router::from(SwaggerUi::new(DOCS_PATH).url(OPENAPI_PATH, document)).layer(
        SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_CONTENT_SECURITY_POLICY),
        ),
    );
    router
        .merge(docs)
        .merge(account::router())
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .fallback(unmatched)
}

/// A path no route serves. With a trailing slash it is redirected (307, so the method and body
/// are kept) to the path without it, query string included, as the original's framework did;
/// otherwise it is 404. A path that would redirect to `//host` (which a browser reads as
/// another site) is not redirected.
async fn unmatched(uri: Uri) -> Response {
    let path = uri.path();
    let trimmed = path.trim_end_matches('/');
    let elsewhere = trimmed.starts_with("//") || trimmed.starts_with("/\\");
    if trimmed.len() == path.len() || trimmed.is_empty() || elsewhere {
        return ApiError::NotFound("no such endpoint").into_response();
    }
    let location = match uri.query() {
        Some(query) => format!("{trimmed}?{query}"),
        None => trimmed.to_owned(),
    };
    match HeaderValue::try_from(location) {
        Ok(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => ApiError::NotFound("no such endpoint").into_response(),
    }
}

/// A PNG response.
fn png(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "image/png")], bytes).into_response()
}

/// The answer to an enrolment: the QR code (PNG) to scan for an authenticator app, or an
/// empty body for email.
async fn enrolment_response(code: Option<ScanCode>) -> Result<Response, ApiError> {
    match code {
        Some(code) => Ok(png(crate::http::qr::png(code.uri().to_owned()).await?)),
        None => Ok(StatusCode::OK.into_response()),
    }
}

/// A failure of a use case the caller's token asked for: a valid token whose user does not
/// exist is an invalid token, not a missing resource.
fn as_caller(error: AppError) -> ApiError {
    match error {
        AppError::Domain(UserError::UnknownUser) => ApiError::InvalidToken,
        other => other.into(),
    }
}
