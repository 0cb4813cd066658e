//! Item 2 of the log: views record the last event they applied, never apply one twice or out
//! of order, and a view write that failed is repaired by the catch-up projector.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_es::persist::PersistenceError;
use cqrs_es::{EventEnvelope, Query};
use twofold_domain::user::SessionEndReason;
use twofold_domain::{User, UserEvent};
use twofold_projections::log::{EventLog, PgEventLog, Upcasters};
use twofold_projections::{
    Commit, PgCheckpointStore, PgViewStore, Projection, Projector, SessionsView, StoredView,
    UserView, ViewStore, SESSION_VIEW_TABLE, USER_VIEW_TABLE, VIEWS_PROJECTOR,
};

use crate::db::{
    logged_in, new_user, session_started, settle, signed_up, tfa_disabled, tfa_enabled, write,
    TestDb,
};

fn no_upcasters() -> Upcasters {
    Upcasters::from(Vec::new())
}

fn envelope(user: &str, sequence: usize, payload: UserEvent) -> EventEnvelope<User> {
    EventEnvelope {
        aggregate_id: user.to_owned(),
        sequence,
        payload,
        metadata: HashMap::from([("ip".to_owned(), "192.0.2.1".to_owned())]),
    }
}

/// A Postgres view store whose writes fail while `failing` is set, as a database blip would,
/// and which records how each write asked to be committed.
struct Watched<V> {
    inner: PgViewStore<V>,
    failing: AtomicBool,
    commits: std::sync::Mutex<Vec<Commit>>,
}

fn watched<V>(inner: PgViewStore<V>) -> Arc<Watched<V>> {
    Arc::new(Watched {
        inner,
        failing: AtomicBool::new(false),
        commits: std::sync::Mutex::new(Vec::new()),
    })
}

#[async_trait]
impl<V: serde::Serialize + serde::de::DeserializeOwned + Send + Sync> ViewStore<V> for Watched<V> {
    async fn load(&self, view_id: &str) -> Result<Option<StoredView<V>>, PersistenceError> {
        self.inner.load(view_id).await
    }

    async fn last_sequences(
        &self,
        view_ids: &[String],
    ) -> Result<HashMap<String, usize>, PersistenceError> {
        self.inner.last_sequences(view_ids).await
    }

    async fn save(
        &self,
        view_id: &str,
        view: &V,
        read: Option<usize>,
        last_sequence: usize,
        commit: Commit,
    ) -> Result<bool, PersistenceError> {
        self.commits.lock().unwrap().push(commit);
        if self.failing.load(Ordering::SeqCst) {
            return Err(PersistenceError::ConnectionError("connection reset".into()));
        }
        self.inner
            .save(view_id, view, read, last_sequence, commit)
            .await
    }
}

fn user_views(db: &TestDb) -> PgViewStore<UserView> {
    PgViewStore::new(db.pool.clone(), USER_VIEW_TABLE)
}

fn log(db: &TestDb) -> Arc<dyn EventLog> {
    Arc::new(PgEventLog::new(db.pool.clone()))
}

/// The views' projector over `db`, polling every 100 ms.
pub fn projector_for(db: &TestDb) -> Projector {
    projector_named(db, VIEWS_PROJECTOR)
}

/// A projector of the views keeping its checkpoint under `name`.
fn projector_named(db: &TestDb, name: &str) -> Projector {
    let users = Projection::<UserView>::new(Arc::new(user_views(db)), log(db), no_upcasters());
    let sessions = Projection::<SessionsView>::new(
        Arc::new(PgViewStore::new(db.pool.clone(), SESSION_VIEW_TABLE)),
        log(db),
        no_upcasters(),
    );
    Projector::new(
        name,
        log(db),
        Arc::new(PgCheckpointStore::new(db.pool.clone())),
        vec![Arc::new(users), Arc::new(sessions)],
        no_upcasters(),
    )
    .with_poll_interval(Duration::from_millis(100))
}

#[tokio::test]
async fn a_view_write_that_failed_after_the_commit_is_repaired_by_the_projector() {
    let db = TestDb::migrated().await;
    let user = new_user();
    let flaky = watched(user_views(&db));
    let projection = Projection::<UserView>::new(flaky.clone(), log(&db), no_upcasters());
    write(&db.pool, &user, 1, &signed_up(&user, "ada@example.com")).await;
    projection
        .dispatch(
            &user,
            &[envelope(&user, 1, signed_up(&user, "ada@example.com"))],
        )
        .await;

    // The commit of TfaEnabled succeeds; its view write does not.
    write(&db.pool, &user, 2, &tfa_enabled()).await;
    flaky.failing.store(true, Ordering::SeqCst);
    projection
        .dispatch(&user, &[envelope(&user, 2, tfa_enabled())])
        .await;
    let stale = user_views(&db).load(&user).await.unwrap().unwrap();
    assert!(!stale.view.tfa_enabled);
    assert_eq!(stale.last_sequence, 1);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(projector_for(&db).run_until(async move {
        let _ = stopped.await;
    }));
    let started = Instant::now();
    let repaired = loop {
        let stored = user_views(&db).load(&user).await.unwrap().unwrap();
        if stored.view.tfa_enabled || started.elapsed() > Duration::from_secs(5) {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(repaired.view.tfa_enabled, "the view was not repaired");
    assert_eq!(repaired.last_sequence, 2);
    let _ = stop.send(());
    running.await.unwrap();
    db.drop().await;
}

#[tokio::test]
async fn overlapping_dispatches_apply_in_sequence_order_whichever_comes_first() {
    let db = TestDb::migrated().await;
    let projection =
        Projection::<UserView>::new(Arc::new(user_views(&db)), log(&db), no_upcasters());
    for concurrent in [false, true] {
        let user = new_user();
        let events = [
            signed_up(&user, "grace@example.com"),
            tfa_enabled(),
            tfa_disabled(),
        ];
        for (sequence, event) in (1..).zip(&events) {
            write(&db.pool, &user, sequence, event).await;
        }
        projection
            .dispatch(&user, &[envelope(&user, 1, events[0].clone())])
            .await;
        // The dispatch of TfaDisabled (3) overtakes that of TfaEnabled (2).
        let disabled = [envelope(&user, 3, events[2].clone())];
        let enabled = [envelope(&user, 2, events[1].clone())];
        if concurrent {
            tokio::join!(
                projection.dispatch(&user, &disabled),
                projection.dispatch(&user, &enabled)
            );
        } else {
            projection.dispatch(&user, &disabled).await;
            projection.dispatch(&user, &enabled).await;
        }
        let stored = user_views(&db).load(&user).await.unwrap().unwrap();
        assert!(!stored.view.tfa_enabled, "concurrent: {concurrent}");
        assert_eq!(stored.view.device, None);
        assert_eq!(stored.last_sequence, 3);
    }
    db.drop().await;
}

#[tokio::test]
async fn an_event_dispatched_again_or_replayed_by_two_projectors_is_applied_once() {
    let db = TestDb::migrated().await;
    let user = new_user();
    let sessions_store = || PgViewStore::<SessionsView>::new(db.pool.clone(), SESSION_VIEW_TABLE);
    let projection =
        Projection::<SessionsView>::new(Arc::new(sessions_store()), log(&db), no_upcasters());
    let events = [
        signed_up(&user, "joan@example.com"),
        logged_in(),
        session_started(),
    ];
    for (sequence, event) in (1..).zip(&events) {
        write(&db.pool, &user, sequence, event).await;
    }
    let committed = [
        envelope(&user, 2, events[1].clone()),
        envelope(&user, 3, events[2].clone()),
    ];
    projection.dispatch(&user, &committed).await;
    projection.dispatch(&user, &committed).await;
    settle(&db.pool).await;
    // Two projectors with checkpoints of their own both replay all three events, at once.
    let (one, other) = (projector_named(&db, "one"), projector_named(&db, "other"));
    let (first, second) = tokio::join!(one.catch_up(), other.catch_up());
    assert_eq!(first.unwrap(), 3);
    assert_eq!(second.unwrap(), 3);
    let stored = sessions_store().load(&user).await.unwrap().unwrap();
    assert_eq!(stored.view.sessions.len(), 1);
    assert_eq!(stored.last_sequence, 3);
    // The user view, which no dispatch wrote, was built by the projector.
    let user_view = user_views(&db).load(&user).await.unwrap().unwrap();
    assert_eq!(user_view.view.email, "joan@example.com");
    db.drop().await;
}

#[tokio::test]
async fn only_a_view_write_that_gives_access_commits_lazily() {
    let db = TestDb::migrated().await;
    let user = new_user();
    let session = session_started();
    let UserEvent::SessionStarted { session_id, .. } = &session else {
        unreachable!("session_started() starts a session");
    };
    let ended = UserEvent::SessionEnded {
        session_id: *session_id,
        reason: SessionEndReason::LoggedOut,
        at: time::OffsetDateTime::now_utc(),
    };
    let events = [
        signed_up(&user, "mary@example.com"),
        logged_in(),
        session.clone(),
        logged_in(),
        session_started(),
        ended,
    ];
    for (sequence, event) in (1..).zip(&events) {
        write(&db.pool, &user, sequence, event).await;
    }
    let envelopes: Vec<_> = (1..)
        .zip(&events)
        .map(|(sequence, event)| envelope(&user, sequence, event.clone()))
        .collect();
    let sessions = watched(PgViewStore::<SessionsView>::new(
        db.pool.clone(),
        SESSION_VIEW_TABLE,
    ));
    let users = watched(user_views(&db));
    let session_projection =
        Projection::<SessionsView>::new(sessions.clone(), log(&db), no_upcasters());
    let user_projection = Projection::<UserView>::new(users.clone(), log(&db), no_upcasters());
    // Sign-up and a login; another login; a logout. Each commit is dispatched as the
    // gateway does, with its own events.
    for commit in [&envelopes[0..3], &envelopes[3..5], &envelopes[5..6]] {
        session_projection.dispatch(&user, commit).await;
        user_projection.dispatch(&user, commit).await;
    }
    assert_eq!(
        *sessions.commits.lock().unwrap(),
        [Commit::Lazy, Commit::Lazy, Commit::Durable]
    );
    assert_eq!(*users.commits.lock().unwrap(), [Commit::Durable]);
    let stored = sessions.inner.load(&user).await.unwrap().unwrap();
    assert_eq!(stored.last_sequence, 6);
    assert_eq!(stored.view.sessions.len(), 1);
    db.drop().await;
}

#[tokio::test]
async fn a_lazy_view_write_leaves_its_connection_committing_durably() {
    let db = TestDb::migrated().await;
    // One connection, so that every statement below runs on the one the lazy writes used.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*db.pool.connect_options()).clone())
        .await
        .unwrap();
    let views = PgViewStore::<UserView>::new(pool.clone(), USER_VIEW_TABLE);
    let user = new_user();
    let mut view = UserView::default();
    assert!(views
        .save(&user, &view, None, 1, Commit::Lazy)
        .await
        .unwrap());
    view.tfa_enabled = true;
    assert!(views
        .save(&user, &view, Some(1), 2, Commit::Lazy)
        .await
        .unwrap());
    assert!(!views
        .save(&user, &view, Some(1), 3, Commit::Lazy)
        .await
        .unwrap());
    let stored = views.load(&user).await.unwrap().unwrap();
    assert_eq!((stored.last_sequence, stored.view.tfa_enabled), (2, true));
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(setting, "on");
    pool.close().await;
    db.drop().await;
}
