//! The HTTP routes, grouped as in the original service under `/api/v1`.

mod auth;
mod dto;
mod health;
mod password;
mod sessions;
mod tasks;
mod tfa;
mod tfa_manage;
mod users;
mod views;
mod well_known;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use secrecy::SecretString;
use tower_http::set_header::SetResponseHeaderLayer;
use twofold_domain::services::Randomness;
use twofold_domain::user::{NewDevice, TfaEnrolment};
use twofold_domain::values::{DeviceType, Email, UserId};
use twofold_domain::{backup_codes, totp};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::http::error::ApiError;
use crate::http::openapi::ApiDoc;
use crate::http::state::AppState;

pub use health::Readiness;

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
                .nest("/auth", auth::router())
                .nest("/tfa", tfa::router())
                .nest("/users", users::router())
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

/// Every route, the OpenAPI document at [`OPENAPI_PATH`] and Swagger UI at [`DOCS_PATH`].
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
        .fallback(|| async { ApiError::NotFound("no such endpoint") })
}

/// A PNG response.
fn png(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "image/png")], bytes).into_response()
}

/// The secrets of a fresh enrolment in clear, for the response (QR code) and the email.
struct EnrolmentSecrets {
    seed: Option<secrecy::SecretSlice<u8>>,
    codes: Vec<String>,
}

/// A fresh enrolment for `device_type`: the command, and the secrets it will only keep sealed.
fn new_enrolment(state: &AppState, device_type: DeviceType) -> (TfaEnrolment, EnrolmentSecrets) {
    use secrecy::ExposeSecret;
    let rng: &dyn Randomness = state.services.rng.as_ref();
    let codes = backup_codes::generate_set(rng, state.backup_codes);
    let (device, seed) = match device_type {
        DeviceType::Email => (NewDevice::Email, None),
        DeviceType::CodeGenerator => {
            let seed = totp::generate_seed(rng);
            (NewDevice::CodeGenerator { seed: seed.clone() }, Some(seed))
        }
    };
    let secrets = EnrolmentSecrets {
        codes: codes
            .iter()
            .map(|code| code.expose_secret().to_owned())
            .collect(),
        seed,
    };
    let command = TfaEnrolment {
        device,
        backup_codes: codes,
    };
    (command, secrets)
}

/// After an enrolment committed: answer with the QR code for an authenticator app, or an
/// empty body for email.
async fn enrolment_response(
    state: &AppState,
    email: &Email,
    secrets: EnrolmentSecrets,
) -> Result<Response, ApiError> {
    match secrets.seed {
        Some(seed) => {
            let uri = totp::otpauth_uri(&state.totp_issuer, email, &seed);
            Ok(png(crate::http::qr::png(uri).await?))
        }
        None => Ok(StatusCode::OK.into_response()),
    }
}

/// The emails a committed enrolment sends: the backup codes, and the notice that 2FA is on.
fn enrolment_mail(
    state: &AppState,
    owner: UserId,
    to: &Email,
    request_id: Option<&str>,
    secrets: &EnrolmentSecrets,
    device_type: DeviceType,
) -> Vec<twofold_nats::MailJob> {
    vec![
        state
            .mail
            .backup_codes(owner, to.as_str(), request_id, &secrets.codes),
        state
            .mail
            .tfa_enabled(owner, to.as_str(), request_id, device_type),
    ]
}

/// [`enrolment_response`] for the calling user, whose address comes from the user view.
async fn caller_enrolment_response(
    state: &AppState,
    owner: UserId,
    secrets: EnrolmentSecrets,
) -> Result<Response, ApiError> {
    let view = state
        .directory
        .find(owner)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    let email = Email::parse(&view.email)?;
    enrolment_response(state, &email, secrets).await
}

/// A random 6-digit code for an email second factor.
fn email_code(state: &AppState) -> SecretString {
    let rng: &dyn Randomness = state.services.rng.as_ref();
    SecretString::from(format!("{:06}", rng.below(1_000_000)))
}

/// A valid token whose user does not exist is an invalid token, not a missing resource.
fn unknown_user_is_invalid_token(error: ApiError) -> ApiError {
    match error {
        ApiError::Domain(twofold_domain::UserError::UnknownUser) => ApiError::InvalidToken,
        other => other,
    }
}
