//! HTTP hygiene applied to every response: security headers, CORS that is closed unless
//! origins are configured, problem+json for every error (a URI too long, a bare rejection),
//! and the request metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, Response as HttpResponse};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::http::error::ApiError;
use crate::metrics::{method_label, MatchedRoute, Metrics, UNMATCHED_ROUTE};

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
/// It sits inside [`Hygiene`] in the router's outer layer stack (`startup`), so CORS answers
/// (preflights) are counted and carry the security headers too.
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
fn add_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// Gives an error answer without a body (a method the route does not take, a layer's
/// rejection) the problem+json of its status; the headers it had (`Allow`, `Retry-After`) stay.
fn problem_for_bare_error(response: Response) -> Response {
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

/// The layer of [`Hygiene`].
#[derive(Clone)]
pub struct HygieneLayer {
    metrics: Arc<Metrics>,
}

impl HygieneLayer {
    /// Counts and times requests in `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics: Arc::new(metrics),
        }
    }
}

impl<S> Layer<S> for HygieneLayer {
    type Service = Hygiene<S>;

    fn layer(&self, inner: S) -> Hygiene<S> {
        Hygiene {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// What every request and answer passes: a URI over [`MAX_URI_BYTES`] is answered 414
/// problem+json here, an error answer without a body gets the problem+json of its status,
/// every answer gets [`SECURITY_HEADERS`], and every request is counted and timed by method,
/// route template and status.
///
/// One service, not a `from_fn` middleware per concern: each of those boxed the service below
/// it and its future on every request. This one calls the service below directly and wraps
/// its future without allocating (issue 15 holds `test-token` to a verify-only endpoint).
#[derive(Clone)]
pub struct Hygiene<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, ResBody> Service<Request<B>> for Hygiene<S>
where
    S: Service<Request<B>, Response = HttpResponse<ResBody>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = HygieneFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = method_label(request.method());
        let length = request
            .uri()
            .path_and_query()
            .map_or(0, |target| target.as_str().len());
        let answer = if length > MAX_URI_BYTES {
            Answer::UriTooLong
        } else {
            Answer::Routed {
                future: self.inner.call(request),
            }
        };
        HygieneFuture {
            answer,
            started,
            method,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

pin_project! {
    /// The answer of [`Hygiene`]: the service's answer, completed.
    pub struct HygieneFuture<F> {
        #[pin]
        answer: Answer<F>,
        started: Instant,
        method: &'static str,
        metrics: Arc<Metrics>,
    }
}

pin_project! {
    /// Where the answer comes from.
    #[project = AnswerProjection]
    enum Answer<F> {
        /// The URI was too long for the service below to see.
        UriTooLong,
        /// The service below answers.
        Routed { #[pin] future: F },
    }
}

impl<F, ResBody, E> Future for HygieneFuture<F>
where
    F: Future<Output = Result<HttpResponse<ResBody>, E>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.answer.project() {
            AnswerProjection::UriTooLong => ApiError::uri_too_long(MAX_URI_BYTES).into_response(),
            AnswerProjection::Routed { future } => match ready!(future.poll(cx)) {
                Ok(response) => problem_for_bare_error(response.map(Body::new)),
                Err(error) => return Poll::Ready(Err(error)),
            },
        };
        let response = add_security_headers(response);
        let route = response
            .extensions()
            .get::<MatchedRoute>()
            .map_or(UNMATCHED_ROUTE, MatchedRoute::template);
        this.metrics.http_request(
            this.method,
            route,
            response.status(),
            this.started.elapsed(),
        );
        Poll::Ready(Ok(response))
    }
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
