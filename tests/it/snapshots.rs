//! Snapshots on Postgres: taken as a history grows, and never trusted when changed by hand.

use reqwest::StatusCode;

use crate::helpers::{signup_body, spawn_app, unique_email, Store, LOGS};

#[tokio::test]
async fn a_snapshot_changed_behind_the_services_back_is_ignored() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("snapshot");
    app.signup(&signup_body(&email, None)).await;
    // Each login records two events: 16 of them pass the snapshot interval.
    for _ in 0..16 {
        app.login_token(&email, StatusCode::OK).await;
    }
    let db = app.db.as_ref().unwrap();
    let (sequence, state): (i64, serde_json::Value) =
        sqlx::query_as("SELECT sequence, state::jsonb FROM user_snapshots")
            .fetch_one(db)
            .await
            .unwrap();
    assert!(sequence >= 32, "a snapshot after {sequence} events");
    assert_eq!(state["account_locked"], false);
    // The snapshot as the service kept it is trusted: its digest matches.
    app.login_token(&email, StatusCode::OK).await;
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    assert!(!logs.contains("a snapshot does not match its digest"));

    // Lock the account in the snapshot only: a forged state the events never said.
    sqlx::query(
        "UPDATE user_snapshots SET state = jsonb_set(state::jsonb, '{account_locked}', 'true')::json",
    )
    .execute(db)
    .await
    .unwrap();
    let login = app.login(&email, crate::helpers::PASSWORD).await;
    assert_eq!(
        login.status(),
        StatusCode::OK,
        "the events say the account is open"
    );
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    assert!(logs.contains("a snapshot does not match its digest"));
}
