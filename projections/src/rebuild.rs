//! Rebuilding the views from the log, checking them, and swapping the rebuilt ones in.
//!
//! On Postgres, the rebuild reads the log once in a single snapshot (rows below the snapshot's
//! xmin, so its end is a checkpoint), folds each user's events in memory and bulk-inserts the
//! results into shadow tables (`<view>_rebuild`). It then catches the shadow tables up with
//! what was committed meanwhile, compares them row by row with the live views, and with
//! `apply` swaps them in: one transaction locks the views, applies the last events committed
//! since, and renames the shadow tables into place. Requests wait for that lock for as long
//! as the last events take and never see a half-built view; a commit whose dispatch waited
//! for the lock writes to the new table, and the catch-up projector follows on as before.
//!
//! In memory (the embedded mode) the same happens on the in-memory views.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use cqrs_es::{Aggregate, EventEnvelope};
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool, Row};
use twofold_domain::{User, UserEvent};

use crate::log::{checkpoint, database, envelope, Checkpoint, EventLog, PgEventLog, Upcasters};
use crate::projection::fold;
use crate::store::{MemViewStore, PgViewStore, StoredView};
use crate::{by_user, Follower, ProjectedView, Projection, SessionsView, UserView};

/// Rows per bulk insert.
const INSERT_CHUNK: usize = 5000;

/// Events read per catch-up batch.
const CATCH_UP_BATCH: usize = 5000;

/// How often, and how long apart, a live row that differs is looked at again before the
/// difference is reported: a commit's view write may still be on its way.
const RECHECKS: usize = 6;
const RECHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A difference between a live view row and the rebuilt one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The user.
    pub user: String,
    /// The view.
    pub view: &'static str,
    /// The top-level field of the view, or `(row)` when one side has no row.
    pub field: String,
    /// The live value (JSON), or `absent`.
    pub live: String,
    /// The rebuilt value (JSON), or `absent`.
    pub rebuilt: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "user {} view {} field {}: live {} rebuilt {}",
            self.user, self.view, self.field, self.live, self.rebuilt
        )
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Default)]
pub struct RebuildReport {
    /// Events replayed by the snapshot scan.
    pub events: usize,
    /// Users they belong to.
    pub users: usize,
    /// How long reading, folding and writing the shadow views took.
    pub elapsed: Duration,
    /// Events committed during the rebuild and applied to the rebuilt views afterwards.
    pub caught_up: usize,
    /// Every difference between the live and the rebuilt views.
    pub differences: Vec<Difference>,
    /// Whether the rebuilt views were swapped in.
    pub applied: bool,
}

impl RebuildReport {
    /// Replay speed.
    pub fn events_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            count_as_f64(self.events) / seconds
        } else {
            0.0
        }
    }
}

#[allow(clippy::cast_precision_loss)] // a rate for people to read
fn count_as_f64(count: usize) -> f64 {
    count as f64
}

/// A rebuild that could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Another rebuild holds the lock.
    #[error("another views rebuild is running")]
    Busy,
    /// Reading or writing failed.
    #[error(transparent)]
    Store(#[from] PersistenceError),
    /// The log breaks its own rules (a sequence gap in one user's events).
    #[error("the log of user {user} jumps from sequence {after} to {found}")]
    Gap {
        /// The user.
        user: String,
        /// The last sequence seen.
        after: usize,
        /// The next one found.
        found: usize,
    },
}

impl From<sqlx::Error> for RebuildError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(database(error))
    }
}

impl From<serde_json::Error> for RebuildError {
    fn from(error: serde_json::Error) -> Self {
        Self::Store(error.into())
    }
}

/// One user's views as folded from the log; `None` until an event changes the view, as the
/// projection writes no row before then.
#[derive(Default)]
struct Folded {
    user: Option<UserView>,
    sessions: Option<SessionsView>,
    last_sequence: usize,
}

impl Folded {
    fn apply(&mut self, event: &EventEnvelope<User>) {
        if UserView::is_changed_by(&event.payload) {
            fold(self.user.get_or_insert_with(UserView::default), event);
        }
        if SessionsView::is_changed_by(&event.payload) {
            fold(
                self.sessions.get_or_insert_with(SessionsView::default),
                event,
            );
        }
    }
}

/// Folds the events of the log into views, user by user.
struct Folder {
    users: HashMap<String, Folded>,
    upcasters: Upcasters,
    events: usize,
}

impl Folder {
    fn new(upcasters: Upcasters) -> Self {
        Self {
            users: HashMap::new(),
            upcasters,
            events: 0,
        }
    }

    /// Takes in one stored event. The payload and metadata come as JSON text: events no view
    /// reacts to never have their metadata parsed, and events no upcaster touches are parsed
    /// once, straight into the domain type.
    fn take(
        &mut self,
        aggregate_id: String,
        sequence: usize,
        event_type: &str,
        event_version: &str,
        payload: &str,
        metadata: &str,
    ) -> Result<(), RebuildError> {
        self.events += 1;
        let folded = self.users.entry(aggregate_id).or_default();
        if sequence != folded.last_sequence + 1 {
            return Err(RebuildError::Gap {
                user: String::new(),
                after: folded.last_sequence,
                found: sequence,
            });
        }
        folded.last_sequence = sequence;
        let needs_upcast = self
            .upcasters
            .iter()
            .any(|upcaster| upcaster.can_upcast(event_type, event_version));
        let event: UserEvent = if needs_upcast {
            let serialized = SerializedEvent {
                aggregate_id: String::new(),
                sequence,
                aggregate_type: User::TYPE.to_owned(),
                event_type: event_type.to_owned(),
                event_version: event_version.to_owned(),
                payload: serde_json::from_str(payload)?,
                metadata: Value::Object(serde_json::Map::new()),
            };
            envelope(serialized, &self.upcasters)?.payload
        } else {
            serde_json::from_str(payload)?
        };
        if !UserView::is_changed_by(&event) && !SessionsView::is_changed_by(&event) {
            return Ok(());
        }
        let envelope = EventEnvelope {
            aggregate_id: String::new(),
            sequence,
            payload: event,
            metadata: serde_json::from_str(metadata)?,
        };
        folded.apply(&envelope);
        Ok(())
    }

    fn user_views(&self) -> HashMap<String, StoredView<UserView>> {
        self.users
            .iter()
            .filter_map(|(id, folded)| {
                let view = folded.user.clone()?;
                Some((
                    id.clone(),
                    StoredView {
                        view,
                        last_sequence: folded.last_sequence,
                    },
                ))
            })
            .collect()
    }

    fn session_views(&self) -> HashMap<String, StoredView<SessionsView>> {
        self.users
            .iter()
            .filter_map(|(id, folded)| {
                let view = folded.sessions.clone()?;
                Some((
                    id.clone(),
                    StoredView {
                        view,
                        last_sequence: folded.last_sequence,
                    },
                ))
            })
            .collect()
    }
}

fn shadow_table(view: &str) -> String {
    format!("{view}_rebuild")
}

/// The snapshot scan: every `User` event below the snapshot's xmin, folded per user, in one
/// repeatable-read transaction. Returns the folder and the checkpoint of the last row read.
async fn scan(pool: &PgPool, upcasters: Upcasters) -> Result<(Folder, Checkpoint), RebuildError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let horizon: String =
        sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
            .fetch_one(&mut *tx)
            .await?;
    let mut folder = Folder::new(upcasters);
    let mut last = Checkpoint::ORIGIN;
    {
        let mut rows = sqlx::query(
            "SELECT transaction_id::text::bigint AS transaction_id, position, aggregate_id, \
                sequence, event_type, event_version, payload::text AS payload, \
                metadata::text AS metadata \
             FROM events \
             WHERE aggregate_type = $1 AND transaction_id < $2::xid8 \
             ORDER BY transaction_id, position",
        )
        .bind(User::TYPE)
        .bind(&horizon)
        .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            let aggregate_id: String = row.try_get("aggregate_id")?;
            let sequence: i64 = row.try_get("sequence")?;
            let sequence = usize::try_from(sequence)
                .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?;
            let event_type: &str = row.try_get("event_type")?;
            let event_version: &str = row.try_get("event_version")?;
            let payload: &str = row.try_get("payload")?;
            let metadata: &str = row.try_get("metadata")?;
            let id = aggregate_id.clone();
            folder
                .take(
                    aggregate_id,
                    sequence,
                    event_type,
                    event_version,
                    payload,
                    metadata,
                )
                .map_err(|error| match error {
                    RebuildError::Gap { after, found, .. } => RebuildError::Gap {
                        user: id,
                        after,
                        found,
                    },
                    other => other,
                })?;
            last = checkpoint(&row)?;
        }
    }
    tx.commit().await?;
    Ok((folder, last))
}

/// Creates `<view>_rebuild` empty, shaped like the live table.
async fn create_shadow(connection: &mut PgConnection, view: &str) -> Result<(), RebuildError> {
    let shadow = shadow_table(view);
    sqlx::query(&format!("DROP TABLE IF EXISTS {shadow}"))
        .execute(&mut *connection)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE {shadow} (LIKE {view} INCLUDING ALL)"
    ))
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Bulk-inserts `views` into `table`.
async fn insert_views<V: Serialize>(
    connection: &mut PgConnection,
    table: &str,
    views: &HashMap<String, StoredView<V>>,
) -> Result<(), RebuildError> {
    let statement = format!(
        "INSERT INTO {table} (view_id, last_sequence, payload) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[]::json[])"
    );
    let rows: Vec<(&String, &StoredView<V>)> = views.iter().collect();
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut ids = Vec::with_capacity(chunk.len());
        let mut sequences = Vec::with_capacity(chunk.len());
        let mut payloads = Vec::with_capacity(chunk.len());
        for (id, stored) in chunk {
            ids.push((*id).clone());
            sequences.push(
                i64::try_from(stored.last_sequence)
                    .map_err(|error| PersistenceError::UnknownError(Box::new(error)))?,
            );
            payloads.push(serde_json::to_string(&stored.view)?);
        }
        sqlx::query(&statement)
            .bind(ids)
            .bind(sequences)
            .bind(payloads)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Reads the log after `from` into `followers` until it is exhausted; returns the new
/// checkpoint and how many events it read.
async fn catch_up(
    log: &dyn EventLog,
    followers: &[&dyn Follower],
    upcasters: &Upcasters,
    mut from: Checkpoint,
) -> Result<(Checkpoint, usize), RebuildError> {
    let mut read = 0;
    loop {
        let events = log.read_after(from, CATCH_UP_BATCH).await?;
        let Some(last) = events.last().map(|event| event.checkpoint) else {
            return Ok((from, read));
        };
        read += events.len();
        let batch = by_user(events, upcasters)?;
        for follower in followers {
            follower.follow(&batch).await?;
        }
        from = last;
    }
}

/// Every row of a view table: user -> (payload as JSON, last sequence).
async fn load_table(
    pool: &PgPool,
    table: &str,
    only: Option<&[String]>,
) -> Result<BTreeMap<String, Value>, RebuildError> {
    let rows: Vec<(String, Value)> = match only {
        None => {
            sqlx::query_as(&format!("SELECT view_id, payload FROM {table}"))
                .fetch_all(pool)
                .await?
        }
        Some(ids) => {
            sqlx::query_as(&format!(
                "SELECT view_id, payload FROM {table} WHERE view_id = ANY($1)"
            ))
            .bind(ids)
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows.into_iter().collect())
}

/// The differences between two sets of view rows, field by field.
fn compare(
    view: &'static str,
    live: &BTreeMap<String, Value>,
    rebuilt: &BTreeMap<String, Value>,
) -> Vec<Difference> {
    let mut differences = Vec::new();
    let users: BTreeSet<&String> = live.keys().chain(rebuilt.keys()).collect();
    for user in users {
        let difference = |field: &str, live: String, rebuilt: String| Difference {
            user: user.clone(),
            view,
            field: field.to_owned(),
            live,
            rebuilt,
        };
        match (live.get(user), rebuilt.get(user)) {
            (Some(Value::Object(live)), Some(Value::Object(rebuilt))) => {
                let fields: BTreeSet<&String> = live.keys().chain(rebuilt.keys()).collect();
                for field in fields {
                    let (live, rebuilt) = (live.get(field), rebuilt.get(field));
                    if live != rebuilt {
                        differences.push(difference(field, shown(live), shown(rebuilt)));
                    }
                }
            }
            (Some(live), Some(rebuilt)) if live != rebuilt => {
                differences.push(difference("(row)", live.to_string(), rebuilt.to_string()));
            }
            (Some(live), None) => {
                differences.push(difference("(row)", live.to_string(), "absent".to_owned()));
            }
            (None, Some(rebuilt)) => {
                differences.push(difference(
                    "(row)",
                    "absent".to_owned(),
                    rebuilt.to_string(),
                ));
            }
            _ => {}
        }
    }
    differences
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "absent".to_owned(), Value::to_string)
}

/// The names of the views a rebuild covers.
pub const VIEWS: [&str; 2] = [UserView::NAME, SessionsView::NAME];

/// Compares live and shadow tables; differences are looked at again a few times, the shadow
/// caught up in between, so that a commit still on its way is not reported.
async fn differences(
    pool: &PgPool,
    log: &dyn EventLog,
    followers: &[&dyn Follower],
    upcasters: &Upcasters,
    checkpoint: &mut Checkpoint,
) -> Result<Vec<Difference>, RebuildError> {
    let mut found = Vec::new();
    for view in VIEWS {
        let live = load_table(pool, view, None).await?;
        let rebuilt = load_table(pool, &shadow_table(view), None).await?;
        found.extend(compare(view, &live, &rebuilt));
    }
    for _ in 0..RECHECKS {
        if found.is_empty() {
            break;
        }
        tokio::time::sleep(RECHECK_INTERVAL).await;
        let (caught_up, _) = catch_up(log, followers, upcasters, *checkpoint).await?;
        *checkpoint = caught_up;
        let mut again = Vec::new();
        for view in VIEWS {
            let users: Vec<String> = found
                .iter()
                .filter(|difference| difference.view == view)
                .map(|difference| difference.user.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if users.is_empty() {
                continue;
            }
            let live = load_table(pool, view, Some(&users)).await?;
            let rebuilt = load_table(pool, &shadow_table(view), Some(&users)).await?;
            again.extend(compare(view, &live, &rebuilt));
        }
        found = again;
    }
    Ok(found)
}

/// How long a rebuild waits for the transactions running when it starts.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until every transaction that had started when it was called has ended (at most
/// [`SETTLE_TIMEOUT`]), so that the snapshot scan covers every event committed before. The
/// horizon is the whole database cluster's: a long transaction anywhere holds it back.
async fn settle(pool: &PgPool) -> Result<(), RebuildError> {
    let started: String =
        sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
            .fetch_one(pool)
            .await?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let settled: bool =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::xid8")
                .bind(&started)
                .fetch_one(pool)
                .await?;
        if settled {
            return Ok(());
        }
        if Instant::now() > deadline {
            tracing::warn!(
                "a transaction older than the rebuild is still running: the events it commits \
                 are applied after the scan"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Key of the advisory lock that lets one rebuild run at a time.
const REBUILD_LOCK: i64 = 0x7477_6f66_6f6c_6401;

/// Rebuilds every view from the Postgres log into shadow tables, reports how they differ from
/// the live ones, and with `apply` swaps them in.
pub async fn rebuild_postgres(
    pool: &PgPool,
    upcasters: Upcasters,
    apply: bool,
) -> Result<RebuildReport, RebuildError> {
    let mut lock = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(REBUILD_LOCK)
        .fetch_one(&mut *lock)
        .await?;
    if !locked {
        return Err(RebuildError::Busy);
    }
    let result = rebuild_locked(pool, &mut lock, upcasters, apply).await;
    let _unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(REBUILD_LOCK)
        .execute(&mut *lock)
        .await;
    result
}

async fn rebuild_locked(
    pool: &PgPool,
    connection: &mut PgConnection,
    upcasters: Upcasters,
    apply: bool,
) -> Result<RebuildReport, RebuildError> {
    for view in VIEWS {
        create_shadow(connection, view).await?;
    }
    settle(pool).await?;
    let started = Instant::now();
    let (folder, scanned) = scan(pool, Arc::clone(&upcasters)).await?;
    insert_views(
        connection,
        &shadow_table(UserView::NAME),
        &folder.user_views(),
    )
    .await?;
    insert_views(
        connection,
        &shadow_table(SessionsView::NAME),
        &folder.session_views(),
    )
    .await?;
    let mut report = RebuildReport {
        events: folder.events,
        users: folder.users.len(),
        elapsed: started.elapsed(),
        ..RebuildReport::default()
    };
    drop(folder);

    let log: Arc<dyn EventLog> = Arc::new(PgEventLog::new(pool.clone()));
    let user_views = Projection::<UserView>::new(
        Arc::new(PgViewStore::new(
            pool.clone(),
            &shadow_table(UserView::NAME),
        )),
        Arc::clone(&log),
        Arc::clone(&upcasters),
    );
    let session_views = Projection::<SessionsView>::new(
        Arc::new(PgViewStore::new(
            pool.clone(),
            &shadow_table(SessionsView::NAME),
        )),
        Arc::clone(&log),
        Arc::clone(&upcasters),
    );
    let followers: [&dyn Follower; 2] = [&user_views, &session_views];
    let (mut checkpoint, caught_up) = catch_up(&*log, &followers, &upcasters, scanned).await?;
    report.caught_up = caught_up;
    report.differences = differences(pool, &*log, &followers, &upcasters, &mut checkpoint).await?;
    if apply {
        let (caught_up, read) = catch_up(&*log, &followers, &upcasters, checkpoint).await?;
        report.caught_up += read;
        report.caught_up += swap(connection, caught_up, &upcasters).await?;
        report.applied = true;
    } else {
        for view in VIEWS {
            sqlx::query(&format!("DROP TABLE {}", shadow_table(view)))
                .execute(&mut *connection)
                .await?;
        }
    }
    Ok(report)
}

/// How long the swap waits for the views' lock before giving up.
const SWAP_LOCK_TIMEOUT: &str = "10s";

/// In one transaction: locks the live and shadow views, applies to the shadow views every
/// event committed after `from`, and renames the shadow tables into place. Returns how many
/// events it applied.
async fn swap(
    connection: &mut PgConnection,
    from: Checkpoint,
    upcasters: &Upcasters,
) -> Result<usize, RebuildError> {
    let mut tx = connection.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    let tables: Vec<String> = VIEWS
        .iter()
        .flat_map(|view| [(*view).to_owned(), shadow_table(view)])
        .collect();
    sqlx::query(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        tables.join(", ")
    ))
    .execute(&mut *tx)
    .await?;
    // Every event committed before this statement, including those above the oldest running
    // transaction: a commit after it dispatches after it too, and waits for the lock.
    let users: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, count(*) FROM events \
         WHERE aggregate_type = $1 AND (transaction_id, position) > ($2::text::xid8, $3) \
         GROUP BY aggregate_id",
    )
    .bind(User::TYPE)
    .bind(from.transaction_id().to_string())
    .bind(from.position())
    .fetch_all(&mut *tx)
    .await?;
    let mut applied = 0;
    for (user, events) in users {
        apply_in_transaction::<UserView>(&mut tx, &user, upcasters).await?;
        apply_in_transaction::<SessionsView>(&mut tx, &user, upcasters).await?;
        applied += usize::try_from(events).unwrap_or_default();
    }
    for view in VIEWS {
        let shadow = shadow_table(view);
        sqlx::query(&format!("DROP TABLE {view}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER TABLE {shadow} RENAME TO {view}"))
            .execute(&mut *tx)
            .await?;
        let indexes: Vec<String> =
            sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE tablename = $1")
                .bind(view)
                .fetch_all(&mut *tx)
                .await?;
        for index in indexes {
            if let Some(rest) = index.strip_prefix(&shadow) {
                sqlx::query(&format!("ALTER INDEX {index} RENAME TO {view}{rest}"))
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(applied)
}

/// Applies to the shadow row of `user` every event of theirs after the row's last sequence,
/// read inside the swap's transaction.
async fn apply_in_transaction<V: ProjectedView>(
    connection: &mut PgConnection,
    user: &str,
    upcasters: &Upcasters,
) -> Result<(), RebuildError> {
    let table = shadow_table(V::NAME);
    let row: Option<(Value, i64)> = sqlx::query_as(&format!(
        "SELECT payload, last_sequence FROM {table} WHERE view_id = $1"
    ))
    .bind(user)
    .fetch_optional(&mut *connection)
    .await?;
    let (mut view, applied) = match row {
        Some((payload, last)) => (
            serde_json::from_value::<V>(payload)?,
            usize::try_from(last)
                .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?,
        ),
        None => (V::default(), 0),
    };
    let rows = sqlx::query(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
            metadata \
         FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 \
         ORDER BY sequence",
    )
    .bind(User::TYPE)
    .bind(user)
    .bind(i64::try_from(applied).map_err(|error| PersistenceError::UnknownError(Box::new(error)))?)
    .fetch_all(&mut *connection)
    .await?;
    let mut expected = applied + 1;
    let mut changed = false;
    for row in &rows {
        let event = envelope(crate::log::serialized_event(row)?, upcasters)?;
        if event.sequence != expected {
            return Err(RebuildError::Gap {
                user: user.to_owned(),
                after: expected - 1,
                found: event.sequence,
            });
        }
        changed |= fold(&mut view, &event);
        expected += 1;
    }
    if !changed {
        return Ok(());
    }
    let last = i64::try_from(expected - 1)
        .map_err(|error| PersistenceError::UnknownError(Box::new(error)))?;
    sqlx::query(&format!(
        "INSERT INTO {table} (view_id, last_sequence, payload) VALUES ($1, $2, $3) \
         ON CONFLICT (view_id) DO UPDATE \
            SET last_sequence = excluded.last_sequence, payload = excluded.payload"
    ))
    .bind(user)
    .bind(last)
    .bind(serde_json::to_value(&view)?)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Rebuilds the in-memory views from the in-memory log, reports how they differ from the live
/// ones, and with `apply` puts the rebuilt ones in their place.
pub async fn rebuild_memory(
    log: Arc<dyn EventLog>,
    upcasters: Upcasters,
    user_views: &Arc<MemViewStore<UserView>>,
    session_views: &Arc<MemViewStore<SessionsView>>,
    apply: bool,
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let mut folder = Folder::new(Arc::clone(&upcasters));
    let mut from = Checkpoint::ORIGIN;
    loop {
        let events = log.read_after(from, CATCH_UP_BATCH).await?;
        let Some(last) = events.last().map(|event| event.checkpoint) else {
            break;
        };
        for logged in events {
            let event = logged.event;
            if event.aggregate_type != User::TYPE {
                continue;
            }
            let id = event.aggregate_id.clone();
            folder
                .take(
                    event.aggregate_id,
                    event.sequence,
                    &event.event_type,
                    &event.event_version,
                    &event.payload.to_string(),
                    &event.metadata.to_string(),
                )
                .map_err(|error| match error {
                    RebuildError::Gap { after, found, .. } => RebuildError::Gap {
                        user: id,
                        after,
                        found,
                    },
                    other => other,
                })?;
        }
        from = last;
    }
    let rebuilt_users = Arc::new(MemViewStore::default());
    rebuilt_users.replace_all(folder.user_views())?;
    let rebuilt_sessions = Arc::new(MemViewStore::default());
    rebuilt_sessions.replace_all(folder.session_views())?;
    let mut report = RebuildReport {
        events: folder.events,
        users: folder.users.len(),
        elapsed: started.elapsed(),
        ..RebuildReport::default()
    };
    drop(folder);
    let users = Projection::<UserView>::new(
        Arc::clone(&rebuilt_users) as _,
        Arc::clone(&log),
        Arc::clone(&upcasters),
    );
    let sessions = Projection::<SessionsView>::new(
        Arc::clone(&rebuilt_sessions) as _,
        Arc::clone(&log),
        Arc::clone(&upcasters),
    );
    let followers: [&dyn Follower; 2] = [&users, &sessions];
    let (from, caught_up) = catch_up(&*log, &followers, &upcasters, from).await?;
    report.caught_up = caught_up;
    report.differences = compare_memory(UserView::NAME, user_views, &rebuilt_users)?;
    report.differences.extend(compare_memory(
        SessionsView::NAME,
        session_views,
        &rebuilt_sessions,
    )?);
    if apply {
        user_views.replace_all(rebuilt_users.all()?.into_iter().collect())?;
        session_views.replace_all(rebuilt_sessions.all()?.into_iter().collect())?;
        // What was committed between the catch-up and the swap.
        let live_users = Projection::<UserView>::new(
            Arc::clone(user_views) as _,
            Arc::clone(&log),
            Arc::clone(&upcasters),
        );
        let live_sessions = Projection::<SessionsView>::new(
            Arc::clone(session_views) as _,
            Arc::clone(&log),
            Arc::clone(&upcasters),
        );
        let (_, read) = catch_up(&*log, &[&live_users, &live_sessions], &upcasters, from).await?;
        report.caught_up += read;
        report.applied = true;
    }
    Ok(report)
}

fn compare_memory<V: Clone + Serialize>(
    view: &'static str,
    live: &MemViewStore<V>,
    rebuilt: &MemViewStore<V>,
) -> Result<Vec<Difference>, RebuildError> {
    let rows = |store: &MemViewStore<V>| -> Result<BTreeMap<String, Value>, RebuildError> {
        store
            .all()?
            .into_iter()
            .map(|(id, stored)| Ok((id, serde_json::to_value(&stored.view)?)))
            .collect()
    };
    Ok(compare(view, &rows(live)?, &rows(rebuilt)?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_changed_field_a_missing_row_and_an_extra_row_are_each_a_difference() {
        let live = BTreeMap::from([
            ("a".to_owned(), json!({"email": "a@x", "is_admin": true})),
            ("b".to_owned(), json!({"email": "b@x"})),
        ]);
        let rebuilt = BTreeMap::from([
            ("a".to_owned(), json!({"email": "a@x", "is_admin": false})),
            ("c".to_owned(), json!({"email": "c@x"})),
        ]);
        let found: Vec<String> = compare("user_view", &live, &rebuilt)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "user a view user_view field is_admin: live true rebuilt false",
                r#"user b view user_view field (row): live {"email":"b@x"} rebuilt absent"#,
                r#"user c view user_view field (row): live absent rebuilt {"email":"c@x"}"#,
            ]
        );
    }
}
