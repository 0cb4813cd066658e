//! Managing the second factor over HTTP: backup codes counted and regenerated, device
//! switched, 2FA turned off; each needing a current second factor, each sending a notice.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

fn backup_code_sets(app: &TestApp, email: &str) -> Vec<Vec<String>> {
    app.emails_to(email)
        .iter()
        .filter(|text| text.contains("Subject: Your Twofold backup codes"))
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|line| line.len() == 29 && line.split('-').count() == 6)
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn second_factor_management_needs_a_current_factor_and_sends_notices() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("manage");
    let seed = app.signup_with_authenticator(&email).await;
    let old_codes = app.backup_codes(&email).await;
    let pre_tfa = app.login_expecting(&email, StatusCode::ACCEPTED).await;
    let tokens: Value = app
        .post_with(
            &format!("/tfa/login_tfa?tfa_token={}", current_code(&seed)),
            pre_tfa["access_token"].as_str().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();

    // Count, then regenerate with a backup code as the proof: the old set stops working.
    let left: Value = app
        .get_with("/tfa/backup_codes", &access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(left["remaining"], 5);
    let regenerate = |code: &str| {
        app.http
            .post(app.url("/tfa/backup_codes"))
            .bearer_auth(&access)
            .json(&json!({ "code": code }))
            .send()
    };
    let (status, body) = problem(regenerate("NOT0-A0CO-DE00").await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "tfa.invalid_code");
    assert_eq!(
        regenerate(&old_codes[0]).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let mut new_codes = Vec::new();
    for _ in 0..200 {
        if let Some(set) = backup_code_sets(&app, &email)
            .into_iter()
            .find(|set| set != &old_codes)
        {
            new_codes = set;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(new_codes.len(), 5);
    let pre_tfa = app.login_expecting(&email, StatusCode::ACCEPTED).await;
    let pre_tfa = pre_tfa["access_token"].as_str().unwrap();
    let stale = app
        .post_with(
            &format!("/tfa/recover_tfa?tfa_backup_token={}", old_codes[1]),
            pre_tfa,
        )
        .await;
    assert_eq!(stale.status(), StatusCode::FORBIDDEN);

    // Switch to email: the password and a current factor are both needed.
    let switch = |password: &str, code: &str| {
        app.http
            .put(app.url("/tfa/switch_device"))
            .bearer_auth(&access)
            .json(&json!({ "password": password, "code": code, "device_type": "email" }))
            .send()
    };
    let (status, body) = problem(switch("wrong password!", &new_codes[0]).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "auth.wrong_password");
    let switched = switch(PASSWORD, &new_codes[0]).await.unwrap();
    assert_eq!(switched.status(), StatusCode::OK);
    app.wait_for_email(&email, "Two-factor authentication is on")
        .await;
    let me: Value = app
        .get_with("/auth/test-token", &access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["device"]["device_type"], "email");

    // Turn it off with a backup code of the new set: the next login needs the password only.
    let email_codes = {
        let sets = backup_code_sets(&app, &email);
        sets.into_iter()
            .find(|set| set != &old_codes && set != &new_codes)
            .unwrap()
    };
    let disabled = app
        .http
        .post(app.url("/tfa/disable_tfa"))
        .bearer_auth(&access)
        .json(&json!({ "password": PASSWORD, "code": email_codes[0] }))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), StatusCode::NO_CONTENT);
    app.wait_for_email(&email, "Two-factor authentication is off")
        .await;
    app.login_expecting(&email, StatusCode::OK).await;
}
