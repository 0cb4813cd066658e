//! Sessions over HTTP: refresh rotation, reuse detection, logout, listing and ending sessions.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

pub(crate) async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .post(app.url("/auth/refresh"))
        .json(&json!({ "refresh_token": token }))
        .send()
        .await
        .unwrap()
}

pub(crate) fn refresh_token(tokens: &Value) -> String {
    tokens["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_refresh_rotates_the_token_and_a_reused_one_revokes_the_whole_session() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("rotate");
    app.signup(&signup_body(&email, None)).await;
    let first = refresh_token(&app.login_expecting(&email, StatusCode::OK).await);

    let rotated = refresh(&app, &first).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let second = refresh_token(&rotated.json().await.unwrap());
    assert_ne!(first, second);

    let (status, body) = problem(refresh(&app, &first).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "auth.refresh_token_reused");
    // The thief may hold the newest token: it dies with the session.
    let (status, body) = problem(refresh(&app, &second).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "auth.session_ended");
}

#[tokio::test]
async fn a_double_refresh_within_the_grace_period_succeeds_twice() {
    let mut config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(default_nats_url()),
    );
    config.lifetimes.refresh_reuse_grace = 30;
    let app = spawn_app_with(config).await;
    let email = unique_email("grace");
    app.signup(&signup_body(&email, None)).await;
    let token = refresh_token(&app.login_expecting(&email, StatusCode::OK).await);
    let (one, two) = tokio::join!(refresh(&app, &token), refresh(&app, &token));
    assert_eq!(
        (one.status(), two.status()),
        (StatusCode::OK, StatusCode::OK)
    );
}

#[tokio::test]
async fn sessions_are_listed_ended_one_by_one_or_all_but_the_callers_and_logged_out() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("sessions");
    app.signup(&signup_body(&email, None)).await;
    let mut logins = Vec::new();
    for agent in ["phone/1.0", "laptop/2.0", "tablet/3.0"] {
        let response = app
            .http
            .post(app.url("/auth/login"))
            .header("user-agent", agent)
            .form(&[("username", email.as_str()), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        logins.push(response.json::<Value>().await.unwrap());
    }
    let access = |index: usize| logins[index]["access_token"].as_str().unwrap().to_owned();

    let listed: Value = app
        .get_with("/auth/sessions", &access(0))
        .await
        .json()
        .await
        .unwrap();
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions[1]["user_agent"], "laptop/2.0");
    assert_eq!(sessions[1]["ip_address"], "127.0.0.1");
    assert!(sessions[1]["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(listed["current_session_id"], sessions[0]["id"]);

    // End the laptop's session from the phone: its refresh token stops working.
    let laptop = sessions[1]["id"].as_str().unwrap();
    let ended = app
        .http
        .delete(app.url(&format!("/auth/sessions/{laptop}")))
        .bearer_auth(access(0))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let (status, body) = problem(refresh(&app, &refresh_token(&logins[1])).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "auth.session_ended");
    let again = app
        .http
        .delete(app.url(&format!("/auth/sessions/{laptop}")))
        .bearer_auth(access(0))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(again).await.1["code"], "auth.session_not_found");

    // End all others from the tablet, then log the tablet out.
    let others = app
        .http
        .delete(app.url("/auth/sessions"))
        .bearer_auth(access(2))
        .send()
        .await
        .unwrap();
    assert_eq!(others.status(), StatusCode::NO_CONTENT);
    let listed: Value = app
        .get_with("/auth/sessions", &access(2))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(
        refresh(&app, &refresh_token(&logins[0])).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let logout = app.post_with("/auth/logout", &access(2)).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        refresh(&app, &refresh_token(&logins[2])).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The session's access token died with it.
    let (status, body) = problem(app.get_with("/auth/sessions", &access(2)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "auth.invalid_token");
    let fresh = app.login_token(&email, StatusCode::OK).await;
    let listed: Value = app
        .get_with("/auth/sessions", &fresh)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1);
}

/// Sessions a user keeps at once (`MAX_SESSIONS`, documented in SECURITY.md).
const MAX_SESSIONS: usize = 100;

#[tokio::test]
async fn at_the_session_cap_a_login_ends_the_oldest_session_in_the_list_too() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("cap");
    app.signup(&signup_body(&email, None)).await;
    let first = app.login_expecting(&email, StatusCode::OK).await;
    let mut newest = first.clone();
    for _ in 0..MAX_SESSIONS {
        newest = app.login_expecting(&email, StatusCode::OK).await;
    }

    // The first session's access token died with its session.
    let (status, _) = problem(
        app.get_with("/auth/sessions", first["access_token"].as_str().unwrap())
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let listed: Value = app
        .get_with("/auth/sessions", newest["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|session| session["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), MAX_SESSIONS);
    let first_claims = claims_of(first["access_token"].as_str().unwrap());
    let first_id = first_claims["sid"].as_str().unwrap();
    assert!(
        !ids.contains(&first_id),
        "the ended session is still listed"
    );
    // Its refresh token is refused, and it ended by a recorded event.
    let (status, body) = problem(refresh(&app, &refresh_token(&first)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "auth.session_ended");
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'SessionEnded' \
         AND payload->'SessionEnded'->>'reason' = 'session_limit'",
    )
    .fetch_one(app.db.as_ref().unwrap())
    .await
    .unwrap();
    assert_eq!(ended, 1);
}
