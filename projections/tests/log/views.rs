//! Item 2 of the log: views record the last event they applied, never apply one twice or out
//! of order, and a view write that failed is repaired by the catch-up projector.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_es::persist::PersistenceError;
use cqrs_es::{EventEnvelope, Query};
use twofold_domain::{User, UserEvent};
use twofold_projections::log::{EventLog, PgEventLog, Upcasters};
use twofold_projections::{
    PgCheckpointStore, PgViewStore, Projection, Projector, SessionsView, StoredView, UserView,
    ViewStore, SESSION_VIEW_TABLE, USER_VIEW_TABLE, VIEWS_PROJECTOR,
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

/// A view store whose writes fail while `failing` is set, as a database blip would.
struct Flaky<V> {
    inner: PgViewStore<V>,
    failing: AtomicBool,
}

#[async_trait]
impl<V: serde::Serialize + serde::de::DeserializeOwned + Send + Sync> ViewStore<V> for Flaky<V> {
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
    ) -> Result<bool, PersistenceError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(PersistenceError::ConnectionError("connection reset".into()));
        }
        self.inner.save(view_id, view, read, last_sequence).await
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
    let flaky = Arc::new(Flaky {
        inner: user_views(&db),
        failing: AtomicBool::new(false),
    });
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
