//! Logging: pretty for a terminal or JSON for collectors, filtered by `RUST_LOG`, written to
//! standard error (standard output carries the stdout mail transport).

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// The request id header, accepted from clients or generated, and echoed in responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Installs the global subscriber. A second call is a no-op (tests build many apps).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _already_set = match format {
        // Colours only on a terminal: a file or a collector would get the escape codes as text.
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
}

/// Request ids for requests that bring none: random UUIDs (v4), as unique across instances
/// as any, drawn from the thread's cryptographic generator (seeded by the operating system)
/// rather than from a system call per request, and formatted without allocating a string.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeRandomRequestId;

impl tower_http::request_id::MakeRequestId for MakeRandomRequestId {
    fn make_request_id<B>(
        &mut self,
        _request: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut text = uuid::Uuid::encode_buffer();
        let text = id.hyphenated().encode_lower(&mut text);
        axum::http::HeaderValue::from_str(text)
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}
