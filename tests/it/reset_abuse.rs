//! Password reset cannot be turned against a user: repeated requests for one address send one
//! email and leave its token working, a flood of them does not slow the owner down, and the
//! answer is the same for known and unknown addresses.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use crate::password::reset_token;

const RESET_SUBJECT: &str = "Reset your Twofold password";

async fn forgot(app: &TestApp, email: &str) -> (StatusCode, String) {
    let response = app
        .http
        .post(app.url("/auth/forgot-password"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

fn reset_emails(app: &TestApp, email: &str) -> Vec<String> {
    app.emails_to(email)
        .into_iter()
        .filter(|text| text.contains(&format!("Subject: {RESET_SUBJECT}")))
        .collect()
}

#[tokio::test]
async fn repeated_reset_requests_send_one_email_and_its_token_keeps_working() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("victim");
    app.signup(&signup_body(&email, None)).await;

    let first = forgot(&app, &email).await;
    let token = reset_token(&app.wait_for_email(&email, RESET_SUBJECT).await);
    let mut answers = vec![first];
    for _ in 0..4 {
        answers.push(forgot(&app, &email).await);
    }
    let unknown = forgot(&app, &unique_email("nobody")).await;
    // Give any further email time to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;

    for answer in &answers {
        assert_eq!(answer, &unknown, "known and unknown addresses answer alike");
    }
    assert_eq!(unknown.0, StatusCode::ACCEPTED);
    assert_eq!(
        reset_emails(&app, &email).len(),
        1,
        "one email within the cooldown"
    );
    let reset = app
        .http
        .post(app.url("/auth/reset-password"))
        .json(&json!({ "email": email, "token": token, "new_password": "an entirely new passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reset.status(),
        StatusCode::NO_CONTENT,
        "the pending token still works"
    );
}

#[tokio::test]
async fn a_flood_of_reset_requests_for_one_address_does_not_slow_its_owner_down() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("flooded");
    app.signup(&signup_body(&email, None)).await;
    let mut usual = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        app.login_expecting(&email, StatusCode::OK).await;
        usual = usual.max(started.elapsed());
    }

    // The answers come at once; the work they queued runs behind them, while the owner logs in.
    let answers = futures::future::join_all((0..1000).map(|_| forgot(&app, &email))).await;
    let started = Instant::now();
    app.login_expecting(&email, StatusCode::OK).await;
    let during = started.elapsed();

    assert!(answers
        .iter()
        .all(|(status, _)| *status == StatusCode::ACCEPTED));
    assert!(
        during < usual * 5 + Duration::from_secs(1),
        "a login took {during:?} during the flood (usually {usual:?})"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reset_emails(&app, &email).len(), 1);
}
