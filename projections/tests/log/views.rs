//! Item 2 of the log: views record the last event they applied, never apply one twice or out
//! of order, and a view write that failed is repaired by the catch-up projector.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_es::persist::PersistenceError;
use cqrs_es::{EventEnvelope, Query, View};
use twofold_domain::user::SessionEndReason;
use twofold_domain::values::{RefreshTokenId, SessionId};
use twofold_domain::{Factor, User, UserEvent};
use twofold_projections::log::{EventLog, PgEventLog, Upcasters};
use twofold_projections::{
    Commit, PgCheckpointStore, PgViewStore, ProjectedView, Projection, Projector, SessionsView,
    StoredView, UserView, ViewStore, SESSION_VIEW_TABLE, USER_VIEW_TABLE, VIEWS_PROJECTOR,
};

use crate::db::{
    logged_in, new_user, now, session_started, settle, signed_up, tfa_disabled, tfa_enabled, write,
    write_with, TestDb,
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
/// and which records how each write asked to be committed, and which writes it made in place.
struct Watched<V> {
    inner: PgViewStore<V>,
    failing: AtomicBool,
    commits: std::sync::Mutex<Vec<Commit>>,
    in_place: std::sync::Mutex<Vec<bool>>,
}

fn watched<V>(inner: PgViewStore<V>) -> Arc<Watched<V>> {
    Arc::new(Watched {
        inner,
        failing: AtomicBool::new(false),
        commits: std::sync::Mutex::new(Vec::new()),
        in_place: std::sync::Mutex::new(Vec::new()),
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

    async fn change_in_place(
        &self,
        view_id: &str,
        event: &EventEnvelope<User>,
        last_sequence: usize,
        commit: Commit,
    ) -> Result<bool, PersistenceError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(PersistenceError::ConnectionError("connection reset".into()));
        }
        let changed = self
            .inner
            .change_in_place(view_id, event, last_sequence, commit)
            .await?;
        if changed {
            self.commits.lock().unwrap().push(commit);
        }
        self.in_place.lock().unwrap().push(changed);
        Ok(changed)
    }
}

fn user_views(db: &TestDb) -> PgViewStore<UserView> {
    PgViewStore::new(db.pool.clone(), USER_VIEW_TABLE)
}

/// The sessions views, changed in place as the service changes them.
fn session_views(db: &TestDb) -> PgViewStore<SessionsView> {
    PgViewStore::new(db.pool.clone(), SESSION_VIEW_TABLE).changed_in_place()
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
    let sessions =
        Projection::<SessionsView>::new(Arc::new(session_views(db)), log(db), no_upcasters());
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
    let sessions_store = || session_views(&db);
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
    let sessions = watched(session_views(&db));
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
    assert_eq!(
        *sessions.in_place.lock().unwrap(),
        [true, true, true],
        "each commit changed one session, in place"
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
    let pool = db.one_connection().await;
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

/// Dice for the random histories below: xorshift from a seed, so that a failing history is
/// replayed from the seed its assertion names.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

/// A random event of a user whose live sessions are `live`: mostly session events, some that
/// leave the sessions view as it is, now and then an erasure. Times carry nanoseconds.
fn random_event(dice: &mut Dice, live: &mut Vec<SessionId>, step: i64) -> UserEvent {
    let at = now() + time::Duration::nanoseconds(step * 1_000_000_007);
    let some_live = |dice: &mut Dice, live: &[SessionId]| match live.len() {
        0 => SessionId::new_random(),
        n => live[usize::try_from(dice.roll(n as u64)).unwrap()],
    };
    match dice.roll(20) {
        0..=5 => {
            let started = session_started();
            if let UserEvent::SessionStarted { session_id, .. } = &started {
                live.push(*session_id);
            }
            started
        }
        6..=10 => UserEvent::SessionRefreshed {
            session_id: some_live(dice, live),
            refresh_id: RefreshTokenId::new_random(),
            at,
        },
        11 => UserEvent::SessionRefreshed {
            session_id: SessionId::new_random(),
            refresh_id: RefreshTokenId::new_random(),
            at,
        },
        12..=14 => {
            let session_id = some_live(dice, live);
            live.retain(|id| *id != session_id);
            UserEvent::SessionEnded {
                session_id,
                reason: SessionEndReason::LoggedOut,
                at,
            }
        }
        15..=16 => logged_in(),
        17..=18 => UserEvent::LoginFailed {
            factor: Factor::Password,
            challenge_id: None,
            at,
        },
        _ => {
            live.clear();
            UserEvent::UserErased { at }
        }
    }
}

/// Client metadata as the API records it: an address, and now and then no user agent.
fn random_client(dice: &mut Dice) -> HashMap<String, String> {
    let mut metadata = HashMap::from([
        ("actor".to_owned(), "anonymous".to_owned()),
        ("ip".to_owned(), format!("192.0.2.{}", dice.roll(4))),
    ]);
    if dice.roll(3) > 0 {
        metadata.insert("user_agent".to_owned(), format!("agent/{}", dice.roll(3)));
    }
    metadata
}

#[tokio::test]
async fn a_sessions_view_changed_in_place_is_what_folding_random_histories_gives() {
    let db = TestDb::migrated().await;
    let views = watched(session_views(&db));
    let projection = Projection::<SessionsView>::new(views.clone(), log(&db), no_upcasters());
    for seed in 1..=4_u64 {
        let mut dice = Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let user = new_user();
        write(&db.pool, &user, 1, &signed_up(&user, "ada@example.com")).await;
        let mut folded = SessionsView::default();
        let mut live = Vec::new();
        let mut sequence: usize = 1;
        let mut multiple_changes = 0;
        // Whether an event that changes the view was committed and never dispatched, as when
        // the service stops between the two: only the catch-up projector would apply it.
        let mut behind = false;
        for commit in 0..40 {
            let mut envelopes = Vec::new();
            for _ in 0..=dice.roll(3) {
                sequence += 1;
                let stored_sequence = i64::try_from(sequence).unwrap();
                let event = random_event(&mut dice, &mut live, stored_sequence);
                let metadata = random_client(&mut dice);
                write_with(
                    &db.pool,
                    &user,
                    stored_sequence,
                    &event,
                    serde_json::to_value(&metadata).unwrap(),
                )
                .await;
                let envelope = EventEnvelope {
                    aggregate_id: user.clone(),
                    sequence,
                    payload: event,
                    metadata,
                };
                folded.update(&envelope);
                envelopes.push(envelope);
            }
            let changes = envelopes
                .iter()
                .filter(|envelope| SessionsView::is_changed_by(envelope.payload.kind()))
                .count();
            multiple_changes += usize::from(changes > 1);
            if dice.roll(6) == 0 {
                behind |= changes > 0;
                continue;
            }
            let calls = views.in_place.lock().unwrap().len();
            projection.dispatch(&user, &envelopes).await;
            if changes == 1 {
                // In place whatever came in between, unless an event that changes the view is
                // missing from it: then it reads the log and catches up.
                assert_eq!(
                    views.in_place.lock().unwrap()[calls..],
                    [!behind],
                    "seed {seed}, commit {commit}"
                );
            }
            behind &= changes == 0;
            if behind {
                continue;
            }
            if let Some(stored) = views.inner.load(&user).await.unwrap() {
                assert_eq!(stored.view, folded, "seed {seed}, commit {commit}");
            } else {
                assert_eq!(
                    folded,
                    SessionsView::default(),
                    "seed {seed}, commit {commit}"
                );
            }
        }
        assert!(multiple_changes > 0, "seed {seed}: some commits fall back");
    }
    let in_place = views.in_place.lock().unwrap().clone();
    assert!(
        in_place.iter().filter(|changed| **changed).count() > 40,
        "{in_place:?}"
    );
    assert!(
        in_place.contains(&false),
        "some views were behind: {in_place:?}"
    );
    db.drop().await;
}
