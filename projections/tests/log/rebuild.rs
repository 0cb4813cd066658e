//! Item 3 of the log: rebuilding the views from the log finds what differs, and `apply`
//! swaps the rebuilt views in.

use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use twofold_projections::log::Upcasters;
use twofold_projections::personal::NoKeys;
use twofold_projections::rebuild::{rebuild_postgres, RebuildError};

use crate::db::{
    logged_in, new_user, session_started, settle, signed_up, tfa_enabled, write, TestDb,
};

/// The domain's upcasters, as the service reads the log.
fn upcasters() -> Upcasters {
    Upcasters::from(twofold_domain::upcasters())
}

/// Writes a few users' histories and lets the projector build their views.
async fn users_with_views(db: &TestDb, count: usize) -> Vec<String> {
    let mut users = Vec::new();
    for index in 0..count {
        let user = new_user();
        let email = format!("user{index}@example.com");
        let events = [
            signed_up(&user, &email),
            logged_in(),
            session_started(),
            tfa_enabled(),
        ];
        for (sequence, event) in (1..).zip(&events) {
            write(&db.pool, &user, sequence, event).await;
        }
        users.push(user);
    }
    settle(&db.pool).await;
    let projector = crate::views::projector_for(db);
    projector.catch_up().await.unwrap();
    users
}

#[tokio::test]
async fn views_kept_by_the_projections_match_a_rebuild() {
    let db = TestDb::migrated().await;
    users_with_views(&db, 5).await;
    let report = rebuild_postgres(&db.pool, Arc::new(NoKeys), upcasters(), false)
        .await
        .unwrap();
    assert_eq!(report.events, 20);
    assert_eq!(report.users, 5);
    assert_eq!(report.differences, []);
    assert!(!report.applied);
    let shadows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%_rebuild'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(shadows, 0, "a check leaves no shadow table behind");
    db.drop().await;
}

#[tokio::test]
async fn a_row_corrupted_by_sql_is_reported_and_apply_repairs_it() {
    let db = TestDb::migrated().await;
    let users = users_with_views(&db, 3).await;
    sqlx::query(
        "UPDATE user_view SET payload = jsonb_set(payload::jsonb, '{is_admin}', 'true')::json \
         WHERE view_id = $1",
    )
    .bind(&users[0])
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM session_view WHERE view_id = $1")
        .bind(&users[1])
        .execute(&db.pool)
        .await
        .unwrap();
    // A row of a user the log does not know (sorted after every UUID).
    sqlx::query(
        "INSERT INTO session_view (view_id, last_sequence, payload) \
         VALUES ('zz-stranger', 1, '{\"sessions\":[]}')",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let report = rebuild_postgres(&db.pool, Arc::new(NoKeys), upcasters(), false)
        .await
        .unwrap();
    let found: Vec<String> = report.differences.iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(
        found[0],
        format!(
            "user {} view user_view field is_admin: live true rebuilt false",
            users[0]
        )
    );
    assert!(
        found[1].starts_with(&format!(
            "user {} view session_view field (row): live absent rebuilt {{\"sessions\":[",
            users[1]
        )),
        "{}",
        found[1]
    );
    assert_eq!(
        found[2],
        "user zz-stranger view session_view field (row): live {\"sessions\":[]} rebuilt absent"
    );

    let applied = rebuild_postgres(&db.pool, Arc::new(NoKeys), upcasters(), true)
        .await
        .unwrap();
    assert!(applied.applied);
    assert_eq!(applied.differences.len(), 3);
    let again = rebuild_postgres(&db.pool, Arc::new(NoKeys), upcasters(), false)
        .await
        .unwrap();
    assert_eq!(again.differences, [], "the swapped-in views match the log");
    // The swapped-in tables keep the live tables' names, keys and constraints.
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE tablename IN ('user_view', 'session_view') \
         ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(indexes, ["session_view_pkey", "user_view_pkey"]);
    // The projections keep writing to them.
    let user = &users[2];
    write(&db.pool, user, 5, &session_started()).await;
    settle(&db.pool).await;
    crate::views::projector_for(&db).catch_up().await.unwrap();
    let sessions: i64 = sqlx::query_scalar(
        "SELECT json_array_length(payload->'sessions')::bigint FROM session_view WHERE view_id = $1",
    )
    .bind(user)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(sessions, 2);
    db.drop().await;
}

#[tokio::test]
async fn a_users_events_stored_out_of_their_order_are_folded_in_it() {
    let db = TestDb::migrated().await;
    let user = new_user();
    let started = session_started();
    let events = [
        (1, signed_up(&user, "ada@example.com")),
        (2, logged_in()),
        (3, started.clone()),
        (4, tfa_enabled()),
    ];
    // Stored, and so read, as 3, 4, 1, 2.
    for index in [2, 3, 0, 1] {
        let (sequence, event) = &events[index];
        write(&db.pool, &user, *sequence, event).await;
    }
    settle(&db.pool).await;

    // No projector ran: the live views have no row, and the rebuilt ones show what the
    // rebuild folded.
    let report = rebuild_postgres(&db.pool, Arc::new(NoKeys), upcasters(), false)
        .await
        .unwrap();
    assert_eq!(report.events, 4);
    let rebuilt = |view: &str| -> serde_json::Value {
        let difference = report
            .differences
            .iter()
            .find(|difference| difference.view == view && difference.user == user)
            .unwrap_or_else(|| panic!("no row of {view}: {:?}", report.differences));
        assert_eq!(difference.live, "absent");
        serde_json::from_str(&difference.rebuilt).unwrap()
    };
    let user_view = rebuilt("user_view");
    assert_eq!(user_view["email"], "ada@example.com");
    assert_eq!(user_view["tfa_enabled"], true);
    let twofold_domain::UserEvent::SessionStarted { session_id, .. } = started else {
        unreachable!("session_started() starts a session")
    };
    let sessions = rebuilt("session_view");
    assert_eq!(
        sessions["sessions"][0]["id"],
        session_id.to_string(),
        "{sessions}"
    );
    db.drop().await;
}

#[tokio::test]
async fn a_gap_in_a_users_log_stops_the_rebuild_and_names_the_user() {
    let db = TestDb::migrated().await;
    // Enough users for the scan's rows to fill several batches of every folder, the broken
    // log in the middle of them.
    let write_user = |index: usize| {
        let pool = db.pool.clone();
        async move {
            let user = new_user();
            let events = [
                signed_up(&user, &format!("user{index}@example.com")),
                logged_in(),
                session_started(),
            ];
            for (sequence, event) in (1..).zip(&events) {
                write(&pool, &user, sequence, event).await;
            }
        }
    };
    for index in 0..200 {
        write_user(index).await;
    }
    let broken = new_user();
    write(
        &db.pool,
        &broken,
        1,
        &signed_up(&broken, "broken@example.com"),
    )
    .await;
    write(&db.pool, &broken, 2, &logged_in()).await;
    write(&db.pool, &broken, 4, &session_started()).await;
    for index in 200..400 {
        write_user(index).await;
    }
    settle(&db.pool).await;

    for _ in 0..2 {
        // Twice: the first run lets go of the rebuild's lock when it fails.
        let error = rebuild_postgres(&db.pool, Arc::new(NoKeys), upcasters(), false)
            .await
            .expect_err("a log with a gap cannot be folded");
        assert!(
            matches!(
                &error,
                RebuildError::Gap { user, after: 2, found: 4 } if *user == broken
            ),
            "{error}"
        );
    }
    db.drop().await;
}

/// Measures the rebuild against a raw scan of the same events table in one run (DESIGN.md
/// §4b: at least half its speed). Run with `--ignored --nocapture`; `REBUILD_EVENTS` sets the
/// size (default 200 000).
#[tokio::test]
#[ignore = "a measurement, not a check: run it by hand"]
async fn rebuild_speed_against_a_raw_scan() {
    let db = TestDb::migrated().await;
    let total: i64 = std::env::var("REBUILD_EVENTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200_000);
    // Users of 20 events each: a sign-up, then logins with sessions.
    let users = total / 20;
    let template_user = new_user();
    let signed_up = serde_json::to_string(&signed_up(&template_user, "bulk@example.com")).unwrap();
    let logged_in = serde_json::to_string(&logged_in()).unwrap();
    let session = serde_json::to_string(&session_started()).unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
            payload, metadata) \
         SELECT 'User', u.id::text, s.sequence, \
            CASE WHEN s.sequence = 1 THEN 'SignedUp' WHEN s.sequence % 2 = 0 THEN 'LoggedIn' \
                 ELSE 'SessionStarted' END, $6, \
            CASE WHEN s.sequence = 1 THEN replace($1, $4, u.id::text)::json \
                 WHEN s.sequence % 2 = 0 THEN $2::json ELSE $3::json END, \
            '{\"actor\":\"anonymous\",\"ip\":\"192.0.2.1\",\"user_agent\":\"bench\"}' \
         FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $5)) AS u \
         CROSS JOIN generate_series(1, 20) AS s(sequence)",
    )
    .bind(&signed_up)
    .bind(&logged_in)
    .bind(&session)
    .bind(&template_user)
    .bind(users)
    .bind(twofold_domain::user::EVENT_VERSION)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE events")
        .execute(&db.pool)
        .await
        .unwrap();

    let started = Instant::now();
    let mut rows = sqlx::query(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
            metadata, recorded_at FROM events",
    )
    .fetch(&db.pool);
    let mut scanned = 0_u64;
    while let Some(row) = rows.try_next().await.unwrap() {
        use sqlx::Row;
        let _: serde_json::Value = row.get("payload");
        let _: serde_json::Value = row.get("metadata");
        scanned += 1;
    }
    drop(rows);
    let scan = started.elapsed();

    let report = rebuild_postgres(&db.pool, Arc::new(NoKeys), upcasters(), false)
        .await
        .unwrap();
    #[allow(clippy::cast_precision_loss)]
    let scan_rate = scanned as f64 / scan.as_secs_f64();
    let rebuild_rate = report.events_per_second();
    eprintln!(
        "raw scan: {scanned} events in {:.3} s = {scan_rate:.0} events/s\n\
         rebuild:  {} events in {:.3} s = {rebuild_rate:.0} events/s ({:.2} of the scan)",
        scan.as_secs_f64(),
        report.events,
        report.elapsed.as_secs_f64(),
        rebuild_rate / scan_rate
    );
    db.drop().await;
}
