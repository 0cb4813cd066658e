//! HTTP hygiene: security headers, CORS closed unless configured, body size limit.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn every_response_carries_security_headers_and_no_cors_by_default() {
    let app = spawn_app(Store::Embedded).await;
    for response in [
        app.http
            .get(format!("{}/.well-known/jwks.json", app.address))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap(),
        app.login("nobody@example.com", "whatever password").await,
    ] {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(headers.contains_key("content-security-policy"));
        assert!(!headers.contains_key("access-control-allow-origin"));
    }
}

#[tokio::test]
async fn only_configured_origins_get_cors() {
    let mut config = test_config(Store::Embedded, None, None);
    config.http.cors_origins = "https://app.example".to_owned();
    let app = spawn_app_with(config).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(Method::OPTIONS, app.url("/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let app = spawn_app(Store::Embedded).await;
    let mut body = signup_body(&unique_email("big"), None);
    body["full_name"] = json!("x".repeat(100 * 1024));
    let (status, problem_body) = problem(app.signup(&body).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem_body["code"], "request.too_large");
}

#[tokio::test]
async fn error_details_are_ours_not_the_parsers() {
    let app = spawn_app(Store::Embedded).await;
    let (_, body) = problem(
        app.signup(&json!({ "email": unique_email("x"), "password": PASSWORD }))
            .await,
    )
    .await;
    assert_eq!(body["detail"], "the field `full_name` is missing");
    let (_, body) = problem(
        app.signup(&json!({ "email": 5, "full_name": "A", "password": PASSWORD }))
            .await,
    )
    .await;
    assert_eq!(
        body["detail"],
        "the field `email` must be a string, not a number"
    );
}

#[tokio::test]
async fn one_address_is_rate_limited_on_the_unauthenticated_endpoints_only() {
    let mut config = test_config(Store::Embedded, None, None);
    config.http.ip_rate_limit = 5;
    let app = spawn_app_with(config).await;
    for _ in 0..5 {
        let response = app.login("nobody@example.com", "whatever password").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = app.login("nobody@example.com", "whatever password").await;
    assert!(limited.headers().contains_key("retry-after"));
    let (status, body) = problem(limited).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "request.rate_limited");
    // Endpoints that need no guessing are not counted.
    let jwks = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), StatusCode::OK);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let mut config = test_config(Store::Embedded, None, None);
    config.http.ip_rate_limit = 2;
    config.http.trusted_proxies = "127.0.0.1".to_owned();
    let app = spawn_app_with(config).await;
    let login_from = |client: &'static str| {
        app.http
            .post(app.url("/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.99, {client}"))
            .form(&[("username", "nobody@example.com"), ("password", "whatever")])
            .send()
    };
    for _ in 0..2 {
        assert_eq!(
            login_from("203.0.113.1").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = login_from("203.0.113.1").await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy is not affected, whatever it prepends.
    assert_eq!(
        login_from("203.0.113.2").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}
