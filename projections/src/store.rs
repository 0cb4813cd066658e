//! Where views are kept: one row per user holding the view and the sequence of the last event
//! of that user it has taken into account. A write names the sequence it read, so two writers
//! of one view cannot both win, and no event is applied twice or out of order.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::RwLock;

use async_trait::async_trait;
use cqrs_es::persist::PersistenceError;
use cqrs_es::EventEnvelope;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use twofold_domain::User;

use crate::in_place::{ChangedInPlace, InPlace, PlannedChange};
use crate::log::{database, sequence_to_sql};

/// A view as stored, with how far into its user's events it is.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredView<V> {
    /// The view.
    pub view: V,
    /// Every event of the user up to this sequence is taken into account.
    pub last_sequence: usize,
}

/// How a view write is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Acknowledged once it is on disk, as every write of the events is.
    Durable,
    /// Acknowledged before it reaches the disk (Postgres's `synchronous_commit = off`, for
    /// this write alone; Postgres flushes it within a fraction of a second). A database crash
    /// may lose it, never the events it took into account: the view then stands behind the
    /// log, and the catch-up projector applies those events again. Its checkpoint is committed
    /// durably and after every view write it counted on, so it never stands past a lost one.
    /// See [`ProjectedView::may_commit_lazily`](crate::ProjectedView::may_commit_lazily) for
    /// which writes may.
    Lazy,
}

/// A table (or map) of views of type `V`, keyed by user id.
#[async_trait]
pub trait ViewStore<V>: Send + Sync {
    /// One user's view.
    async fn load(&self, view_id: &str) -> Result<Option<StoredView<V>>, PersistenceError>;

    /// How far each of these users' views is; users without a view are left out.
    async fn last_sequences(
        &self,
        view_ids: &[String],
    ) -> Result<HashMap<String, usize>, PersistenceError>;

    /// Stores `view` as taking events up to `last_sequence` into account, if the stored row
    /// still stands where it stood when read (`read`: its last sequence then, `None` for no
    /// row), committed as `commit` says. `Ok(false)` when another writer got there first.
    async fn save(
        &self,
        view_id: &str,
        view: &V,
        read: Option<usize>,
        last_sequence: usize,
        commit: Commit,
    ) -> Result<bool, PersistenceError>;

    /// Applies `event`, the one event of a dispatch that changes the view, to the stored view
    /// without reading it, and takes the view to `last_sequence` (`event`'s, or that of a later
    /// event that changes nothing), if the store can change this view in place and the view
    /// stands where `event` follows. `Ok(false)` when it did not: the caller reads, folds and
    /// saves. A store that cannot change views in place (the default) always says so.
    async fn change_in_place(
        &self,
        view_id: &str,
        event: &EventEnvelope<User>,
        last_sequence: usize,
        commit: Commit,
    ) -> Result<bool, PersistenceError> {
        let _ = (view_id, event, last_sequence, commit);
        Ok(false)
    }

    /// The change [`Self::change_in_place`] would make, planned for the statement that
    /// commits `event` to make instead, if this store can change the view in place and the
    /// event store keeps its events in the same database (`None` otherwise, the default).
    fn plan_in_place(
        &self,
        view_id: &str,
        event: &EventEnvelope<User>,
        last_sequence: usize,
    ) -> Result<Option<PlannedChange>, PersistenceError> {
        let _ = (view_id, event, last_sequence);
        Ok(None)
    }
}

fn sequence_from_sql(sequence: i64) -> Result<usize, PersistenceError> {
    usize::try_from(sequence)
        .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))
}

/// Views in a Postgres table of (`view_id`, `last_sequence`, `payload`).
pub struct PgViewStore<V> {
    pool: PgPool,
    load: String,
    last_sequences: String,
    insert: String,
    update: String,
    insert_lazily: String,
    update_lazily: String,
    table: String,
    in_place: Option<InPlace>,
    _view: PhantomData<fn() -> V>,
}

/// Turns `synchronous_commit` off for the rest of the statement's own transaction (the
/// implicit one around a single statement): a [`Commit::Lazy`] write in one round trip, where
/// `SET LOCAL` would need a transaction block around it.
const LAZY_COMMIT: &str = "(SELECT set_config('synchronous_commit', 'off', true)) AS lazy_commit";

impl<V> PgViewStore<V> {
    /// The views in `table`. The name is put into SQL as it is: pass only a constant.
    pub fn new(pool: PgPool, table: &str) -> Self {
        Self {
            pool,
            load: format!("SELECT payload, last_sequence FROM {table} WHERE view_id = $1"),
            last_sequences: format!(
                "SELECT view_id, last_sequence FROM {table} WHERE view_id = ANY($1)"
            ),
            insert: format!(
                "INSERT INTO {table} (view_id, last_sequence, payload) VALUES ($1, $2, $3) \
                 ON CONFLICT (view_id) DO NOTHING"
            ),
            update: format!(
                "UPDATE {table} SET last_sequence = $2, payload = $3 \
                 WHERE view_id = $1 AND last_sequence = $4"
            ),
            insert_lazily: format!(
                "INSERT INTO {table} (view_id, last_sequence, payload) \
                 SELECT $1, $2, $3 FROM {LAZY_COMMIT} ON CONFLICT (view_id) DO NOTHING"
            ),
            update_lazily: format!(
                "UPDATE {table} SET last_sequence = $2, payload = $3 FROM {LAZY_COMMIT} \
                 WHERE view_id = $1 AND last_sequence = $4"
            ),
            table: table.to_owned(),
            in_place: None,
            _view: PhantomData,
        }
    }
}

impl<V: ChangedInPlace> PgViewStore<V> {
    /// The same store, applying a dispatch's one change to a view in place
    /// ([`ViewStore::change_in_place`]).
    pub fn changed_in_place(self) -> Self {
        Self {
            in_place: Some(InPlace::of::<V>(&self.table, LAZY_COMMIT)),
            ..self
        }
    }
}

#[async_trait]
impl<V: Serialize + DeserializeOwned + Send + Sync> ViewStore<V> for PgViewStore<V> {
    async fn load(&self, view_id: &str) -> Result<Option<StoredView<V>>, PersistenceError> {
        let Some(row) = sqlx::query(&self.load)
            .bind(view_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(database)?
        else {
            return Ok(None);
        };
        // Read straight into the view, as saved straight from it: no `serde_json::Value` tree
        // in between, which for a user with many sessions cost as much again as the view.
        let Json(view) = row.try_get("payload").map_err(|error| match error {
            sqlx::Error::ColumnDecode { .. } => {
                PersistenceError::DeserializationError(Box::new(error))
            }
            other => database(other),
        })?;
        Ok(Some(StoredView {
            view,
            last_sequence: sequence_from_sql(row.try_get("last_sequence").map_err(database)?)?,
        }))
    }

    async fn last_sequences(
        &self,
        view_ids: &[String],
    ) -> Result<HashMap<String, usize>, PersistenceError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(&self.last_sequences)
            .bind(view_ids)
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        rows.into_iter()
            .map(|(view_id, sequence)| Ok((view_id, sequence_from_sql(sequence)?)))
            .collect()
    }

    async fn save(
        &self,
        view_id: &str,
        view: &V,
        read: Option<usize>,
        last_sequence: usize,
        commit: Commit,
    ) -> Result<bool, PersistenceError> {
        // The statements take (view_id, last_sequence, payload); an update also the read one.
        let statement = match (read, commit) {
            (None, Commit::Durable) => &self.insert,
            (Some(_), Commit::Durable) => &self.update,
            (None, Commit::Lazy) => &self.insert_lazily,
            (Some(_), Commit::Lazy) => &self.update_lazily,
        };
        let query = sqlx::query(statement)
            .bind(view_id)
            .bind(sequence_to_sql(last_sequence)?)
            .bind(Json(view));
        let query = match read {
            None => query,
            Some(read) => query.bind(sequence_to_sql(read)?),
        };
        let done = query.execute(&self.pool).await.map_err(database)?;
        Ok(done.rows_affected() == 1)
    }

    async fn change_in_place(
        &self,
        view_id: &str,
        event: &EventEnvelope<User>,
        last_sequence: usize,
        commit: Commit,
    ) -> Result<bool, PersistenceError> {
        let (Some(in_place), Some(planned)) = (
            &self.in_place,
            self.plan_in_place(view_id, event, last_sequence)?,
        ) else {
            return Ok(false);
        };
        let statement = in_place.statement(&planned, commit == Commit::Lazy);
        let written: i64 = planned
            .bind(sqlx::query(statement))
            .fetch_one(&self.pool)
            .await
            .map_err(database)?
            .try_get(0)
            .map_err(database)?;
        Ok(written == 1)
    }

    fn plan_in_place(
        &self,
        view_id: &str,
        event: &EventEnvelope<User>,
        last_sequence: usize,
    ) -> Result<Option<PlannedChange>, PersistenceError> {
        match &self.in_place {
            Some(in_place) => in_place.plan(view_id, event, last_sequence),
            None => Ok(None),
        }
    }
}

/// Views in memory (the embedded mode), under the same contract.
pub struct MemViewStore<V> {
    views: RwLock<HashMap<String, StoredView<V>>>,
}

impl<V> Default for MemViewStore<V> {
    fn default() -> Self {
        Self {
            views: RwLock::new(HashMap::new()),
        }
    }
}

fn poisoned() -> PersistenceError {
    PersistenceError::UnknownError("in-memory view lock poisoned".into())
}

impl<V: Clone> MemViewStore<V> {
    /// Every view with its user id, in no particular order.
    pub fn all(&self) -> Result<Vec<(String, StoredView<V>)>, PersistenceError> {
        let views = self.views.read().map_err(|_| poisoned())?;
        Ok(views
            .iter()
            .map(|(id, stored)| (id.clone(), stored.clone()))
            .collect())
    }

    /// Puts `views` in place of every view, in one step.
    pub fn replace_all(
        &self,
        views: HashMap<String, StoredView<V>>,
    ) -> Result<(), PersistenceError> {
        *self.views.write().map_err(|_| poisoned())? = views;
        Ok(())
    }
}

#[async_trait]
impl<V: Clone + Send + Sync> ViewStore<V> for MemViewStore<V> {
    async fn load(&self, view_id: &str) -> Result<Option<StoredView<V>>, PersistenceError> {
        let views = self.views.read().map_err(|_| poisoned())?;
        Ok(views.get(view_id).cloned())
    }

    async fn last_sequences(
        &self,
        view_ids: &[String],
    ) -> Result<HashMap<String, usize>, PersistenceError> {
        let views = self.views.read().map_err(|_| poisoned())?;
        Ok(view_ids
            .iter()
            .filter_map(|id| Some((id.clone(), views.get(id)?.last_sequence)))
            .collect())
    }

    async fn save(
        &self,
        view_id: &str,
        view: &V,
        read: Option<usize>,
        last_sequence: usize,
        _commit: Commit,
    ) -> Result<bool, PersistenceError> {
        let mut views = self.views.write().map_err(|_| poisoned())?;
        if views.get(view_id).map(|stored| stored.last_sequence) != read {
            return Ok(false);
        }
        views.insert(
            view_id.to_owned(),
            StoredView {
                view: view.clone(),
                last_sequence,
            },
        );
        Ok(true)
    }
}
