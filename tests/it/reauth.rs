//! Re-authentication over HTTP: the authenticator app's QR code and the end of other sessions
//! need a recent full sign-in or the proofs, and an email-device user proves their factor with
//! a confirmation code they ask for.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

/// Seconds after a sign-in during which no proofs are needed, short for these tests.
const WINDOW: u64 = 3;

async fn spawn_with_short_window() -> TestApp {
    let mut config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(default_nats_url()),
    );
    config.lifetimes.reauth_window = WINDOW;
    let mut app = spawn_app_with(config).await;
    app.start_mailer();
    app
}

/// Waits until the sign-ins of the tests' sessions are older than the window.
async fn outlive_the_window() {
    tokio::time::sleep(Duration::from_secs(WINDOW + 2)).await;
}

async fn post_json(app: &TestApp, path: &str, token: &str, body: &Value) -> Response {
    app.http
        .post(app.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn delete_with(app: &TestApp, path: &str, token: &str) -> Response {
    app.http
        .delete(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Response {
    app.http
        .post(app.url("/auth/refresh"))
        .json(&json!({ "refresh_token": refresh_token }))
        .send()
        .await
        .unwrap()
}

fn token(tokens: &Value, name: &str) -> String {
    tokens[name].as_str().unwrap().to_owned()
}

async fn assert_problem(response: Response, status: StatusCode, code: &str) {
    let (actual, body) = problem(response).await;
    assert_eq!(
        (actual, body["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
}

/// Fails the password proof until the password factor is locked (after `failed_before`
/// earlier failures), then checks the lock.
async fn lock_the_password_with(failed_before: usize, send: impl AsyncFn() -> Response) {
    for _ in failed_before..5 {
        assert_problem(send().await, StatusCode::FORBIDDEN, "auth.wrong_password").await;
    }
    let locked = send().await;
    assert!(locked.headers().contains_key("retry-after"));
    assert_problem(locked, StatusCode::TOO_MANY_REQUESTS, "auth.locked").await;
}

#[tokio::test]
async fn the_qr_code_is_shown_within_the_window_after_a_sign_in_and_then_only_with_the_proofs() {
    let app = spawn_with_short_window().await;
    let email = unique_email("qr-reauth");
    let seed = app.signup_with_authenticator(&email).await;
    let backup_codes = app.backup_codes(&email).await;
    let pre_tfa = app.login_token(&email, StatusCode::ACCEPTED).await;
    let login = app
        .post_with(
            &format!("/tfa/login_tfa?tfa_token={}", current_code(&seed)),
            &pre_tfa,
        )
        .await;
    assert_eq!(login.status(), StatusCode::OK);
    let tokens: Value = login.json().await.unwrap();

    // Right after the sign-in, as the original's clients do it.
    let shown = app
        .get_with("/tfa/get_my_qrcode", &token(&tokens, "access_token"))
        .await;
    assert_eq!(shown.status(), StatusCode::OK);
    let png = shown.bytes().await.unwrap();
    assert_eq!(seed_from_uri(&otpauth_uri_from_png(&png)), seed);

    // A refresh does not renew the sign-in.
    outlive_the_window().await;
    let refreshed = refresh(&app, &token(&tokens, "refresh_token")).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let access = token(&refreshed.json().await.unwrap(), "access_token");
    let (status, body) = problem(app.get_with("/tfa/get_my_qrcode", &access).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "reauthentication.required");
    assert!(body["detail"].as_str().unwrap().contains("password"));

    // The proofs: wrong ones are refused, the right ones show the code again.
    let with_proofs = |body: Value| {
        let (app, access) = (&app, &access);
        async move { post_json(app, "/tfa/get_my_qrcode", access, &body).await }
    };
    assert_problem(
        with_proofs(json!({ "password": PASSWORD })).await,
        StatusCode::BAD_REQUEST,
        "tfa.code_required",
    )
    .await;
    assert_problem(
        with_proofs(json!({ "password": PASSWORD, "code": "NOT0-A0CO-DE00" })).await,
        StatusCode::FORBIDDEN,
        "tfa.invalid_code",
    )
    .await;
    let shown = with_proofs(json!({ "password": PASSWORD, "code": backup_codes[0] })).await;
    assert_eq!(shown.status(), StatusCode::OK);
    let png = shown.bytes().await.unwrap();
    assert_eq!(seed_from_uri(&otpauth_uri_from_png(&png)), seed);
    // The backup code was spent on it.
    assert_problem(
        with_proofs(json!({ "password": PASSWORD, "code": backup_codes[0] })).await,
        StatusCode::FORBIDDEN,
        "tfa.invalid_code",
    )
    .await;

    // Wrong passwords are throttled as for every sensitive change.
    lock_the_password_with(0, async || {
        with_proofs(json!({ "password": "not the password", "code": backup_codes[1] })).await
    })
    .await;
}

#[tokio::test]
async fn other_sessions_end_within_the_window_after_a_sign_in_and_then_only_with_the_proofs() {
    let app = spawn_with_short_window().await;
    let email = unique_email("sessions-reauth");
    app.signup(&signup_body(&email, None)).await;
    let mut logins = Vec::new();
    for _ in 0..4 {
        logins.push(app.login_expecting(&email, StatusCode::OK).await);
    }
    let caller = token(&logins[0], "access_token");
    let session_of = |login: &Value| {
        claims_of(&token(login, "access_token"))["sid"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // Within the window the DELETEs work as they always did.
    let ended = delete_with(
        &app,
        &format!("/auth/sessions/{}", session_of(&logins[1])),
        &caller,
    )
    .await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);

    // After it they are refused, and nothing ends.
    outlive_the_window().await;
    assert_problem(
        delete_with(&app, "/auth/sessions", &caller).await,
        StatusCode::FORBIDDEN,
        "reauthentication.required",
    )
    .await;
    assert_problem(
        delete_with(
            &app,
            &format!("/auth/sessions/{}", session_of(&logins[2])),
            &caller,
        )
        .await,
        StatusCode::FORBIDDEN,
        "reauthentication.required",
    )
    .await;
    // The caller's own session is a logout, which needs no proof.
    let refreshed = refresh(&app, &token(&logins[2], "refresh_token")).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    logins[2] = refreshed.json().await.unwrap();

    // With the proofs: one session, then all the others.
    assert_problem(
        post_json(
            &app,
            &format!("/auth/sessions/{}/end", session_of(&logins[2])),
            &caller,
            &json!({ "password": "not the password" }),
        )
        .await,
        StatusCode::FORBIDDEN,
        "auth.wrong_password",
    )
    .await;
    let ended = post_json(
        &app,
        &format!("/auth/sessions/{}/end", session_of(&logins[2])),
        &caller,
        &json!({ "password": PASSWORD }),
    )
    .await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        refresh(&app, &token(&logins[2], "refresh_token"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&app, &token(&logins[3], "refresh_token"))
            .await
            .status(),
        StatusCode::OK
    );
    let ended = post_json(
        &app,
        "/auth/sessions/end_others",
        &caller,
        &json!({ "password": PASSWORD }),
    )
    .await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let listed: Value = app
        .get_with("/auth/sessions", &caller)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1, "{listed}");

    // Wrong passwords are throttled as for every sensitive change.
    lock_the_password_with(1, async || {
        post_json(
            &app,
            "/auth/sessions/end_others",
            &caller,
            &json!({ "password": "not the password" }),
        )
        .await
    })
    .await;
}

#[tokio::test]
async fn an_email_device_user_without_backup_codes_turns_tfa_off_with_an_emailed_code() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("email-reauth");
    app.signup(&signup_body(&email, Some("email"))).await;
    let backup_codes = app.backup_codes(&email).await;
    let pre_tfa = app.login_token(&email, StatusCode::ACCEPTED).await;
    let login_code = app.login_codes(&email, 1).await.remove(0);
    let login = app
        .post_with(&format!("/tfa/login_tfa?tfa_token={login_code}"), &pre_tfa)
        .await;
    assert_eq!(login.status(), StatusCode::OK);
    let access = token(&login.json().await.unwrap(), "access_token");

    // Every backup code is spent, as proofs for ending the other sessions.
    for code in &backup_codes {
        let ended = post_json(
            &app,
            "/auth/sessions/end_others",
            &access,
            &json!({ "password": PASSWORD, "code": code }),
        )
        .await;
        assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    }
    let left: Value = app
        .get_with("/tfa/backup_codes", &access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(left["remaining"], 0);

    // The login code proves nothing here.
    let disable = |code: String| {
        let (app, access) = (&app, &access);
        async move {
            post_json(
                app,
                "/tfa/disable_tfa",
                access,
                &json!({ "password": PASSWORD, "code": code }),
            )
            .await
        }
    };
    assert_problem(
        disable(login_code).await,
        StatusCode::FORBIDDEN,
        "tfa.invalid_code",
    )
    .await;

    // A confirmation code, one a minute.
    let asked = app.post_with("/tfa/email_code", &access).await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let again = app.post_with("/tfa/email_code", &access).await;
    assert!(again.headers().contains_key("retry-after"));
    assert_problem(
        again,
        StatusCode::TOO_MANY_REQUESTS,
        "tfa.email_code_too_soon",
    )
    .await;
    let mail = app
        .wait_for_email(&email, "Your Twofold confirmation code: ")
        .await;
    let code = mail
        .lines()
        .find_map(|line| line.strip_prefix("Subject: Your Twofold confirmation code: "))
        .unwrap()
        .trim()
        .to_owned();

    let disabled = disable(code).await;
    assert_eq!(disabled.status(), StatusCode::NO_CONTENT);
    app.wait_for_email(&email, "Two-factor authentication is off")
        .await;
    app.login_expecting(&email, StatusCode::OK).await;
}
