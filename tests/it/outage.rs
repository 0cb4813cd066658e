//! A database outage under load: every operation answers 503 `service.unavailable` with
//! `Retry-After` while Postgres is down, never 500, no answer waits past the request deadline,
//! and the service recovers by itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use twofold_api::Config;

use crate::helpers::*;
use crate::pg_server::PgServer;

/// One answer: the operation, its status, its `code`, whether it carried `Retry-After`, and
/// how long it took.
#[derive(Debug, Clone)]
struct Answer {
    operation: &'static str,
    status: StatusCode,
    code: Option<String>,
    retry_after: bool,
    took: Duration,
}

type Answers = Arc<Mutex<Vec<Answer>>>;

/// Sends `request` and records its answer.
async fn record(
    answers: &Answers,
    operation: &'static str,
    request: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
) {
    let started = Instant::now();
    let response = request.await;
    let took = started.elapsed();
    let answer = match response {
        Ok(response) => {
            let status = response.status();
            let retry_after = response.headers().contains_key("retry-after");
            let body: Option<Value> = response.json().await.ok();
            Answer {
                operation,
                status,
                code: body.and_then(|body| body["code"].as_str().map(str::to_owned)),
                retry_after,
                took,
            }
        }
        // A reset or timed-out connection is as bad as a 500.
        Err(error) => panic!("{operation}: no answer: {error}"),
    };
    answers.lock().unwrap().push(answer);
}

/// Every operation once, as a signed-in user with `tokens` would call them.
async fn every_operation(app: &TestApp, tokens: &Value, answers: &Answers) {
    let access = tokens["access_token"].as_str().unwrap();
    let http = &app.http;
    record(
        answers,
        "signup",
        http.post(app.url("/auth/signup"))
            .json(&signup_body(&unique_email("down"), None))
            .send(),
    )
    .await;
    record(
        answers,
        "login",
        http.post(app.url("/auth/login"))
            .form(&[
                ("username", unique_email("down").as_str()),
                ("password", PASSWORD),
            ])
            .send(),
    )
    .await;
    record(
        answers,
        "refresh",
        http.post(app.url("/auth/refresh"))
            .json(&json!({ "refresh_token": tokens["refresh_token"] }))
            .send(),
    )
    .await;
    record(
        answers,
        "test-token",
        http.get(app.url("/auth/test-token"))
            .bearer_auth(access)
            .send(),
    )
    .await;
    record(
        answers,
        "sessions",
        http.get(app.url("/auth/sessions"))
            .bearer_auth(access)
            .send(),
    )
    .await;
    record(
        answers,
        "history",
        http.get(app.url("/users/me/history"))
            .bearer_auth(access)
            .send(),
    )
    .await;
    record(
        answers,
        "forgot-password",
        http.post(app.url("/auth/forgot-password"))
            .json(&json!({ "email": unique_email("down") }))
            .send(),
    )
    .await;
}

fn by_operation(answers: &[Answer]) -> BTreeMap<&'static str, Vec<(u16, Option<String>)>> {
    let mut map: BTreeMap<&'static str, Vec<(u16, Option<String>)>> = BTreeMap::new();
    for answer in answers {
        map.entry(answer.operation)
            .or_default()
            .push((answer.status.as_u16(), answer.code.clone()));
    }
    map
}

/// The request deadline of the outage test, in seconds: short, so that the frozen database's
/// requests do not keep the test waiting long.
const DEADLINE_SECONDS: u64 = 3;

// Several threads: stopping, freezing and thawing Postgres wait for processes, and on the
// test's one thread that wait would stall the service and count against its answers' times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_or_frozen_database_answers_503_with_retry_after_never_500_and_the_service_recovers(
) {
    let mut postgres = PgServer::start().await;
    let mut config = config_on(&postgres).await;
    config.http.connections.body_read_timeout = 2;
    config.http.connections.request_timeout = DEADLINE_SECONDS;
    let mut app = spawn_app_with(config).await;
    app.http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let app = Arc::new(app);
    let (email, tokens) = signed_in(&app, "outage").await;

    // Load: sign-ups from four clients for the whole test.
    let answers: Answers = Arc::default();
    let stop_load = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (app, answers, stop) = (
                Arc::clone(&app),
                Arc::clone(&answers),
                Arc::clone(&stop_load),
            );
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let request = app
                        .http
                        .post(app.url("/auth/signup"))
                        .json(&signup_body(&unique_email("load"), None))
                        .send();
                    record(&answers, "signup (load)", request).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    postgres.stop();
    let down: Answers = Arc::default();
    // Two rounds: the first meets the connections the shutdown closed, the second a pool
    // that cannot open new ones.
    for _ in 0..2 {
        every_operation(&app, &tokens, &down).await;
    }
    let down = down.lock().unwrap().clone();

    postgres.resume().await;
    wait_for_recovery(&app).await;

    // A database that hangs rather than refuses (a frozen host, a partition): connecting
    // times out instead of failing.
    postgres.freeze();
    let frozen: Answers = Arc::default();
    every_operation(&app, &tokens, &frozen).await;
    let frozen = frozen.lock().unwrap().clone();
    postgres.thaw();

    wait_for_recovery(&app).await;
    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let fresh = app.login_expecting(&email, StatusCode::OK).await;
    let after: Answers = Arc::default();
    every_operation(&app, &fresh, &after).await;
    let after = after.lock().unwrap().clone();

    let all: Vec<Answer> = answers
        .lock()
        .unwrap()
        .iter()
        .chain(&down)
        .chain(&frozen)
        .chain(&after)
        .cloned()
        .collect();
    let server_errors: Vec<&Answer> = all
        .iter()
        .filter(|answer| {
            answer.status.is_server_error() && answer.status != StatusCode::SERVICE_UNAVAILABLE
        })
        .collect();
    assert!(
        server_errors.is_empty(),
        "answers other than 503 among the 5xx: {server_errors:?}\nwhat the service logged as \
         errors:\n{}",
        log_lines_of("ERROR").join("\n")
    );
    for answer in all
        .iter()
        .filter(|answer| answer.status == StatusCode::SERVICE_UNAVAILABLE)
    {
        assert_eq!(
            answer.code.as_deref(),
            Some("service.unavailable"),
            "{answer:?}"
        );
        assert!(answer.retry_after, "a 503 without Retry-After: {answer:?}");
    }
    // Every operation that needs the database said so while it was down or frozen; the ones
    // that do not (a reset request is queued off the request path) answered as usual.
    for (state, answers) in [("down", &down), ("frozen", &frozen)] {
        let by_operation = by_operation(answers);
        for operation in ["signup", "login", "refresh", "sessions", "history"] {
            assert!(
                by_operation[operation]
                    .iter()
                    .any(|(status, _)| *status == 503),
                "{operation} did not answer 503 while the database was {state}: {by_operation:?}"
            );
        }
    }
    // No answer waited past the deadline (give or take a scheduling hiccup), the requests in
    // flight when the database froze included: without the deadline they waited until it
    // thawed.
    let slowest = all.iter().max_by_key(|answer| answer.took).unwrap();
    assert!(
        slowest.took < Duration::from_secs(DEADLINE_SECONDS + 3),
        "an answer waited past the request deadline of {DEADLINE_SECONDS} s: {slowest:?}"
    );
    // And after: nothing unavailable any more.
    for answer in &after {
        assert!(answer.status.as_u16() < 500, "not recovered: {answer:?}");
    }
}

/// A test configuration on a fresh database of `postgres`.
async fn config_on(postgres: &PgServer) -> Config {
    let database = twofold_tests::scratch::create_database(&postgres.url())
        .await
        .unwrap();
    test_config(Store::Postgres, Some(database), Some(default_nats_url()))
}

/// A new account, signed up and logged in: its address and tokens.
async fn signed_in(app: &TestApp, label: &str) -> (String, Value) {
    let email = unique_email(label);
    assert_eq!(
        app.signup(&signup_body(&email, None)).await.status(),
        StatusCode::OK
    );
    let tokens = app.login_expecting(&email, StatusCode::OK).await;
    (email, tokens)
}

/// Waits (up to 30 s) until a sign-up succeeds again.
async fn wait_for_recovery(app: &TestApp) {
    let started = Instant::now();
    loop {
        let status = app
            .signup(&signup_body(&unique_email("back"), None))
            .await
            .status();
        if status == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no recovery: sign-up answers {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pool pings a connection that sat idle before handing it out (and not one used a moment
/// ago): after a restart and a quiet second, no request meets a connection the restart closed.
#[tokio::test]
async fn after_a_database_restart_and_a_quiet_second_no_request_meets_a_closed_connection() {
    let mut postgres = PgServer::start().await;
    let app = spawn_app_with(config_on(&postgres).await).await;
    let (_, tokens) = signed_in(&app, "restart").await;
    // Reads at once, so that the pool holds more connections than the background tasks (the
    // projector polls twice a second) would use up during the quiet second.
    let before: Answers = Arc::default();
    read_sessions_at_once(&app, &tokens, &before).await;
    assert!(before
        .lock()
        .unwrap()
        .iter()
        .all(|answer| answer.status == StatusCode::OK));

    postgres.stop();
    postgres.resume().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let answers: Answers = Arc::default();
    read_sessions_at_once(&app, &tokens, &answers).await;
    every_operation(&app, &tokens, &answers).await;
    let failed: Vec<Answer> = answers
        .lock()
        .unwrap()
        .iter()
        .filter(|answer| answer.status.is_server_error())
        .cloned()
        .collect();
    assert!(
        failed.is_empty(),
        "answers a restart left behind: {failed:?}"
    );
}

/// Sixteen session lists read at once, each a database read of its own.
async fn read_sessions_at_once(app: &TestApp, tokens: &Value, answers: &Answers) {
    let access = tokens["access_token"].as_str().unwrap();
    let reads = (0..16).map(|_| {
        record(
            answers,
            "sessions",
            app.http
                .get(app.url("/auth/sessions"))
                .bearer_auth(access)
                .send(),
        )
    });
    futures::future::join_all(reads).await;
}
