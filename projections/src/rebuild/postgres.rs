//! The rebuild on Postgres: a snapshot scan into shadow tables, the comparison with the live
//! views, and the swap.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::persist::PersistenceError;
use cqrs_es::Aggregate;
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, PgPool, Row};
use twofold_domain::User;

use super::fold::{Folder, StoredRow};
use super::{catch_up, compare, Difference, RebuildError, RebuildReport, VIEWS};
use crate::log::{envelope, Checkpoint, EventLog, PgEventLog, Upcasters};
use crate::personal::{KeyRing, PersonalData};
use crate::projection::fold;
use crate::store::PgViewStore;
use crate::{Follower, ProjectedView, Projection, SessionsView, UserView};

/// Rows per bulk insert.
const INSERT_CHUNK: usize = 5000;

/// Rows the snapshot scan hands to its folder at a time, and batches it lets wait.
const FOLD_BATCH: usize = 256;
const FOLD_QUEUE: usize = 16;
/// Threads that fold at most: past a few, the one task reading the rows is what they wait for.
const MAX_FOLDERS: usize = 4;

/// How often, and how long apart, a live row that differs is looked at again before the
/// difference is reported: a commit's view write may still be on its way.
const RECHECKS: usize = 6;
const RECHECK_INTERVAL: Duration = Duration::from_millis(500);

fn shadow_table(view: &str) -> String {
    format!("{view}_rebuild")
}

/// The snapshot scan: every `User` event below the snapshot's xmin, folded per user, in one
/// repeatable-read transaction, personal data opened with the keys `personal` keeps. Returns
/// the rows of the shadow tables and the checkpoint of the latest event read.
///
/// The rows are read as the table holds them, in no order, which is the cheapest read of a
/// whole table (no index walked, nothing sorted); the folder puts each user's events back in
/// their order.
async fn scan(
    connection: &mut PgConnection,
    personal: &dyn PersonalData,
    upcasters: Upcasters,
) -> Result<(Scanned, Checkpoint), RebuildError> {
    let mut tx = connection.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    // The scan reads nearly every row of the table, for which reading the table as it lies is
    // the cheapest plan there is. Estimated from statistics that may be missing (a table
    // filled since its last `ANALYZE` looks empty) or off, it can instead be costed as a
    // small read and walk indexes, whole.
    sqlx::query("SET LOCAL enable_indexscan = off")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL enable_bitmapscan = off")
        .execute(&mut *tx)
        .await?;
    let horizon: String =
        sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
            .fetch_one(&mut *tx)
            .await?;
    // This task reads the rows off the connection; decoding and folding them costs more than
    // reading them, so that is shared among threads of their own, each with its own users
    // (all of one user's events go to the same thread). The rows are read while the keys
    // are, and wait in the folders' queues until they are.
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_FOLDERS);
    let (batches, queued): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| tokio::sync::mpsc::channel(FOLD_QUEUE))
        .unzip();
    let (read, folded) = tokio::join!(
        read_rows(&mut tx, &horizon, batches),
        fold_queued(personal, upcasters, queued)
    );
    // A fold that stopped early stops the reading: its error is the one to report.
    let scanned = folded?;
    let last = read?;
    tx.commit().await?;
    Ok((scanned, last))
}

/// Folds the batches of rows in `queued`, each on a thread of its own, with every user's
/// data key, which it reads first: the keys that `personal` holds once the scan's snapshot
/// is taken are those of every user it holds (and maybe of some it does not); a user erased
/// since reads as erased, as their erasure then does.
async fn fold_queued(
    personal: &dyn PersonalData,
    upcasters: Upcasters,
    queued: Vec<tokio::sync::mpsc::Receiver<Vec<PgRow>>>,
) -> Result<Scanned, RebuildError> {
    let keys = Arc::new(personal.all_keys().await?);
    let folding: Vec<_> = queued
        .into_iter()
        .map(|received| {
            let folder = Folder::new(Arc::clone(&upcasters), Arc::clone(&keys));
            tokio::task::spawn_blocking(move || fold_rows(folder, received))
        })
        .collect();
    let mut scanned = Scanned::default();
    for worker in folding {
        let part = worker
            .await
            .map_err(|error| PersistenceError::UnknownError(Box::new(error)))?;
        scanned.absorb(part?);
    }
    Ok(scanned)
}

/// What the snapshot scan found: how much it read, and the rows of the shadow tables.
#[derive(Default)]
struct Scanned {
    events: usize,
    users: usize,
    user_views: ViewRows,
    session_views: ViewRows,
}

impl Scanned {
    /// What `folder` folded, its views serialized as the shadow tables store them.
    fn of(folder: &Folder) -> Result<Self, RebuildError> {
        let mut scanned = Self {
            events: folder.events,
            users: folder.users.len(),
            ..Self::default()
        };
        for (id, view, last) in folder.user_views() {
            scanned.user_views.push(id, view, last)?;
        }
        for (id, view, last) in folder.session_views() {
            scanned.session_views.push(id, &view, last)?;
        }
        Ok(scanned)
    }

    /// Takes in what another folder found: other users.
    fn absorb(&mut self, other: Self) {
        self.events += other.events;
        self.users += other.users;
        self.user_views.append(other.user_views);
        self.session_views.append(other.session_views);
    }
}

/// Rows of a view table, column by column, as a bulk insert binds them.
#[derive(Default)]
struct ViewRows {
    ids: Vec<String>,
    sequences: Vec<i64>,
    payloads: Vec<String>,
}

impl ViewRows {
    fn push<V: Serialize>(
        &mut self,
        id: &str,
        view: &V,
        last_sequence: usize,
    ) -> Result<(), RebuildError> {
        self.ids.push(id.to_owned());
        self.sequences.push(
            i64::try_from(last_sequence)
                .map_err(|error| PersistenceError::UnknownError(Box::new(error)))?,
        );
        self.payloads.push(serde_json::to_string(view)?);
        Ok(())
    }

    fn append(&mut self, mut other: Self) {
        self.ids.append(&mut other.ids);
        self.sequences.append(&mut other.sequences);
        self.payloads.append(&mut other.payloads);
    }
}

/// Sends the rows of the snapshot scan to the folders behind `batches`, each user's to the
/// same one, [`FOLD_BATCH`] at a time, until the scan ends or a folder stops taking them.
/// Returns the checkpoint of the latest row read.
async fn read_rows(
    tx: &mut PgConnection,
    horizon: &str,
    batches: Vec<tokio::sync::mpsc::Sender<Vec<PgRow>>>,
) -> Result<Checkpoint, RebuildError> {
    let mut rows = sqlx::query(
        "SELECT transaction_id, position, aggregate_id, sequence, event_type, event_version, \
            payload, metadata \
         FROM events \
         WHERE aggregate_type = $1 AND transaction_id < $2::xid8",
    )
    .bind(User::TYPE)
    .bind(horizon)
    .fetch(&mut *tx);
    let mut filling: Vec<Vec<PgRow>> = batches
        .iter()
        .map(|_| Vec::with_capacity(FOLD_BATCH))
        .collect();
    let mut last = Checkpoint::ORIGIN;
    while let Some(row) = rows.try_next().await? {
        last = last.max(checkpoint_of(&row)?);
        let user: &str = row.try_get(AGGREGATE_ID)?;
        let worker = folder_of(user, batches.len());
        filling[worker].push(row);
        if filling[worker].len() == FOLD_BATCH {
            let full = std::mem::replace(&mut filling[worker], Vec::with_capacity(FOLD_BATCH));
            if batches[worker].send(full).await.is_err() {
                // The folder failed: its error is the one to report.
                return Ok(last);
            }
        }
    }
    for (batch, sender) in filling.into_iter().zip(&batches) {
        if !batch.is_empty() {
            // A folder gone by now has its own error to report.
            let _sent = sender.send(batch).await;
        }
    }
    Ok(last)
}

/// The column of the user in the snapshot scan's rows.
const AGGREGATE_ID: usize = 2;

/// Which of `folders` folds `user`'s events: any function of the user alone keeps their
/// events together and in order.
fn folder_of(user: &str, folders: usize) -> usize {
    let hash = user.bytes().fold(0usize, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(usize::from(byte))
    });
    hash % folders
}

/// The place of `row` in the log.
fn checkpoint_of(row: &PgRow) -> Result<Checkpoint, RebuildError> {
    // An `xid8` is sent as the eight bytes of an `int8`, which sqlx has no type to check for.
    let (transaction_id, position): (i64, i64) = (row.try_get_unchecked(0)?, row.try_get(1)?);
    let transaction_id = u64::try_from(transaction_id)
        .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?;
    Ok(Checkpoint::new(transaction_id, position))
}

/// Decodes and folds the rows that come from `batches` into `folder` until they end; then
/// serializes the views.
fn fold_rows(
    mut folder: Folder,
    mut batches: tokio::sync::mpsc::Receiver<Vec<PgRow>>,
) -> Result<Scanned, RebuildError> {
    while let Some(batch) = batches.blocking_recv() {
        for row in &batch {
            // By position in the select list: a column read by name is a hash lookup. A `json`
            // value is sent as its text, which sqlx reads as a `&str` only unchecked.
            let aggregate_id: &str = row.try_get(AGGREGATE_ID)?;
            let sequence: i64 = row.try_get(3)?;
            let event_type: &str = row.try_get(4)?;
            let event_version: &str = row.try_get(5)?;
            let payload: &str = row.try_get_unchecked(6)?;
            let metadata: &str = row.try_get_unchecked(7)?;
            let sequence = usize::try_from(sequence)
                .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?;
            folder.take(StoredRow {
                aggregate_id,
                sequence,
                event_type,
                event_version,
                payload,
                metadata,
            })?;
        }
    }
    folder.finish()?;
    Scanned::of(&folder)
}

/// Begins a transaction that writes only the shadow tables, which are a rebuild's scratch
/// until a swap makes them the views: its commit does not wait for the log's flush to disk,
/// since a crash that lost it would lose nothing the next rebuild does not make again (it
/// drops what it finds of them first). A swap's commit waits, as every other does.
async fn begin_scratch(
    connection: &mut PgConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, RebuildError> {
    let mut tx = connection.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Creates `<view>_rebuild` for every view, empty and shaped like the live table, in one
/// transaction (one commit rather than one per statement).
async fn create_shadows(connection: &mut PgConnection) -> Result<(), RebuildError> {
    let mut tx = begin_scratch(connection).await?;
    for view in VIEWS {
        let shadow = shadow_table(view);
        sqlx::query(&format!("DROP TABLE IF EXISTS {shadow}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "CREATE TABLE {shadow} (LIKE {view} INCLUDING ALL)"
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Fills the shadow tables with the views `folded` holds, each on one of `connections`, at
/// once.
async fn fill_shadows(
    connections: [&mut PgConnection; VIEWS.len()],
    folded: &Scanned,
) -> Result<(), RebuildError> {
    let [users, sessions] = connections;
    let (users, sessions) = tokio::join!(
        fill_shadow(users, UserView::NAME, &folded.user_views),
        fill_shadow(sessions, SessionsView::NAME, &folded.session_views)
    );
    users.and(sessions)
}

/// Fills the shadow table of `view` with `rows`.
async fn fill_shadow(
    connection: &mut PgConnection,
    view: &str,
    rows: &ViewRows,
) -> Result<(), RebuildError> {
    let mut tx = begin_scratch(connection).await?;
    insert_views(&mut tx, &shadow_table(view), rows).await?;
    tx.commit().await?;
    Ok(())
}

/// Drops the shadow tables.
async fn drop_shadows(connection: &mut PgConnection) -> Result<(), RebuildError> {
    let mut tx = begin_scratch(connection).await?;
    let shadows: Vec<String> = VIEWS.iter().map(|view| shadow_table(view)).collect();
    sqlx::query(&format!("DROP TABLE {}", shadows.join(", ")))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Bulk-inserts `rows` into `table`.
async fn insert_views(
    connection: &mut PgConnection,
    table: &str,
    rows: &ViewRows,
) -> Result<(), RebuildError> {
    let statement = format!(
        "INSERT INTO {table} (view_id, last_sequence, payload) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[]::json[])"
    );
    let chunks = rows
        .ids
        .chunks(INSERT_CHUNK)
        .zip(rows.sequences.chunks(INSERT_CHUNK))
        .zip(rows.payloads.chunks(INSERT_CHUNK));
    for ((ids, sequences), payloads) in chunks {
        sqlx::query(&statement)
            .bind(ids)
            .bind(sequences)
            .bind(payloads)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// The rows of these users in a view table: user -> payload as JSON.
async fn load_rows(
    connection: &mut PgConnection,
    table: &str,
    users: &[String],
) -> Result<BTreeMap<String, Value>, RebuildError> {
    let rows: Vec<(String, Value)> = sqlx::query_as(&format!(
        "SELECT view_id, payload FROM {table} WHERE view_id = ANY($1)"
    ))
    .bind(users)
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The users whose rows of view `view` differ between the live and the shadow table (a row on
/// one side only included), as Postgres compares the payloads: as `jsonb`, whatever the order
/// of their keys. Only those rows are then read and compared field by field, so that a rebuild
/// that finds the views right reads no view into the service.
async fn differing_users(
    connection: &mut PgConnection,
    view: &str,
) -> Result<Vec<String>, RebuildError> {
    let shadow = shadow_table(view);
    Ok(sqlx::query_scalar(&format!(
        "SELECT view_id FROM {view} AS live FULL JOIN {shadow} AS rebuilt USING (view_id) \
         WHERE live.payload::jsonb IS DISTINCT FROM rebuilt.payload::jsonb"
    ))
    .fetch_all(connection)
    .await?)
}

/// The differences between the live and the shadow rows of `users` in view `view`, field by
/// field.
async fn differences_of(
    connection: &mut PgConnection,
    view: &'static str,
    users: &[String],
) -> Result<Vec<Difference>, RebuildError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let live = load_rows(connection, view, users).await?;
    let rebuilt = load_rows(connection, &shadow_table(view), users).await?;
    Ok(compare(view, &live, &rebuilt))
}

/// Compares live and shadow tables; differences are looked at again a few times, the shadow
/// caught up in between, so that a commit still on its way is not reported.
///
/// Each view is compared on a connection of its own, at once: connections the rebuild holds
/// (the lock's and the scan's), where the pool may have none idle just then and open one,
/// which costs as much as a comparison of a thousand users.
async fn differences(
    mut connections: [&mut PgConnection; VIEWS.len()],
    log: &dyn EventLog,
    followers: &[&dyn Follower],
    upcasters: &Upcasters,
    checkpoint: &mut Checkpoint,
) -> Result<Vec<Difference>, RebuildError> {
    let mut found = compare_views(&mut connections, None).await?;
    for _ in 0..RECHECKS {
        if found.is_empty() {
            break;
        }
        tokio::time::sleep(RECHECK_INTERVAL).await;
        let (caught_up, _) = catch_up(log, followers, upcasters, *checkpoint).await?;
        *checkpoint = caught_up;
        found = compare_views(&mut connections, Some(&found)).await?;
    }
    Ok(found)
}

/// The differences in every view, each view's on its own connection, at once: in every
/// user's rows, or with `again`, in the rows of the users it names in that view.
async fn compare_views(
    connections: &mut [&mut PgConnection; VIEWS.len()],
    again: Option<&[Difference]>,
) -> Result<Vec<Difference>, RebuildError> {
    let compared = futures::future::try_join_all(VIEWS.into_iter().zip(connections).map(
        |(view, connection)| async move {
            let users = match again {
                None => differing_users(connection, view).await?,
                Some(found) => found
                    .iter()
                    .filter(|difference| difference.view == view)
                    .map(|difference| difference.user.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            };
            differences_of(connection, view, &users).await
        },
    ))
    .await?;
    Ok(compared.into_iter().flatten().collect())
}

/// How long a rebuild waits for the transactions running when it starts.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until every transaction that had started when it was called has ended (at most
/// [`SETTLE_TIMEOUT`]), so that the snapshot scan covers every event committed before. The
/// horizon is the whole database cluster's: a long transaction anywhere holds it back.
async fn settle(connection: &mut PgConnection) -> Result<(), RebuildError> {
    let started: String =
        sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
            .fetch_one(&mut *connection)
            .await?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let settled: bool =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::xid8")
                .bind(&started)
                .fetch_one(&mut *connection)
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
/// the live ones, and with `apply` swaps them in. Personal data is opened with the keys
/// `personal` keeps.
pub async fn rebuild_postgres(
    pool: &PgPool,
    personal: Arc<dyn PersonalData>,
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
    let result = rebuild_locked(pool, &mut lock, personal, upcasters, apply).await;
    let _unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(REBUILD_LOCK)
        .execute(&mut *lock)
        .await;
    result
}

async fn rebuild_locked(
    pool: &PgPool,
    connection: &mut PgConnection,
    personal: Arc<dyn PersonalData>,
    upcasters: Upcasters,
    apply: bool,
) -> Result<RebuildReport, RebuildError> {
    // A second connection, held for the rebuild, for the scan and then for a comparison:
    // one from the pool's idle ones, or opened while the older transactions end.
    let (settled, reader) = tokio::join!(settle(connection), pool.acquire());
    settled?;
    let mut reader = reader?;
    let started = Instant::now();
    // The shadow tables are made while the log is read, on the connection that holds the
    // lock: the scan's rows wait in memory until they are filled in.
    let (created, scanned) = tokio::join!(
        create_shadows(connection),
        scan(&mut reader, personal.as_ref(), Arc::clone(&upcasters))
    );
    created?;
    let (folded, scanned) = scanned?;
    fill_shadows([connection, &mut reader], &folded).await?;
    let mut report = RebuildReport {
        events: folded.events,
        users: folded.users,
        elapsed: started.elapsed(),
        ..RebuildReport::default()
    };
    drop(folded);

    let log: Arc<dyn EventLog> =
        Arc::new(PgEventLog::new(pool.clone()).with_personal_data(Arc::clone(&personal)));
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
    report.differences = differences(
        [connection, &mut reader],
        &*log,
        &followers,
        &upcasters,
        &mut checkpoint,
    )
    .await?;
    // Given back before a swap, whose lock keeps requests waiting on connections of the same
    // pool.
    drop(reader);
    if apply {
        let (caught_up, read) = catch_up(&*log, &followers, &upcasters, checkpoint).await?;
        report.caught_up += read;
        report.caught_up += swap(connection, personal.as_ref(), caught_up, &upcasters).await?;
        report.applied = true;
    } else {
        drop_shadows(connection).await?;
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
    personal: &dyn PersonalData,
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
        let keys = personal.keys(&[&user]).await?;
        apply_in_transaction::<UserView>(&mut tx, &user, &keys, upcasters).await?;
        apply_in_transaction::<SessionsView>(&mut tx, &user, &keys, upcasters).await?;
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
    keys: &KeyRing,
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
        let event = envelope(keys.open(crate::log::serialized_event(row)?), upcasters)?;
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
