//! HTTP hygiene applied to every response: security headers, and CORS that is closed unless
//! origins are configured.

use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

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

/// Adds the security headers, and CORS for `allowed_origins` if there are any.
pub fn apply(router: Router, allowed_origins: &[HeaderValue]) -> Router {
    let mut router = router;
    for (name, value) in SECURITY_HEADERS {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    if allowed_origins.is_empty() {
        return router;
    }
    router.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed_origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(std::time::Duration::from_secs(600)),
    )
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
