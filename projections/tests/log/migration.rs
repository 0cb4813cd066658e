//! The migration that orders the log keeps existing events, numbered in recorded order, and
//! existing views, standing at their user's last event.

use twofold_projections::log::{Checkpoint, EventLog, PgEventLog};

use crate::db::{migration_files, settle, TestDb};

const ORDERING_MIGRATION: &str = "event_log_order";

#[tokio::test]
async fn existing_events_get_positions_in_recorded_order_and_come_first() {
    let db = TestDb::empty().await;
    let files = migration_files();
    let split = files
        .iter()
        .position(|file| file.to_string_lossy().contains(ORDERING_MIGRATION))
        .unwrap();
    for file in &files[..split] {
        sqlx::raw_sql(&std::fs::read_to_string(file).unwrap())
            .execute(&db.pool)
            .await
            .unwrap();
    }
    // Inserted in another order than recorded.
    for (user, sequence, recorded_at) in [
        ("b", 1, "2026-01-01T00:00:02Z"),
        ("a", 1, "2026-01-01T00:00:01Z"),
        ("a", 2, "2026-01-01T00:00:03Z"),
    ] {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                event_version, payload, metadata, recorded_at) \
             VALUES ('User', $1, $2, 'Test', '1.0', '{}', '{}', $3::timestamptz)",
        )
        .bind(user)
        .bind(sequence)
        .bind(recorded_at)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO user_view (view_id, version, payload) VALUES ('a', 1, '{}')")
        .execute(&db.pool)
        .await
        .unwrap();
    for file in &files[split..] {
        sqlx::raw_sql(&std::fs::read_to_string(file).unwrap())
            .execute(&db.pool)
            .await
            .unwrap();
    }

    let numbered: Vec<(String, i64, i64, String)> = sqlx::query_as(
        "SELECT aggregate_id, sequence, position, transaction_id::text FROM events \
         ORDER BY position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        numbered,
        [
            ("a".to_owned(), 1, 1, "0".to_owned()),
            ("b".to_owned(), 1, 2, "0".to_owned()),
            ("a".to_owned(), 2, 3, "0".to_owned()),
        ]
    );
    let view_sequence: i64 =
        sqlx::query_scalar("SELECT last_sequence FROM user_view WHERE view_id = 'a'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(view_sequence, 2);

    // A new event comes after them, with a real transaction id.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
            payload, metadata) VALUES ('User', 'c', 1, 'Test', '1.0', '{}', '{}')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    settle(&db.pool).await;
    let log = PgEventLog::new(db.pool.clone());
    let read = log.read_after(Checkpoint::ORIGIN, 10).await.unwrap();
    let order: Vec<(String, usize)> = read
        .iter()
        .map(|logged| (logged.event.aggregate_id.clone(), logged.event.sequence))
        .collect();
    assert_eq!(
        order,
        [
            ("a".to_owned(), 1),
            ("b".to_owned(), 1),
            ("a".to_owned(), 2),
            ("c".to_owned(), 1)
        ]
    );
    assert_eq!(read[3].checkpoint.position(), 4);
    assert!(read[3].checkpoint.transaction_id() > 2);
    db.drop().await;
}
