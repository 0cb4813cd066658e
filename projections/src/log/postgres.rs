//! The log in Postgres: `events` read by `(transaction_id, position)`, only below the oldest
//! transaction still running (see the migration `event_log_order` for why).

use async_trait::async_trait;
use cqrs_es::persist::{PersistenceError, SerializedEvent};
use cqrs_es::Aggregate;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use twofold_domain::User;

use std::sync::Arc;

use super::{Checkpoint, EventLog, LoggedEvent};
use crate::personal::{open_events, open_logged, NoKeys, PersonalData};

/// Events after a checkpoint whose transactions can no longer be overtaken: every transaction
/// below the snapshot's xmin has ended, and any later one gets a larger id.
///
/// The order names the table's columns (`events.`): a bare `transaction_id` would be the
/// select list's text-cast copy, which no index holds, and every read would sort whatever lies
/// after the checkpoint before its limit could stop it.
const READ_AFTER: &str = "SELECT transaction_id::text::bigint AS transaction_id, position, \
        aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, \
        recorded_at \
    FROM events \
    WHERE (transaction_id, position) > ($1::text::xid8, $2) \
      AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
    ORDER BY events.transaction_id, events.position \
    LIMIT $3";

const USER_LOG: &str = "SELECT transaction_id::text::bigint AS transaction_id, position, \
        aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, \
        recorded_at \
    FROM events \
    WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 \
    ORDER BY sequence \
    LIMIT $4";

const USER_EVENTS: &str = "SELECT aggregate_type, aggregate_id, sequence, event_type, \
        event_version, payload, metadata \
    FROM events \
    WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 \
    ORDER BY sequence";

/// The log in Postgres.
#[derive(Clone)]
pub struct PgEventLog {
    pool: PgPool,
    personal: Arc<dyn PersonalData>,
}

impl PgEventLog {
    /// Reads `events` through `pool`; sealed personal data reads as erased until
    /// [`PgEventLog::with_personal_data`] gives the keys.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            personal: Arc::new(NoKeys),
        }
    }

    /// Opens the personal data of the events it reads with the keys `personal` keeps.
    pub fn with_personal_data(self, personal: Arc<dyn PersonalData>) -> Self {
        Self { personal, ..self }
    }
}

/// A sequence as Postgres keeps it (`bigint`).
pub(crate) fn sequence_to_sql(sequence: usize) -> Result<i64, PersistenceError> {
    i64::try_from(sequence).map_err(|error| PersistenceError::UnknownError(Box::new(error)))
}

/// A database error as cqrs-es reads it: a lost, garbled or unobtainable connection is a
/// connection error (the caller may retry), anything else unknown.
pub fn database(error: sqlx::Error) -> PersistenceError {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => PersistenceError::ConnectionError(Box::new(error)),
        other => PersistenceError::UnknownError(Box::new(other)),
    }
}

fn out_of_range(error: std::num::TryFromIntError) -> PersistenceError {
    PersistenceError::DeserializationError(Box::new(error))
}

/// A row of `events` (its aggregate, sequence, type, version, payload and metadata columns) as
/// cqrs-es reads it.
pub fn serialized_event(row: &PgRow) -> Result<SerializedEvent, PersistenceError> {
    let sequence: i64 = row.try_get("sequence").map_err(database)?;
    Ok(SerializedEvent {
        aggregate_id: row.try_get("aggregate_id").map_err(database)?,
        sequence: usize::try_from(sequence).map_err(out_of_range)?,
        aggregate_type: row.try_get("aggregate_type").map_err(database)?,
        event_type: row.try_get("event_type").map_err(database)?,
        event_version: row.try_get("event_version").map_err(database)?,
        payload: row.try_get("payload").map_err(database)?,
        metadata: row.try_get("metadata").map_err(database)?,
    })
}

fn logged_event(row: &PgRow) -> Result<LoggedEvent, PersistenceError> {
    Ok(LoggedEvent {
        checkpoint: checkpoint(row)?,
        event: serialized_event(row)?,
        recorded_at: row.try_get("recorded_at").map_err(database)?,
    })
}

fn checkpoint(row: &PgRow) -> Result<Checkpoint, PersistenceError> {
    let transaction_id: i64 = row.try_get("transaction_id").map_err(database)?;
    Ok(Checkpoint::new(
        u64::try_from(transaction_id).map_err(out_of_range)?,
        row.try_get("position").map_err(database)?,
    ))
}

impl PgEventLog {
    /// `rows` as logged events, their personal data opened.
    async fn opened(&self, rows: &[PgRow]) -> Result<Vec<LoggedEvent>, PersistenceError> {
        let logged = rows
            .iter()
            .map(logged_event)
            .collect::<Result<Vec<_>, _>>()?;
        open_logged(self.personal.as_ref(), logged).await
    }
}

#[async_trait]
impl EventLog for PgEventLog {
    async fn read_after(
        &self,
        after: Checkpoint,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, PersistenceError> {
        let rows = sqlx::query(READ_AFTER)
            .bind(after.transaction_id().to_string())
            .bind(after.position())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        self.opened(&rows).await
    }

    async fn user_log(
        &self,
        aggregate_id: &str,
        after: usize,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, PersistenceError> {
        let rows = sqlx::query(USER_LOG)
            .bind(User::TYPE)
            .bind(aggregate_id)
            .bind(i64::try_from(after).map_err(out_of_range)?)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        self.opened(&rows).await
    }

    async fn user_events(
        &self,
        aggregate_id: &str,
        after: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let rows = sqlx::query(USER_EVENTS)
            .bind(User::TYPE)
            .bind(aggregate_id)
            .bind(i64::try_from(after).map_err(out_of_range)?)
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        let events = rows
            .iter()
            .map(serialized_event)
            .collect::<Result<Vec<_>, _>>()?;
        open_events(self.personal.as_ref(), events).await
    }
}
