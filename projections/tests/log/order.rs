//! Item 1 of the log: a reader following the log from a checkpoint never skips an event,
//! even one whose transaction took its position early and committed late.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use twofold_projections::log::{Checkpoint, EventLog, LoggedEvent, PgEventLog};

use crate::db::{settle, TestDb, INSERT_EVENT};

async fn insert(connection: &mut sqlx::PgConnection, user: &str, sequence: i64) -> i64 {
    sqlx::query(INSERT_EVENT)
        .bind(user)
        .bind(sequence)
        .bind("Test")
        .bind(serde_json::json!({}))
        .bind(serde_json::json!({}))
        .bind("1.0")
        .execute(&mut *connection)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT currval('events_position_seq')")
        .fetch_one(&mut *connection)
        .await
        .unwrap()
}

fn keys(events: &[LoggedEvent]) -> Vec<(String, usize)> {
    events
        .iter()
        .map(|logged| (logged.event.aggregate_id.clone(), logged.event.sequence))
        .collect()
}

#[tokio::test]
async fn an_event_that_took_its_position_early_and_committed_late_is_not_skipped() {
    let db = TestDb::migrated().await;
    let log = PgEventLog::new(db.pool.clone());

    // Writer A takes the lower position and keeps its transaction open.
    let mut early = db.pool.begin().await.unwrap();
    let early_position = insert(&mut early, "early", 1).await;
    // Writer B takes a higher position and commits first.
    let mut late = db.pool.begin().await.unwrap();
    let late_position = insert(&mut late, "late", 1).await;
    late.commit().await.unwrap();
    assert!(early_position < late_position);

    // A reader by position alone would see B now, move its checkpoint past A's position and
    // never see A: that is the hazard.
    let by_position: Vec<String> =
        sqlx::query_scalar("SELECT aggregate_id FROM events WHERE position > 0 ORDER BY position")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(by_position, ["late"]);
    // The log holds B back while A may still commit.
    assert_eq!(log.read_after(Checkpoint::ORIGIN, 100).await.unwrap(), []);

    early.commit().await.unwrap();
    settle(&db.pool).await;
    let delivered = log.read_after(Checkpoint::ORIGIN, 100).await.unwrap();
    assert_eq!(
        keys(&delivered),
        [("early".to_owned(), 1), ("late".to_owned(), 1)]
    );
    let last = delivered.last().unwrap().checkpoint;
    assert_eq!(log.read_after(last, 100).await.unwrap(), []);
    // Resuming from the first one's checkpoint gives exactly the second.
    assert_eq!(
        keys(&log.read_after(delivered[0].checkpoint, 100).await.unwrap()),
        [("late".to_owned(), 1)]
    );
    db.drop().await;
}

#[tokio::test]
async fn a_tailing_reader_gets_every_event_of_eight_concurrent_writers_exactly_once() {
    let db = TestDb::migrated().await;
    let log = PgEventLog::new(db.pool.clone());
    let writing = Arc::new(AtomicBool::new(true));

    let mut writers = Vec::new();
    for writer in 0..8_u64 {
        let pool = db.pool.clone();
        let writing = Arc::clone(&writing);
        writers.push(tokio::spawn(async move {
            let user = format!("writer-{writer}");
            let mut sequence = 0;
            while writing.load(Ordering::Relaxed) {
                let mut tx = pool.begin().await.unwrap();
                // One to three events per commit, held open a little and unevenly, so that
                // transactions commit in another order than they took their positions.
                for _ in 0..=(sequence + writer) % 3 {
                    sequence += 1;
                    insert(&mut tx, &user, i64::try_from(sequence).unwrap()).await;
                }
                let hold = (sequence * 7 + writer * 3) % 5;
                tokio::time::sleep(Duration::from_millis(hold)).await;
                tx.commit().await.unwrap();
            }
            sequence
        }));
    }

    let mut delivered: Vec<LoggedEvent> = Vec::new();
    let mut checkpoint = Checkpoint::ORIGIN;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let events = log.read_after(checkpoint, 50).await.unwrap();
        if let Some(last) = events.last() {
            checkpoint = last.checkpoint;
        }
        delivered.extend(events);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    writing.store(false, Ordering::Relaxed);
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap();
    }
    settle(&db.pool).await;
    loop {
        let events = log.read_after(checkpoint, 500).await.unwrap();
        let Some(last) = events.last() else { break };
        checkpoint = last.checkpoint;
        delivered.extend(events);
    }

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        usize::try_from(stored).unwrap(),
        usize::try_from(written).unwrap()
    );
    assert!(written > 500, "the writers wrote only {written} events");
    let unique: HashSet<(String, usize)> = keys(&delivered).into_iter().collect();
    assert_eq!(
        unique.len(),
        delivered.len(),
        "an event was delivered twice"
    );
    assert_eq!(
        delivered.len(),
        usize::try_from(written).unwrap(),
        "an event was skipped"
    );
    // Checkpoints only grow, and each writer's events come in sequence order.
    assert!(delivered
        .windows(2)
        .all(|pair| pair[0].checkpoint < pair[1].checkpoint));
    for writer in 0..8 {
        let user = format!("writer-{writer}");
        let sequences: Vec<usize> = delivered
            .iter()
            .filter(|logged| logged.event.aggregate_id == user)
            .map(|logged| logged.event.sequence)
            .collect();
        assert!(sequences.iter().copied().eq(1..=sequences.len()), "{user}");
    }
    db.drop().await;
}

/// Rows of `events` Postgres has read so far, by sequential and by index scans, as its
/// statistics count them once the calling connection's are flushed.
async fn rows_read(pool: &sqlx::PgPool) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) \
         FROM pg_stat_user_tables WHERE relname = 'events'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_page_of_the_log_reads_its_own_rows_not_the_whole_table() {
    let db = TestDb::migrated().await;
    // One connection, so that every statistic this test reads is its own, flushed when asked.
    let pool = db.one_connection().await;
    sqlx::query(
        "INSERT INTO events \
            (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT 'User', 'user-' || n, 1, 'Test', '1.0', '{}', '{}' \
         FROM generate_series(1, 5000) AS n",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE events").execute(&pool).await.unwrap();
    settle(&pool).await;
    let log = PgEventLog::new(pool.clone());

    let before = rows_read(&pool).await;
    let first = log.read_after(Checkpoint::ORIGIN, 10).await.unwrap();
    let middle = log.read_after(first[9].checkpoint, 10).await.unwrap();
    let read = rows_read(&pool).await - before;

    assert_eq!(first.len() + middle.len(), 20);
    assert_eq!(middle[0].event.aggregate_id, "user-11");
    // Each page walks the log's index from its checkpoint and stops at its limit; a page that
    // sorted what lies after its checkpoint would read all 5000 rows.
    assert!(read <= 100, "two pages of 10 read {read} rows");
    pool.close().await;
    db.drop().await;
}
