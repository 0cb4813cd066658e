//! Access tokens die with their session: at once on the instance that ended it, within the
//! cache's bound on every other.

use reqwest::StatusCode;
use serde_json::json;
use twofold_api::app::access::ACCESS_CACHE_TTL;

use crate::helpers::*;
use crate::password::reset_token;

async fn works(app: &TestApp, access: &str) -> bool {
    let status = app.get_with("/auth/test-token", access).await.status();
    assert!(
        status == StatusCode::OK || status == StatusCode::UNAUTHORIZED,
        "{status}"
    );
    status == StatusCode::OK
}

/// A user with `sessions` sessions on `app`: their email, id and access tokens.
async fn user_with_sessions(
    app: &TestApp,
    label: &str,
    sessions: usize,
) -> (String, String, Vec<String>) {
    let email = unique_email(label);
    app.signup(&signup_body(&email, None)).await;
    let mut tokens = Vec::new();
    for _ in 0..sessions {
        tokens.push(app.login_token(&email, StatusCode::OK).await);
    }
    let id = claims_of(&tokens[0])["sub"].as_str().unwrap().to_owned();
    (email, id, tokens)
}

fn session_of(access: &str) -> String {
    claims_of(access)["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn ending_sessions_kills_their_access_tokens_at_once_and_spares_the_others() {
    let app = spawn_app(Store::Postgres).await;
    let (_, _, tokens) = user_with_sessions(&app, "revoke-user", 4).await;
    for token in &tokens {
        assert!(works(&app, token).await);
    }

    // Logout: the token that logged out dies.
    let logout = app.post_with("/auth/logout", &tokens[0]).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert!(!works(&app, &tokens[0]).await);

    // Ending one session from another: that one dies, the caller's lives.
    let ended = app
        .http
        .delete(app.url(&format!("/auth/sessions/{}", session_of(&tokens[1]))))
        .bearer_auth(&tokens[2])
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert!(!works(&app, &tokens[1]).await);
    assert!(works(&app, &tokens[2]).await);

    // Ending every other session: only the caller's lives.
    let others = app
        .http
        .delete(app.url("/auth/sessions"))
        .bearer_auth(&tokens[2])
        .send()
        .await
        .unwrap();
    assert_eq!(others.status(), StatusCode::NO_CONTENT);
    assert!(!works(&app, &tokens[3]).await);
    assert!(works(&app, &tokens[2]).await);
}

#[tokio::test]
async fn a_password_change_kills_the_other_sessions_tokens_and_a_reset_kills_all() {
    let app = spawn_app(Store::Postgres).await;
    let (email, _, tokens) = user_with_sessions(&app, "revoke-password", 2).await;
    let changed = app
        .http
        .put(app.url("/auth/password"))
        .bearer_auth(&tokens[0])
        .json(&json!({ "current_password": PASSWORD, "new_password": "a changed passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    assert!(works(&app, &tokens[0]).await, "the caller's session stays");
    assert!(!works(&app, &tokens[1]).await);

    let forgot = app
        .http
        .post(app.url("/auth/forgot-password"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(forgot.status(), StatusCode::ACCEPTED);
    let token = reset_token(
        &app.wait_for_email(&email, "Reset your Twofold password")
            .await,
    );
    let reset = app
        .http
        .post(app.url("/auth/reset-password"))
        .json(&json!({ "email": email, "token": token, "new_password": "a reset passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert!(!works(&app, &tokens[0]).await);
}

#[tokio::test]
async fn an_admin_lock_or_end_of_sessions_kills_the_users_tokens() {
    let app = spawn_app(Store::Postgres).await;
    let (admin_email, _, _) = user_with_sessions(&app, "revoke-admin", 1).await;
    twofold_api::operator::grant_admin(&app.config, &admin_email)
        .await
        .unwrap();
    let admin = app.login_token(&admin_email, StatusCode::OK).await;
    let (email, id, tokens) = user_with_sessions(&app, "revoke-target", 1).await;

    let ended = app
        .http
        .delete(app.url(&format!("/users/{id}/sessions")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert!(!works(&app, &tokens[0]).await);

    let again = app.login_token(&email, StatusCode::OK).await;
    let locked = app.post_with(&format!("/users/{id}/lock"), &admin).await;
    assert_eq!(locked.status(), StatusCode::NO_CONTENT);
    assert!(!works(&app, &again).await);
}

#[tokio::test]
async fn another_instance_refuses_a_revoked_token_within_the_bound() {
    let app = spawn_app(Store::Postgres).await;
    let other = app.another_instance().await;
    let (_, _, tokens) = user_with_sessions(&app, "revoke-cluster", 1).await;
    // The other instance has the user in memory.
    assert!(works(&other, &tokens[0]).await);
    let logout = app.post_with("/auth/logout", &tokens[0]).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert!(
        !works(&app, &tokens[0]).await,
        "at once where it was revoked"
    );
    tokio::time::sleep(ACCESS_CACHE_TTL + std::time::Duration::from_millis(100)).await;
    assert!(
        !works(&other, &tokens[0]).await,
        "within the bound elsewhere"
    );
}
