//! No user enumeration at sign-up when it conceals existing accounts
//! (`TWOFOLD_SIGNUP_EXISTING_EMAIL=conceal`): a taken address gets a new account's answer, and
//! its owner an email; nothing about the account changes.

use reqwest::StatusCode;
use twofold_api::config::ExistingEmail;

use crate::helpers::*;

async fn concealing_app() -> TestApp {
    let mut config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(default_nats_url()),
    );
    config.accounts.signup_existing_email = ExistingEmail::Conceal;
    let mut app = spawn_app_with(config).await;
    app.start_mailer();
    app
}

/// Status, content type and body of a sign-up.
async fn answer(app: &TestApp, email: &str, device: Option<&str>) -> (StatusCode, String, Vec<u8>) {
    let mut body = signup_body(email, device);
    body["password"] = "a different passphrase".into();
    let response = app.signup(&body).await;
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        response.status(),
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

#[tokio::test]
async fn a_taken_address_gets_a_new_accounts_answer_and_its_owner_an_email() {
    let app = concealing_app().await;
    let owner = unique_email("owner");
    assert_eq!(
        app.signup(&signup_body(&owner, None)).await.status(),
        StatusCode::OK
    );

    // Without 2FA: the same status, type and (empty) body as a new address.
    assert_eq!(
        answer(&app, &owner, None).await,
        answer(&app, &unique_email("new"), None).await
    );
    // With an authenticator app: a QR code either way, for a seed nobody stored.
    let (status, content_type, png) = answer(&app, &owner, Some("code_generator")).await;
    let (new_status, new_content_type, new_png) =
        answer(&app, &unique_email("new"), Some("code_generator")).await;
    assert_eq!((status, &content_type), (new_status, &new_content_type));
    assert_eq!(content_type, "image/png");
    assert!(otpauth_uri_from_png(&png).starts_with("otpauth://totp/"));
    assert!(otpauth_uri_from_png(&new_png).starts_with("otpauth://totp/"));

    // The account did not change: its password still logs in with no second factor, and
    // the attempts' password does not.
    app.login_token(&owner, StatusCode::OK).await;
    assert_eq!(
        app.login(&owner, "a different passphrase").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // The owner is told once, however many attempts came within the notice interval.
    app.wait_for_email(&owner, "Someone tried to sign up with your address")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let notices = app
        .emails_to(&owner)
        .into_iter()
        .filter(|email| email.contains("Subject: Someone tried to sign up"))
        .count();
    assert_eq!(notices, 1);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'SignUpAttempted'")
            .fetch_one(app.db.as_ref().unwrap())
            .await
            .unwrap();
    assert_eq!(
        stored, 1,
        "attempts within the interval are not stored either"
    );
}
