//! Concurrent refreshes of one refresh token: within the grace period every one of them gets
//! the same live successor, and none of them revokes the session.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// Refreshes `token` from `clients` concurrent clients; returns every answer's status and body.
async fn race(app: &TestApp, token: &str, clients: usize) -> Vec<(StatusCode, Value)> {
    let refreshes = (0..clients).map(|_| async {
        let response = app
            .http
            .post(app.url("/auth/refresh"))
            .json(&json!({ "refresh_token": token }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json::<Value>().await.unwrap())
    });
    futures::future::join_all(refreshes).await
}

async fn concurrent_refreshes_all_get_one_live_successor(clients: usize) {
    let mut config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(default_nats_url()),
    );
    config.lifetimes.refresh_reuse_grace = 30;
    let app = spawn_app_with(config).await;
    let email = unique_email("race");
    app.signup(&signup_body(&email, None)).await;
    let tokens = app.login_expecting(&email, StatusCode::OK).await;
    let token = tokens["refresh_token"].as_str().unwrap();

    let answers = race(&app, token, clients).await;

    let refreshed: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .map(|(_, body)| body)
        .collect();
    for (status, body) in &answers {
        assert!(
            *status == StatusCode::OK
                || (*status == StatusCode::CONFLICT && body["code"] == "concurrency.conflict"),
            "a refresh within the grace period answered {status}: {body}"
        );
    }
    assert!(!refreshed.is_empty(), "no refresh succeeded: {answers:?}");
    let successors: BTreeSet<String> = refreshed
        .iter()
        .map(|body| claims_of(body["refresh_token"].as_str().unwrap())["jti"].to_string())
        .collect();
    assert_eq!(
        successors.len(),
        1,
        "one successor for every client: {successors:?}"
    );
    // Every token handed out is live: the access tokens work, and each refresh token refreshes
    // (the first of them rotates, the others repeat it within the grace period).
    for body in &refreshed {
        let access = body["access_token"].as_str().unwrap();
        assert_eq!(
            app.get_with("/auth/test-token", access).await.status(),
            StatusCode::OK
        );
    }
    for body in refreshed.iter().take(3) {
        let again = app
            .http
            .post(app.url("/auth/refresh"))
            .json(&json!({ "refresh_token": body["refresh_token"] }))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn three_concurrent_refreshes_of_one_token_get_the_same_live_successor() {
    concurrent_refreshes_all_get_one_live_successor(3).await;
}

#[tokio::test]
async fn fifty_concurrent_refreshes_of_one_token_get_the_same_live_successor() {
    concurrent_refreshes_all_get_one_live_successor(50).await;
}

#[tokio::test]
async fn a_rotated_token_presented_after_the_grace_period_still_revokes_the_session() {
    let mut config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(default_nats_url()),
    );
    config.lifetimes.refresh_reuse_grace = 1;
    let app = spawn_app_with(config).await;
    let email = unique_email("late");
    app.signup(&signup_body(&email, None)).await;
    let first = app.login_expecting(&email, StatusCode::OK).await;
    let refresh = |token: Value| {
        app.http
            .post(app.url("/auth/refresh"))
            .json(&json!({ "refresh_token": token }))
            .send()
    };
    let second: Value = refresh(first["refresh_token"].clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, body) = problem(refresh(first["refresh_token"].clone()).await.unwrap()).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "auth.refresh_token_reused");
    let revoked = refresh(second["refresh_token"].clone()).await.unwrap();
    assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);
}
