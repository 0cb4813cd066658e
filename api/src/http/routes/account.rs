//! `/account/passkeys`: the self-service page where a user signs in (with a password and a
//! second step, or with a passkey alone) and registers, renames and removes passkeys. It is
//! the smallest page that drives the browser's WebAuthn API against the JSON API: one HTML
//! file, one script and one stylesheet, compiled in and served from here, so the page needs
//! nothing from anywhere else. It calls only the documented `/api/v1` operations and keeps
//! the access token in a script variable (never in storage or a cookie), so it is no API of
//! its own and is not in the OpenAPI document, like `/docs`.

use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::http::state::AppState;

/// Where the page is served.
pub const PASSKEY_PAGE_PATH: &str = "/account/passkeys";
/// Where the page's script is served.
pub const PASSKEY_PAGE_SCRIPT_PATH: &str = "/account/passkeys.js";
/// Where the page's stylesheet is served.
pub const PASSKEY_PAGE_STYLE_PATH: &str = "/account/passkeys.css";

/// The page runs its one script and stylesheet, both from here, and talks to this origin
/// only; nothing inline (no `unsafe-inline`: an injected `<script>` or `on…=` attribute does
/// not run), no forms posted anywhere (the script sends every request), no framing, no
/// `<base>`, and with Trusted Types required no string ever becomes markup or code.
pub const PAGE_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; \
     frame-ancestors 'none'; base-uri 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

const HTML: &str = include_str!("account/passkeys.html");
const SCRIPT: &str = include_str!("account/passkeys.js");
const STYLE: &str = include_str!("account/passkeys.css");

/// The page and its two assets, each with the page's content security policy. They are
/// registered with axum's own `route` (not `routes!`): no JSON operation, nothing for the
/// OpenAPI document (`tests/it/openapi.rs` names them as its exceptions).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(PASSKEY_PAGE_PATH, get(page))
        .route(PASSKEY_PAGE_SCRIPT_PATH, get(script))
        .route(PASSKEY_PAGE_STYLE_PATH, get(style))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CONTENT_SECURITY_POLICY),
        ))
}

async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], HTML)
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}
