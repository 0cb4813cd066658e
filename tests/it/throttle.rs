//! Brute-force throttling and double-spend protection, over HTTP on the real stack.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn five_wrong_passwords_lock_the_password_on_every_instance() {
    let first = spawn_app(Store::Postgres).await;
    let second = first.another_instance().await;
    let email = unique_email("locked");
    first.signup(&signup_body(&email, None)).await;

    for _ in 0..5 {
        let wrong = first.login(&email, "not the password").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    // The right password on the other instance: refused without being checked.
    let locked = second.login(&email, PASSWORD).await;
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (status, body) = problem(locked).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "auth.locked");
    // A wrong password gets the same answer: the lock reveals nothing.
    let (status, wrong_body) = problem(first.login(&email, "still not it").await).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(wrong_body["code"], body["code"]);
}

/// Every answer to `attempts` logins with a wrong password, split over two instances, then
/// one more: status, `Retry-After` and body.
async fn lockout_answers(
    first: &TestApp,
    second: &TestApp,
    email: &str,
) -> Vec<(StatusCode, Option<String>, Value)> {
    let mut answers = Vec::new();
    for attempt in 0..6 {
        let app = if attempt % 2 == 0 { first } else { second };
        let response = app.login(email, "not the password").await;
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap().to_owned());
        let (status, body) = problem(response).await;
        answers.push((status, retry_after, body));
    }
    answers
}

#[tokio::test]
async fn a_lockout_answers_alike_whether_or_not_the_account_exists() {
    let first = spawn_app(Store::Postgres).await;
    let second = first.another_instance().await;
    let known = unique_email("exists");
    first.signup(&signup_body(&known, None)).await;

    let for_known = lockout_answers(&first, &second, &known).await;
    let for_unknown = lockout_answers(&first, &second, &unique_email("nobody")).await;
    let statuses: Vec<_> = for_unknown.iter().map(|answer| answer.0).collect();
    assert_eq!(
        statuses,
        [
            [StatusCode::UNAUTHORIZED; 5].as_slice(),
            &[StatusCode::TOO_MANY_REQUESTS]
        ]
        .concat(),
        "an address with no account locks after five failures too, across instances"
    );
    for (known, unknown) in for_known.iter().zip(&for_unknown) {
        assert_eq!(known.0, unknown.0);
        assert_eq!(known.1.is_some(), unknown.1.is_some());
        assert_eq!(known.2, unknown.2, "the same body");
    }
}

#[tokio::test]
async fn failing_the_second_factor_locks_neither_the_password_nor_the_backup_codes() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("tfa-locked");
    let seed = app.signup_with_authenticator(&email).await;
    let backup_codes = app.backup_codes(&email).await;

    let pre_tfa = app.login_token(&email, StatusCode::ACCEPTED).await;
    let code = current_code(&seed);
    let wrong = format!(
        "{:06}",
        (code.parse::<u32>().unwrap() + 500_000) % 1_000_000
    );
    for _ in 0..5 {
        let response = app
            .post_with(&format!("/tfa/login_tfa?tfa_token={wrong}"), &pre_tfa)
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }

    // The password still works; the authenticator code is locked even when right.
    let pre_tfa = app.login_token(&email, StatusCode::ACCEPTED).await;
    let refused = app
        .post_with(
            &format!("/tfa/login_tfa?tfa_token={}", current_code(&seed)),
            &pre_tfa,
        )
        .await;
    assert!(refused.headers().contains_key("retry-after"));
    let (status, body) = problem(refused).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "auth.locked");
    // A backup code still gets the user in.
    let recovered = app
        .post_with(
            &format!("/tfa/recover_tfa?tfa_backup_token={}", backup_codes[0]),
            &pre_tfa,
        )
        .await;
    assert_eq!(recovered.status(), StatusCode::OK);
    app.wait_for_email(&email, "A backup code was used").await;
}

#[tokio::test]
async fn of_fifty_concurrent_second_steps_with_one_totp_code_exactly_one_succeeds() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("totp-race");
    let seed = app.signup_with_authenticator(&email).await;
    let mut tokens = Vec::new();
    for _ in 0..50 {
        tokens.push(app.login_token(&email, StatusCode::ACCEPTED).await);
    }
    let code = current_code(&seed);
    let attempts = tokens.iter().map(|token| {
        let app = &app;
        let path = format!("/tfa/login_tfa?tfa_token={code}");
        async move { app.post_with(&path, token).await }
    });
    let responses = futures::future::join_all(attempts).await;
    let mut succeeded = 0;
    for response in responses {
        let status = response.status();
        if status == StatusCode::OK {
            succeeded += 1;
        } else {
            let (_, body) = problem(response).await;
            assert!(!status.is_server_error(), "{status}: {body}");
            assert_eq!(body["code"], "tfa.code_replayed", "{status}: {body}");
        }
    }
    assert_eq!(succeeded, 1);
}

#[tokio::test]
async fn of_fifty_concurrent_recoveries_with_one_backup_code_exactly_one_succeeds() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("backup-race");
    app.signup(&signup_body(&email, Some("code_generator")))
        .await;
    let backup_codes = app.backup_codes(&email).await;
    let mut tokens = Vec::new();
    for _ in 0..50 {
        tokens.push(app.login_token(&email, StatusCode::ACCEPTED).await);
    }
    let attempts = tokens.iter().map(|token| {
        let app = &app;
        let path = format!("/tfa/recover_tfa?tfa_backup_token={}", backup_codes[2]);
        async move { app.post_with(&path, token).await }
    });
    let responses = futures::future::join_all(attempts).await;
    let mut succeeded = 0;
    for response in responses {
        let status = response.status();
        if status == StatusCode::OK {
            succeeded += 1;
        } else {
            let body: Value = response.json().await.unwrap();
            assert!(!status.is_server_error(), "{status}: {body}");
        }
    }
    assert_eq!(succeeded, 1);
    // The spent code stays spent; the others still work.
    let pre_tfa = app.login_token(&email, StatusCode::ACCEPTED).await;
    let again = app
        .post_with(
            &format!("/tfa/recover_tfa?tfa_backup_token={}", backup_codes[2]),
            &pre_tfa,
        )
        .await;
    assert_ne!(again.status(), StatusCode::OK);
}
