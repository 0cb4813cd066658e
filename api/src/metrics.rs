//! Prometheus metrics, served at `/metrics`: HTTP requests by route template and status,
//! logins by outcome, lockouts, emails, event-store command latency, the outbox relay and
//! the size of the embedded mode's in-memory store.
//!
//! Each [`Metrics`] owns its own recorder rather than installing a global one, so several
//! services in one process (the integration tests start many) never count each other's work.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// Histogram buckets in seconds, from a cache-speed command to a slow Argon2 login.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The route label of requests that matched no route (404s, and answers from layers that
/// run before routing, such as the per-client rate limit).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The recorder of one service and the handle that renders it.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    http: Arc<HttpSeries>,
}

/// The request counter and latency histogram of one method, status and route template.
#[derive(Clone)]
struct HttpSeriesHandles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// The HTTP series registered so far, by method and status, then route template: every
/// request after the first of its series records through the handles, without building the
/// labels (three strings) and the keys again and looking them up in the registry. Bounded:
/// the routes are the router's templates (or [`UNMATCHED_ROUTE`]), the methods a closed set
/// of labels, the statuses those the service answers.
#[derive(Default)]
struct HttpSeries(RwLock<HashMap<(&'static str, u16), RouteSeries>>);

/// The series of one method and status, by route template.
type RouteSeries = HashMap<Box<str>, HttpSeriesHandles>;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh, empty set of metrics.
    pub fn new() -> Self {
        // The buckets are valid constants, so this cannot fail; summaries would do if it did.
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        Self {
            recorder: Arc::new(recorder),
            handle,
            http: Arc::default(),
        }
    }

    /// The recorder, for components outside this crate (the outbox relay) to record into.
    pub fn recorder(&self) -> Arc<dyn metrics::Recorder + Send + Sync> {
        Arc::clone(&self.recorder) as Arc<dyn metrics::Recorder + Send + Sync>
    }

    /// Everything recorded, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// The `GET /metrics` response.
    pub fn response(&self) -> Response {
        let content_type = "text/plain; version=0.0.4; charset=utf-8";
        ([(header::CONTENT_TYPE, content_type)], self.render()).into_response()
    }

    fn record<T>(&self, record: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(self.recorder.as_ref(), record)
    }

    /// One HTTP request answered.
    pub fn http_request(
        &self,
        method: &'static str,
        route: &str,
        status: StatusCode,
        took: Duration,
    ) {
        let seconds = took.as_secs_f64();
        let status = status.as_u16();
        {
            let known = self.http.0.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(handles) = known
                .get(&(method, status))
                .and_then(|routes| routes.get(route))
            {
                handles.requests.increment(1);
                handles.duration.record(seconds);
                return;
            }
        }
        let handles = self.http_series(method, route, status);
        handles.requests.increment(1);
        handles.duration.record(seconds);
    }

    /// Registers the series of a method, route and status not seen before (or seen by a
    /// request running at the same time: the registry then hands out the same handles).
    fn http_series(&self, method: &'static str, route: &str, status: u16) -> HttpSeriesHandles {
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        let handles = self.record(|| HttpSeriesHandles {
            requests: metrics::counter!("twofold_http_requests_total", &labels),
            duration: metrics::histogram!("twofold_http_request_duration_seconds", &labels),
        });
        let mut known = self.http.0.write().unwrap_or_else(PoisonError::into_inner);
        known
            .entry((method, status))
            .or_default()
            .entry(Box::from(route))
            .or_insert(handles)
            .clone()
    }

    /// One login step ended: `step` is `password`, `second_factor` or `backup_code`; `outcome`
    /// is `ok`, `second_factor_required`, `wrong_password`, `unknown_account`, `wrong_code`,
    /// or the stable error code that refused it (`auth.locked`, `auth.account_locked`…).
    pub fn login(&self, step: &'static str, outcome: &'static str) {
        self.record(|| {
            metrics::counter!("twofold_logins_total", "step" => step, "outcome" => outcome)
                .increment(1);
        });
    }

    /// A factor was locked after too many failures.
    pub fn lockout(&self, factor: &'static str) {
        self.record(|| {
            metrics::counter!("twofold_lockouts_total", "factor" => factor).increment(1);
        });
    }

    /// An email left (`sent`) or could not (`failed`) in the embedded mode's in-process queue.
    pub fn email(&self, outcome: &'static str) {
        self.record(|| {
            metrics::counter!("twofold_emails_total", "outcome" => outcome).increment(1);
        });
    }

    /// One command ran against the event store, from load to commit (retries included).
    pub fn command(&self, command: &'static str, outcome: &'static str, took: Duration) {
        self.record(|| {
            metrics::histogram!(
                "twofold_command_duration_seconds",
                "command" => command,
                "outcome" => outcome
            )
            .record(took.as_secs_f64());
        });
    }

    /// A command started from the user as a recent commit on this instance left them
    /// (`hit`); then its commit lost a race (`lost_race`: the state was behind the store's),
    /// or its answer was not a commit and was asked again of the store's state
    /// (`answer_rechecked`, whether or not that state answered otherwise).
    pub fn recent_user(&self, outcome: &'static str) {
        self.record(|| {
            metrics::counter!("twofold_command_recent_users_total", "outcome" => outcome)
                .increment(1);
        });
    }

    /// What the embedded mode's in-memory event store holds after a commit: `events` events
    /// of `bytes` serialized bytes (see
    /// [`MemEventRepository`](crate::app::store::MemEventRepository) for what is counted).
    pub fn embedded_store(&self, events: usize, bytes: u64) {
        self.record(|| {
            // Gauges are f64, exact up to 2^53: far beyond what one process can hold.
            metrics::gauge!("twofold_embedded_store_events").set(events as f64);
            metrics::gauge!("twofold_embedded_store_bytes").set(bytes as f64);
        });
    }
}

/// The route template a request matched, carried out on its response so that the outer
/// [`Hygiene`](crate::http::hygiene::Hygiene) layer (which runs before routing) can label it.
#[derive(Clone)]
pub struct MatchedRoute(MatchedPath);

impl MatchedRoute {
    /// The route template, such as `/api/v1/users/{id}`.
    pub fn template(&self) -> &str {
        self.0.as_str()
    }
}

/// Route layer: copies the matched route template onto the response, as [`MatchedRoute`].
#[derive(Clone, Copy, Default)]
pub struct MarkRouteLayer;

impl<S> Layer<S> for MarkRouteLayer {
    type Service = MarkRoute<S>;

    fn layer(&self, inner: S) -> MarkRoute<S> {
        MarkRoute { inner }
    }
}

/// The service of [`MarkRouteLayer`]: it calls the route directly and wraps its future,
/// without boxing either per request.
#[derive(Clone)]
pub struct MarkRoute<S> {
    inner: S,
}

impl<S> Service<Request> for MarkRoute<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = MarkRouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .cloned()
            .map(MatchedRoute);
        MarkRouteFuture {
            future: self.inner.call(request),
            route,
        }
    }
}

pin_project! {
    /// The route's answer, marked with its template.
    pub struct MarkRouteFuture<F> {
        #[pin]
        future: F,
        route: Option<MatchedRoute>,
    }
}

impl<F, E> Future for MarkRouteFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.future.poll(cx))?;
        if let Some(route) = this.route.take() {
            response.extensions_mut().insert(route);
        }
        Poll::Ready(Ok(response))
    }
}

/// The method as a label; clients can send any token, so unknown ones share one label.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
