//! Cross-user invariants hold under concurrent requests on the real store.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn of_fifty_simultaneous_signups_with_one_email_exactly_one_succeeds() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("race");
    let attempts = (0..50).map(|index| {
        // The same address in varying letter case.
        let variant = if index % 2 == 0 {
            email.clone()
        } else {
            email.to_uppercase()
        };
        let app = &app;
        async move { app.signup(&signup_body(&variant, None)).await.status() }
    });
    let statuses = futures::future::join_all(attempts).await;
    let created = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 49), "{statuses:?}");

    let db = app.db.as_ref().unwrap();
    let signups: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'SignedUp'")
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!(signups, 1, "the losers left no events behind");
    app.login_expecting(&email, StatusCode::OK).await;
}
