//! The whole journey of the original API, as a client walks it, on both stores.

use reqwest::StatusCode;
use serde_json::Value;
use twofold_api::app::admin::GrantOutcome;
use twofold_api::operator::grant_admin;

use crate::helpers::*;

#[tokio::test]
async fn the_whole_journey_works_on_postgres() {
    let app = spawn_app(Store::Postgres).await;
    journey(&app).await;
    admin_listing(&app).await;
}

#[tokio::test]
async fn the_whole_journey_works_in_the_embedded_mode() {
    let app = spawn_app(Store::Embedded).await;
    journey(&app).await;
}

pub async fn journey(app: &TestApp) {
    without_tfa(app).await;
    with_a_code_generator(app).await;
    with_an_email_device(app).await;
    enabling_tfa_later(app).await;
    test_email_task(app).await;
}

async fn without_tfa(app: &TestApp) {
    let email = unique_email("plain");
    let response = app.signup(&signup_body(&email, None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap().is_empty());

    let tokens = app.login_expecting(&email, StatusCode::OK).await;
    assert_eq!(tokens["token_type"], "bearer");
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    let me: Value = app
        .get_with("/auth/test-token", access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], email.as_str());
    assert_eq!(me["full_name"], "Ada Lovelace");
    assert_eq!(me["tfa_enabled"], false);
    assert_eq!(me["device"], Value::Null);
    assert!(me["id"].is_string());

    let refreshed = app
        .http
        .post(app.url("/auth/refresh"))
        .json(&serde_json::json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.unwrap();
    let new_access = refreshed["access_token"].as_str().unwrap();
    assert!(refreshed["refresh_token"].is_string());
    let again = app.get_with("/auth/test-token", new_access).await;
    assert_eq!(again.status(), StatusCode::OK);

    // No QR code without an authenticator app.
    let (status, body) = problem(app.get_with("/tfa/get_my_qrcode", access).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "tfa.no_code_generator");
}

async fn with_a_code_generator(app: &TestApp) {
    let email = unique_email("totp");
    let response = app
        .signup(&signup_body(&email, Some("code_generator")))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/png");
    let uri = otpauth_uri_from_png(&response.bytes().await.unwrap());
    assert!(uri.starts_with("otpauth://totp/Twofold:totp-"), "{uri}");
    assert!(uri.ends_with("&issuer=Twofold"), "{uri}");
    assert!(!uri.contains("period="), "{uri}");
    let seed = seed_from_uri(&uri);
    assert!(seed.len() >= 20, "at least 160 bits");

    let backup_codes = app.backup_codes(&email).await;
    assert_eq!(backup_codes.len(), 5);

    // Password step: a pre-2FA token and no refresh token, with 202.
    let pending = app.login_expecting(&email, StatusCode::ACCEPTED).await;
    assert_eq!(pending["refresh_token"], Value::Null);
    let pre_tfa = pending["access_token"].as_str().unwrap().to_owned();
    let (status, body) = problem(app.get_with("/auth/test-token", &pre_tfa).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "auth.invalid_token");

    // A wrong code is 403; the right one gives the token pair.
    let code = current_code(&seed);
    let wrong_code = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let wrong = app
        .post_with(&format!("/tfa/login_tfa?tfa_token={wrong_code}"), &pre_tfa)
        .await;
    let (status, body) = problem(wrong).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "tfa.invalid_code");
    let done = app
        .post_with(&format!("/tfa/login_tfa?tfa_token={code}"), &pre_tfa)
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let tokens: Value = done.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let me: Value = app
        .get_with("/auth/test-token", access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["tfa_enabled"], true);
    assert_eq!(me["device"]["device_type"], "code_generator");
    assert!(me["device"]["id"].is_string());

    // The QR code can be fetched again and holds the same seed.
    let qr = app.get_with("/tfa/get_my_qrcode", access).await;
    assert_eq!(qr.status(), StatusCode::OK);
    assert_eq!(qr.headers()["content-type"], "image/png");
    let again = otpauth_uri_from_png(&qr.bytes().await.unwrap());
    assert_eq!(seed_from_uri(&again), seed);

    // A backup code works once.
    let pre_tfa = app.login_token(&email, StatusCode::ACCEPTED).await;
    let recovered = app
        .post_with(
            &format!("/tfa/recover_tfa?tfa_backup_token={}", backup_codes[0]),
            &pre_tfa,
        )
        .await;
    assert_eq!(recovered.status(), StatusCode::OK);
    let pre_tfa = app.login_token(&email, StatusCode::ACCEPTED).await;
    let reused = app
        .post_with(
            &format!("/tfa/recover_tfa?tfa_backup_token={}", backup_codes[0]),
            &pre_tfa,
        )
        .await;
    let (status, body) = problem(reused).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "tfa.invalid_backup_code");

    // Enabling 2FA again is refused.
    let (status, body) = problem(app.enable_tfa(access, "email").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "tfa.already_enabled");
}

async fn with_an_email_device(app: &TestApp) {
    let email = unique_email("mail");
    let response = app.signup(&signup_body(&email, Some("email"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap().is_empty());
    assert_eq!(app.backup_codes(&email).await.len(), 5);

    let pre_tfa = app.login_token(&email, StatusCode::ACCEPTED).await;
    let codes = app.login_codes(&email, 1).await;
    assert_eq!(codes.len(), 1);
    assert_eq!(codes[0].len(), 6);
    let done = app
        .post_with(&format!("/tfa/login_tfa?tfa_token={}", codes[0]), &pre_tfa)
        .await;
    assert_eq!(done.status(), StatusCode::OK);

    // The emailed code is spent with its challenge.
    let again = app
        .post_with(&format!("/tfa/login_tfa?tfa_token={}", codes[0]), &pre_tfa)
        .await;
    let (status, body) = problem(again).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "tfa.challenge_closed");
}

async fn enabling_tfa_later(app: &TestApp) {
    let email = unique_email("later");
    app.signup(&signup_body(&email, None)).await;
    let tokens = app.login_expecting(&email, StatusCode::OK).await;
    let access = tokens["access_token"].as_str().unwrap();

    let response = app.enable_tfa(access, "code_generator").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/png");
    let seed = seed_from_uri(&otpauth_uri_from_png(&response.bytes().await.unwrap()));
    assert_eq!(app.backup_codes(&email).await.len(), 5);

    // The next login needs the second factor at once: the change committed before the answer.
    let pre_tfa = app.login_token(&email, StatusCode::ACCEPTED).await;
    let code = current_code(&seed);
    let done = app
        .post_with(&format!("/tfa/login_tfa?tfa_token={code}"), &pre_tfa)
        .await;
    assert_eq!(done.status(), StatusCode::OK);
}

async fn test_email_task(app: &TestApp) {
    let email = unique_email("task");
    app.signup(&signup_body(&email, None)).await;
    let tokens = app.login_expecting(&email, StatusCode::OK).await;
    let access = tokens["access_token"].as_str().unwrap();

    let created: Value = app
        .get_with("/tasks/test-celery", access)
        .await
        .json()
        .await
        .unwrap();
    let task_id = created["task_id"].as_str().unwrap().to_owned();
    app.wait_for_email(&email, "Twofold test email").await;
    let status: Value = app
        .get_with(&format!("/tasks/taskstatus?task_id={task_id}"), access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "SUCCESS");

    // Another user cannot see it.
    let other = unique_email("other");
    app.signup(&signup_body(&other, None)).await;
    let other_tokens = app.login_expecting(&other, StatusCode::OK).await;
    let response = app
        .get_with(
            &format!("/tasks/taskstatus?task_id={task_id}"),
            other_tokens["access_token"].as_str().unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // A missing task id is 422, as in the original.
    let (status, body) = problem(app.get_with("/tasks/taskstatus", access).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "request.invalid_query");
}

pub async fn admin_listing(app: &TestApp) {
    let email = unique_email("admin");
    app.signup(&signup_body(&email, None)).await;
    let tokens = app.login_expecting(&email, StatusCode::OK).await;
    let access = tokens["access_token"].as_str().unwrap();

    let (status, body) = problem(app.get_with("/users/users", access).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "auth.admin_only");

    let outcome = grant_admin(&app.config, &email.to_uppercase())
        .await
        .unwrap();
    assert_eq!(outcome, GrantOutcome::Granted);
    let again = grant_admin(&app.config, &email).await.unwrap();
    assert_eq!(again, GrantOutcome::AlreadyAdmin);
    // The command line is another process: the service sees the role within its bound.
    tokio::time::sleep(twofold_api::app::access::ACCESS_CACHE_TTL).await;

    let response = app.get_with("/users/users", access).await;
    assert_eq!(response.status(), StatusCode::OK);
    let users: Vec<Value> = response.json().await.unwrap();
    assert!(users.len() >= 2);
    let me = users
        .iter()
        .find(|user| user["email"] == email.as_str())
        .unwrap();
    assert_eq!(me["is_admin"], true);
    for user in &users {
        let keys: Vec<&String> = user.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "device",
                "email",
                "full_name",
                "id",
                "is_admin",
                "is_locked",
                "tfa_enabled"
            ],
            "the listing has the test-token shape and nothing secret"
        );
    }

    let db = app.db.as_ref().unwrap();
    let actor: String = sqlx::query_scalar(
        "SELECT metadata->>'actor' FROM events WHERE event_type = 'AdminGranted'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(actor, "cli");

    // Paging.
    let first: Vec<Value> = app
        .get_with("/users/users?page=1&per_page=1", access)
        .await
        .json()
        .await
        .unwrap();
    let second: Vec<Value> = app
        .get_with("/users/users?page=2&per_page=1", access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((first.len(), second.len()), (1, 1));
    assert_ne!(first[0]["id"], second[0]["id"]);
    let (status, _) = problem(app.get_with("/users/users?per_page=0", access).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Locking a user ends their sessions and refuses their right password; unlocking undoes it.
    let victim = unique_email("victim");
    app.signup(&signup_body(&victim, None)).await;
    let victim_tokens = app.login_expecting(&victim, StatusCode::OK).await;
    let victim_id = users_id(app, access, &victim).await;
    let admin_post = |path: String| app.http.post(app.url(&path)).bearer_auth(access).send();
    let locked = admin_post(format!("/users/{victim_id}/lock"))
        .await
        .unwrap();
    assert_eq!(locked.status(), StatusCode::NO_CONTENT);
    let (status, body) = problem(app.login(&victim, PASSWORD).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "auth.account_locked");
    let listed: Vec<Value> = app
        .get_with("/users/users?per_page=500", access)
        .await
        .json()
        .await
        .unwrap();
    let listed_victim = listed.iter().find(|user| user["email"] == victim.as_str());
    assert_eq!(listed_victim.unwrap()["is_locked"], true);
    let refreshed = app
        .http
        .post(app.url("/auth/refresh"))
        .json(&serde_json::json!({ "refresh_token": victim_tokens["refresh_token"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::UNAUTHORIZED);
    // The lock ended the victim's sessions, and their access tokens with them.
    let victim_access = victim_tokens["access_token"].as_str().unwrap();
    let dead = app.get_with("/auth/test-token", victim_access).await;
    assert_eq!(dead.status(), StatusCode::UNAUTHORIZED);
    let unlocked = admin_post(format!("/users/{victim_id}/unlock"))
        .await
        .unwrap();
    assert_eq!(unlocked.status(), StatusCode::NO_CONTENT);
    let tokens = app.login_expecting(&victim, StatusCode::OK).await;
    // A user cannot do this to another.
    let refused = app
        .http
        .post(app.url(&format!("/users/{victim_id}/lock")))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let ended = app
        .http
        .delete(app.url(&format!("/users/{victim_id}/sessions")))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let refreshed = app
        .http
        .post(app.url("/auth/refresh"))
        .json(&serde_json::json!({ "refresh_token": tokens["refresh_token"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::UNAUTHORIZED);
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT metadata->>'actor' FROM events \
         WHERE event_type IN ('AccountLocked', 'AccountUnlocked') ORDER BY sequence",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let me = users_id(app, access, &email).await;
    assert_eq!(actors, vec![format!("admin:{me}"), format!("admin:{me}")]);
}

async fn users_id(app: &TestApp, admin_access: &str, email: &str) -> String {
    let users: Vec<Value> = app
        .get_with("/users/users?per_page=500", admin_access)
        .await
        .json()
        .await
        .unwrap();
    users
        .iter()
        .find(|user| user["email"] == email)
        .map(|user| user["id"].as_str().unwrap().to_owned())
        .unwrap()
}
