//! Password management over HTTP: policy, change, forgotten-password reset.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const NEW_PASSWORD: &str = "an entirely new passphrase";

async fn refresh_status(app: &TestApp, tokens: &Value) -> StatusCode {
    app.http
        .post(app.url("/auth/refresh"))
        .json(&json!({ "refresh_token": tokens["refresh_token"] }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn common_passwords_are_refused_at_sign_up() {
    let app = spawn_app(Store::Embedded).await;
    let mut body = signup_body(&unique_email("common"), None);
    body["password"] = json!("Password1");
    let (status, problem_body) = problem(app.signup(&body).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_body["code"], "user.password_too_common");
}

#[tokio::test]
async fn a_password_change_needs_the_current_one_and_ends_the_other_sessions() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("change");
    app.signup(&signup_body(&email, None)).await;
    let here = app.login_expecting(&email, StatusCode::OK).await;
    let elsewhere = app.login_expecting(&email, StatusCode::OK).await;
    let change = |current: &str| {
        app.http
            .put(app.url("/auth/password"))
            .bearer_auth(here["access_token"].as_str().unwrap())
            .json(&json!({ "current_password": current, "new_password": NEW_PASSWORD }))
            .send()
    };

    let (status, body) = problem(change("not the password").await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "auth.wrong_password");
    assert_eq!(
        change(PASSWORD).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    app.wait_for_email(&email, "Your Twofold password was changed")
        .await;

    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&email, NEW_PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        refresh_status(&app, &elsewhere).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(refresh_status(&app, &here).await, StatusCode::OK);
}

pub fn reset_token(email_text: &str) -> String {
    email_text
        .lines()
        .map(str::trim)
        .find(|line| {
            line.len() == 43
                && line
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .expect("a reset token in the email")
        .to_owned()
}

#[tokio::test]
async fn a_forgotten_password_is_reset_once_with_the_emailed_token_and_2fa_still_applies() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("forgot");
    app.signup(&signup_body(&email, Some("code_generator")))
        .await;
    let forgot = |address: String| {
        app.http
            .post(app.url("/auth/forgot-password"))
            .json(&json!({ "email": address }))
            .send()
    };
    let known = forgot(email.clone()).await.unwrap();
    let unknown = forgot(unique_email("nobody")).await.unwrap();
    assert_eq!(known.status(), StatusCode::ACCEPTED);
    assert_eq!(unknown.status(), StatusCode::ACCEPTED);
    assert_eq!(known.text().await.unwrap(), unknown.text().await.unwrap());

    let token = reset_token(
        &app.wait_for_email(&email, "Reset your Twofold password")
            .await,
    );
    let reset = |token: String| {
        app.http
            .post(app.url("/auth/reset-password"))
            .json(&json!({ "email": email, "token": token, "new_password": NEW_PASSWORD }))
            .send()
    };
    let (status, body) = problem(reset("wrong".repeat(9)).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "auth.reset_token_invalid");
    assert_eq!(
        reset(token.clone()).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let notice = app
        .wait_for_email(&email, "Your Twofold password was changed")
        .await;
    assert!(notice.contains("reset with an emailed token"));
    let (_, body) = problem(reset(token).await.unwrap()).await;
    assert_eq!(
        body["code"], "auth.reset_token_invalid",
        "a token works once"
    );

    // The new password opens only the first step: the second factor is still required.
    let response = app.login(&email, NEW_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
