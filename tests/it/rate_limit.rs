//! The per-client rate limit of the endpoints callable without a token: one allowance shared
//! by every instance on the same database, IPv6 clients counted by their /64, and a database
//! outage on the limit's path answered 503 like any other.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use twofold_api::adapters::{SealingKey, XChaChaSealer};
use twofold_api::app::client_limit::{self, PgClientLimiter};

use crate::helpers::*;
use crate::pg_server::PgServer;

/// A Postgres-backed app allowing `per_minute` requests a minute per client, trusting the
/// loopback as a proxy.
async fn limited_app(per_minute: u32) -> TestApp {
    let mut config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(default_nats_url()),
    );
    config.http.ip_rate_limit = per_minute;
    config.http.trusted_proxies = "127.0.0.1".to_owned();
    spawn_app_with(config).await
}

/// A failed login to a fresh unknown address (so no account throttle is involved), as
/// `client` behind the loopback proxy, or as the loopback itself.
async fn login_as(app: &TestApp, client: Option<&str>) -> reqwest::Response {
    let email = unique_email("limited");
    let mut request = app.http.post(app.url("/auth/login")).form(&[
        ("username", email.as_str()),
        ("password", "whatever password"),
    ]);
    if let Some(client) = client {
        request = request.header("x-forwarded-for", client);
    }
    request.send().await.unwrap()
}

/// Asserts `response` is the rate limit's refusal, with a `Retry-After` of 1 to `at_most` s.
async fn assert_rate_limited(response: reqwest::Response, at_most: u64) {
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=at_most).contains(&retry_after), "{retry_after}");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "request.rate_limited");
}

#[tokio::test]
async fn two_instances_on_one_database_share_one_allowance() {
    let first = limited_app(5).await;
    let second = first.another_instance().await;
    let instances = [&first, &second];
    for turn in 0..5 {
        let response = login_as(instances[turn % 2], None).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "request {turn}"
        );
    }
    // The allowance is spent on both: not 5 more on the instance that saw only 2 or 3.
    for instance in instances {
        assert_rate_limited(login_as(instance, None).await, 12).await;
    }
    // Other clients are not affected.
    assert_eq!(
        login_as(&second, Some("203.0.113.77")).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_ipv6_client_is_counted_by_its_64_across_instances() {
    let first = limited_app(3).await;
    let second = first.another_instance().await;
    // Three addresses of one /64, through the proxy of either instance.
    for (app, client) in [
        (&first, "2001:db8:1:2::1"),
        (&second, "2001:db8:1:2::2"),
        (&first, "2001:db8:1:2:ffff:ffff:ffff:3"),
    ] {
        assert_eq!(
            login_as(app, Some(client)).await.status(),
            StatusCode::UNAUTHORIZED,
            "{client}"
        );
    }
    assert_rate_limited(login_as(&second, Some("2001:db8:1:2::4")).await, 20).await;
    // The next /64 has its own allowance.
    assert_eq!(
        login_as(&first, Some("2001:db8:1:3::1")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // An IPv4-mapped address is its IPv4 address.
    for client in ["203.0.113.5", "::ffff:203.0.113.5", "203.0.113.5"] {
        assert_eq!(
            login_as(&second, Some(client)).await.status(),
            StatusCode::UNAUTHORIZED,
            "{client}"
        );
    }
    assert_rate_limited(login_as(&first, Some("::ffff:203.0.113.5")).await, 20).await;
}

#[tokio::test]
async fn the_embedded_mode_keeps_limiting_and_counts_ipv6_by_64() {
    let mut config = test_config(Store::Embedded, None, None);
    config.http.ip_rate_limit = 2;
    config.http.trusted_proxies = "127.0.0.1".to_owned();
    let app = spawn_app_with(config).await;
    for client in ["2001:db8:5:6::1", "2001:db8:5:6::2"] {
        assert_eq!(
            login_as(&app, Some(client)).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_rate_limited(login_as(&app, Some("2001:db8:5:6::3")).await, 30).await;
    assert_eq!(
        login_as(&app, Some("2001:db8:5:7::1")).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn clients_are_stored_as_digests_and_whole_allowances_are_swept() {
    let app = limited_app(5).await;
    let db = app.db.as_ref().unwrap();
    assert_eq!(
        login_as(&app, Some("203.0.113.200")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let digests: Vec<String> = sqlx::query_scalar("SELECT client_digest FROM client_rate_limit")
        .fetch_all(db)
        .await
        .unwrap();
    assert_eq!(digests.len(), 1);
    assert!(!digests[0].contains("203.0.113"), "{digests:?}");

    // A client whose allowance was whole again a minute ago.
    sqlx::query(
        "INSERT INTO client_rate_limit (client_digest, whole_at) \
         VALUES ('spent long ago', now() - interval '1 minute')",
    )
    .execute(db)
    .await
    .unwrap();
    let sealer = Arc::new(XChaChaSealer::new(&SealingKey::generate(), &[]));
    let _sweeping = PgClientLimiter::start(
        db.clone(),
        sealer,
        NonZeroU32::new(5).unwrap(),
        Duration::from_millis(100),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left: Vec<String> = sqlx::query_scalar("SELECT client_digest FROM client_rate_limit")
        .fetch_all(db)
        .await
        .unwrap();
    assert_eq!(left, digests, "the expired row goes, the live one stays");
    assert_eq!(client_limit::sweep(db).await.unwrap(), 0);
}

#[tokio::test]
async fn a_database_outage_on_the_limits_path_answers_503_and_recovers() {
    let mut postgres = PgServer::start().await;
    let database = twofold_tests::scratch::create_database(&postgres.url())
        .await
        .unwrap();
    let mut config = test_config(Store::Postgres, Some(database), Some(default_nats_url()));
    config.http.ip_rate_limit = 100;
    let mut app = spawn_app_with(config).await;
    app.http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    assert_eq!(
        login_as(&app, None).await.status(),
        StatusCode::UNAUTHORIZED
    );

    postgres.stop();
    for _ in 0..2 {
        let response = login_as(&app, None).await;
        assert_eq!(
            response.headers().get("retry-after").unwrap(),
            "1",
            "a 503 says when to retry"
        );
        let (status, body) = problem(response).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["code"], "service.unavailable");
    }

    postgres.resume().await;
    let started = std::time::Instant::now();
    loop {
        let status = login_as(&app, None).await.status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(30), "no recovery");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
