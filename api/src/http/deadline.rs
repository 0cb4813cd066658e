//! The request deadline: a request not answered within it is answered 503
//! `service.unavailable` with `Retry-After`, and the work it was doing is dropped.
//!
//! What it bounds is a dependency that stops answering without closing its connections. A
//! database host that hangs, or that a network partition cuts off, leaves a query waiting on a
//! socket that never delivers: sqlx gives a statement no time limit of its own, so without
//! this the request, its task and its pooled connection wait until the host comes back, if it
//! ever does.
//!
//! Dropping the work midway loses nothing: a statement is atomic, a transaction dropped before
//! its `COMMIT` rolls back, and a view write dropped between a commit and its dispatch is made
//! good by the catch-up projector. A commit that went through before the deadline stays
//! committed, as it would if the answer were lost on the way: a client retrying a refresh
//! within the reuse grace gets the same successor.
//!
//! The clock starts when the request reaches the router, so the body's arrival counts: the
//! configuration requires the deadline to exceed the body-read timeout, and a slow body still
//! gets its own answer.
//!
//! Not `tower_http`'s `TimeoutLayer` (whose bare 503 [`crate::http::hygiene`] would turn into
//! the same problem): its future polls its sleep before the service, which arms a timer for
//! every request, the token checks that finish in their first poll included. This one polls
//! the service first, and its 503 names the deadline as the cause in the log.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::http::error::ApiError;

/// Answers requests that take longer than a limit (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    limit: Duration,
}

impl DeadlineLayer {
    /// A deadline `limit` after a request reaches the router.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            limit: self.limit,
        }
    }
}

/// The service below, given at most `limit` per request.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

impl<S> Service<Request> for Deadline<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        DeadlineFuture {
            answer: tokio::time::timeout(self.limit, self.inner.call(request)),
            limit: self.limit,
        }
    }
}

pin_project! {
    /// The answer of the service below, or 503 once the limit has passed.
    pub struct DeadlineFuture<F> {
        #[pin]
        answer: tokio::time::Timeout<F>,
        limit: Duration,
    }
}

impl<F, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.answer.poll(cx)) {
            Ok(answer) => answer,
            Err(_elapsed) => {
                Ok(ApiError::Unavailable(Box::new(DeadlinePassed(*this.limit))).into_response())
            }
        })
    }
}

/// Why a request was answered 503 by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request was not answered within its deadline of {0:?}")]
struct DeadlinePassed(Duration);

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::ServiceExt;

    use super::*;

    const LIMIT: Duration = Duration::from_millis(200);

    /// Answers `/quick` at once and never answers anything else, behind the deadline.
    async fn call(path: &str) -> Response {
        let service =
            DeadlineLayer::new(LIMIT).layer(tower::service_fn(|request: Request| async move {
                if request.uri().path() != "/quick" {
                    std::future::pending::<()>().await;
                }
                Ok::<_, Infallible>("done".into_response())
            }));
        let request = Request::get(path).body(Body::empty()).unwrap();
        service.oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn a_request_answered_in_time_keeps_its_answer() {
        let answer = call("/quick").await;
        assert_eq!(answer.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_is_answered_503_unavailable_with_retry_after() {
        let started = std::time::Instant::now();
        let answer = call("/stuck").await;
        assert!(started.elapsed() >= LIMIT);
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(answer.headers().contains_key("retry-after"));
        let body = axum::body::to_bytes(answer.into_body(), 4096)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "service.unavailable");
    }
}
