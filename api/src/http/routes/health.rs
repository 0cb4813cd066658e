//! `/` (what this service is, as the original answered there), `/health/live` and
//! `/health/ready` for orchestrators, and `/metrics` for Prometheus.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(root))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

/// The readiness answer: each check by name, and the names of those that failed.
#[derive(Serialize, ToSchema)]
struct ReadyBody {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// Every dependency checked.
    checks: Vec<Check>,
    /// The names of the checks that failed.
    failed: Vec<&'static str>,
}

/// One dependency's state.
#[derive(Serialize, ToSchema)]
struct Check {
    /// `postgres`, `nats`, or `memory` in the embedded mode.
    name: &'static str,
    /// `up` or `down`.
    status: &'static str,
}

/// What answers at `/`: the service, its version and where to read about it.
#[derive(Serialize, ToSchema)]
struct ServiceInfo {
    /// `Twofold`.
    service: &'static str,
    /// The version of this build.
    version: &'static str,
    /// Where to go next.
    links: ServiceLinks,
}

/// The documentation and the readiness check.
#[derive(Serialize, ToSchema)]
struct ServiceLinks {
    /// Swagger UI.
    docs: &'static str,
    /// The OpenAPI document.
    openapi: &'static str,
    /// The readiness check.
    health: &'static str,
}

/// The service's name, version and links, so that a client of the original (which answered
/// 200 here) and a newcomer both find their way.
#[utoipa::path(
    get,
    path = "/",
    tag = "operations",
    responses((status = 200, description = "The service and where to read about it.",
        body = ServiceInfo, example = json!({
            "service": "Twofold",
            "version": "0.1.0",
            "links": {"docs": "/docs", "openapi": "/openapi.json", "health": "/health/ready"}
        })))
)]
async fn root() -> Json<ServiceInfo> {
    Json(ServiceInfo {
        service: "Twofold",
        version: env!("CARGO_PKG_VERSION"),
        links: ServiceLinks {
            docs: super::DOCS_PATH,
            openapi: super::OPENAPI_PATH,
            health: "/health/ready",
        },
    })
}

/// 200 while the process serves requests.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    responses((status = 200, description = "The process serves requests."))
)]
async fn live() -> StatusCode {
    StatusCode::OK
}

/// 200 when every dependency answers, 503 naming those that do not.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Every dependency answers.", body = ReadyBody, example = json!({
            "status": "ready",
            "checks": [{ "name": "postgres", "status": "up" }, { "name": "nats", "status": "up" }],
            "failed": []
        })),
        (status = 503, description = "A dependency does not answer; the failed list names it.", body = ReadyBody, example = json!({
            "status": "unavailable",
            "checks": [{ "name": "postgres", "status": "up" }, { "name": "nats", "status": "down" }],
            "failed": ["nats"]
        })),
    )
)]
async fn ready(State(state): State<AppState>) -> Response {
    let results = state.readiness.checks().await;
    let failed: Vec<&'static str> = results
        .iter()
        .filter(|(_, up)| !up)
        .map(|(name, _)| *name)
        .collect();
    let checks = results
        .into_iter()
        .map(|(name, up)| Check {
            name,
            status: if up { "up" } else { "down" },
        })
        .collect();
    let (status, word) = if failed.is_empty() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    let body = ReadyBody {
        status: word,
        checks,
        failed,
    };
    (status, Json(body)).into_response()
}

/// Prometheus' scrape endpoint.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((
        status = 200,
        description = "Metrics in the Prometheus text exposition format.",
        content_type = "text/plain; version=0.0.4",
        body = String
    ))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.response()
}
