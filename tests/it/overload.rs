//! Logins beyond the hash pool's bounded queue: a fast 503 `service.busy` with `Retry-After`,
//! and the pool serves again once the flood is over.

use futures::future::join_all;
use reqwest::StatusCode;
use twofold_api::adapters::Argon2Params;

use crate::helpers::{
    default_nats_url, fresh_database, problem, signup_body, spawn_app_with, test_config,
    unique_email, Store, PASSWORD,
};

#[tokio::test]
async fn logins_beyond_the_hash_queue_get_service_busy_with_retry_after() {
    let mut config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(default_nats_url()),
    );
    // One hash at a time and one waiting; each hash slow enough (19 MiB, 8 passes) that the
    // flood below finds the worker busy and the queue full.
    config.argon2.workers = Some(1);
    config.argon2.queue = 1;
    config.argon2.memory_kib = Argon2Params::OWASP_MINIMUM.memory_kib;
    config.argon2.iterations = 8;
    config.argon2.parallelism = 1;
    let app = spawn_app_with(config).await;
    let email = unique_email("overload");
    assert_eq!(
        app.signup(&signup_body(&email, None)).await.status(),
        StatusCode::OK
    );

    let flood = (0..24).map(|_| app.login(&email, PASSWORD));
    let responses = join_all(flood).await;
    let mut busy = 0;
    let mut logged_in = 0;
    for response in responses {
        match response.status() {
            StatusCode::OK => logged_in += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u64>().ok());
                assert!(
                    retry_after.is_some_and(|seconds| seconds > 0),
                    "Retry-After: {retry_after:?}"
                );
                let (_, body) = problem(response).await;
                assert_eq!(body["code"], "service.busy", "{body}");
            }
            other => panic!("a login answered {other}"),
        }
    }
    assert!(busy > 0, "no login was turned away ({logged_in} logged in)");
    assert!(logged_in > 0, "every login was turned away");

    // The queue drains and the next login is served.
    app.login_expecting(&email, StatusCode::OK).await;
}
