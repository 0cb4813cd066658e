//! Two instances of one database with `TWOFOLD_RECENT_USERS_TTL` set, each starting commands
//! from the users its own commits left: whatever the other instance committed meanwhile, the
//! answers are the store's.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::metrics::{sample, scrape};

async fn refresh(app: &TestApp, pair: &Value) -> (StatusCode, Value) {
    let response = app
        .http
        .post(app.url("/auth/refresh"))
        .json(&json!({ "refresh_token": pair["refresh_token"] }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn counted(app: &TestApp, outcome: &str) -> f64 {
    let page = scrape(app).await;
    sample(
        &page,
        "twofold_command_recent_users_total",
        &[("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn an_instance_behind_the_other_answers_as_the_store_does() {
    let mut config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(default_nats_url()),
    );
    config.database.recent_users_ttl = 30;
    let first = spawn_app_with(config).await;
    let second = first.another_instance().await;
    let email = unique_email("recent-users");
    first.signup(&signup_body(&email, None)).await;
    let signed_in = first.login_expecting(&email, StatusCode::OK).await;

    // The first instance refreshes from what its login left, without reading the store.
    let (status, on_first) = refresh(&first, &signed_in).await;
    assert_eq!(status, StatusCode::OK, "{on_first}");
    assert!(counted(&first, "hit").await >= 1.0);

    // The second rotates the token; the first, still keeping the token before, accepts the
    // new one (its own commit from what it keeps loses the race).
    let (status, on_second) = refresh(&second, &on_first).await;
    assert_eq!(status, StatusCode::OK, "{on_second}");
    let (status, back_on_first) = refresh(&first, &on_second).await;
    assert_eq!(status, StatusCode::OK, "{back_on_first}");
    assert!(counted(&first, "lost_race").await >= 1.0);

    // A session the first has never seen: what it keeps refuses, the store's state accepts.
    let elsewhere = second.login_expecting(&email, StatusCode::OK).await;
    let (status, refreshed) = refresh(&first, &elsewhere).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert!(counted(&first, "answer_rechecked").await >= 1.0);

    // The second changes the password from the other session, which ends the first's: what
    // the first keeps would refresh it, the store's state refuses.
    let changed = second
        .http
        .put(second.url("/auth/password"))
        .bearer_auth(refreshed["access_token"].as_str().unwrap())
        .json(&json!({ "current_password": PASSWORD, "new_password": "a changed passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let (status, refused) = refresh(&first, &back_on_first).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert_eq!(refused["code"], "auth.session_ended", "{refused}");
}
