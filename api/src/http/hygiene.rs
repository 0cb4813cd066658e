//! HTTP hygiene applied to every response: security headers, CORS that is closed unless
//! origins are configured, and problem+json for every error (a URI too long, a bare rejection).

use axum::body::HttpBody;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::http::error::ApiError;

/// Headers every response carries unless the handler set its own. The API serves JSON and
/// PNG only, so nothing may be framed, sniffed, cached (token responses must not be, RFC 6749
/// §5.1) or leak a referrer.
const SECURITY_HEADERS: [(HeaderName, &str); 6] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    ),
];

/// Longest request URI (path and query) the service reads, in bytes. Twofold's own URIs are
/// short; 8 KiB is what common proxies allow. (A URI over 64 KiB never reaches here: the HTTP
/// parser answers it with a bare 414 itself.)
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// CORS for `allowed_origins`, if there are any (none: CORS stays closed).
///
/// With [`add_security_headers`], [`limit_uri`] and [`problem_for_bare_errors`], this is the
/// hygiene the router's outer layer stack (`startup`) gives every answer: the security headers,
/// and problem+json for every error answer (a URI that is too long, and an error that a layer
/// below the routes gave without a body, get one with a code for their status).
pub fn cors(allowed_origins: &[HeaderValue]) -> Option<CorsLayer> {
    if allowed_origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed_origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Adds each of [`SECURITY_HEADERS`] that the response does not have.
pub fn add_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// Answers 414 problem+json to a URI over [`MAX_URI_BYTES`].
pub async fn limit_uri(request: Request, next: Next) -> Response {
    let length = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if length > MAX_URI_BYTES {
        return ApiError::uri_too_long(MAX_URI_BYTES).into_response();
    }
    next.run(request).await
}

/// Gives an error answer without a body (a method the route does not take, a layer's
/// rejection) the problem+json of its status; the headers it had (`Allow`, `Retry-After`) stay.
pub async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let bare = (status.is_client_error() || status.is_server_error())
        && !response.headers().contains_key(header::CONTENT_TYPE)
        && response.body().size_hint().exact() == Some(0);
    if !bare {
        return response;
    }
    let mut problem = ApiError::bare(status).into_response();
    for (name, value) in response.headers() {
        if !problem.headers().contains_key(name) {
            problem.headers_mut().append(name, value.clone());
        }
    }
    problem
}

/// Parses `TWOFOLD_CORS_ORIGINS`: comma-separated origins such as `https://app.example.com`.
pub fn parse_origins(spec: &str) -> Result<Vec<HeaderValue>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && origin != "*";
            if !valid {
                return Err(format!(
                    "TWOFOLD_CORS_ORIGINS: `{origin}` is not an origin like https://app.example.com"
                ));
            }
            HeaderValue::from_str(origin).map_err(|_| {
                format!("TWOFOLD_CORS_ORIGINS: `{origin}` is not a valid header value")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_parsed_and_wildcards_or_paths_refused() {
        assert_eq!(parse_origins("").unwrap().len(), 0);
        assert_eq!(
            parse_origins("https://a.example, http://localhost:3000").unwrap(),
            vec![
                HeaderValue::from_static("https://a.example"),
                HeaderValue::from_static("http://localhost:3000")
            ]
        );
        assert!(parse_origins("*").is_err());
        assert!(parse_origins("https://a.example/").is_err());
        assert!(parse_origins("a.example").is_err());
    }
}
