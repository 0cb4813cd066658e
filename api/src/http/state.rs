//! What every handler can reach.

use std::sync::Arc;

use crate::app::App;
use crate::http::jwt::TokenService;
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// Shared application state.
#[derive(Clone)]
pub struct AppState {
    /// The use cases.
    pub app: Arc<App>,
    /// Issues and verifies tokens.
    pub tokens: Arc<TokenService>,
    /// This service's Prometheus metrics.
    pub metrics: Metrics,
    /// What `/health/ready` checks.
    pub readiness: Readiness,
}
