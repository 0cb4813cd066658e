//! The catch-up projector: follows the log from a stored checkpoint and hands every event to
//! the views, which skip what they already have. It is what repairs a view write that failed
//! after a commit (a database blip, a crash between commit and dispatch, a bug), within one
//! poll interval of the database answering again.
//!
//! Every API instance runs one. They need no coordination: applying an event is idempotent
//! (each view row records its last sequence and writes are conditional on it), and the stored
//! checkpoint only moves forward. A crash mid-batch re-reads the batch at the next start.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::persist::PersistenceError;
use cqrs_es::Aggregate;
use sqlx::PgPool;
use twofold_domain::User;

use crate::log::{database, envelope, Checkpoint, EventLog, LoggedEvent, Upcasters};
use crate::projection::{Follower, UserBatch};

/// The checkpoint name of the views' projector.
pub const VIEWS_PROJECTOR: &str = "views";

/// How often the projector looks for new events.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The longest wait between attempts while the database fails.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Events read per batch.
const BATCH: usize = 1000;

/// Where followers keep how far they have read.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// The checkpoint stored under `name` ([`Checkpoint::ORIGIN`] if none).
    async fn load(&self, name: &str) -> Result<Checkpoint, PersistenceError>;
    /// Stores `checkpoint` under `name` unless a later one is stored already.
    async fn advance(&self, name: &str, checkpoint: Checkpoint) -> Result<(), PersistenceError>;
}

/// Checkpoints in the `log_checkpoints` table.
#[derive(Clone)]
pub struct PgCheckpointStore {
    pool: PgPool,
}

impl PgCheckpointStore {
    /// Checkpoints through `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl CheckpointStore for PgCheckpointStore {
    async fn load(&self, name: &str) -> Result<Checkpoint, PersistenceError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT transaction_id::text::bigint, position FROM log_checkpoints WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        row.map_or(Ok(Checkpoint::ORIGIN), |(transaction_id, position)| {
            let transaction_id = u64::try_from(transaction_id)
                .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?;
            Ok(Checkpoint::new(transaction_id, position))
        })
    }

    async fn advance(&self, name: &str, checkpoint: Checkpoint) -> Result<(), PersistenceError> {
        sqlx::query(
            "INSERT INTO log_checkpoints (name, transaction_id, position) \
             VALUES ($1, $2::text::xid8, $3) \
             ON CONFLICT (name) DO UPDATE \
                SET transaction_id = excluded.transaction_id, position = excluded.position \
                WHERE (log_checkpoints.transaction_id, log_checkpoints.position) \
                    < (excluded.transaction_id, excluded.position)",
        )
        .bind(name)
        .bind(checkpoint.transaction_id().to_string())
        .bind(checkpoint.position())
        .execute(&self.pool)
        .await
        .map_err(database)?;
        Ok(())
    }
}

/// Checkpoints in memory (the embedded mode).
#[derive(Default)]
pub struct MemCheckpointStore {
    checkpoints: Mutex<HashMap<String, Checkpoint>>,
}

fn poisoned() -> PersistenceError {
    PersistenceError::UnknownError("in-memory checkpoint lock poisoned".into())
}

#[async_trait]
impl CheckpointStore for MemCheckpointStore {
    async fn load(&self, name: &str) -> Result<Checkpoint, PersistenceError> {
        let checkpoints = self.checkpoints.lock().map_err(|_| poisoned())?;
        Ok(checkpoints.get(name).copied().unwrap_or_default())
    }

    async fn advance(&self, name: &str, checkpoint: Checkpoint) -> Result<(), PersistenceError> {
        let mut checkpoints = self.checkpoints.lock().map_err(|_| poisoned())?;
        let stored = checkpoints.entry(name.to_owned()).or_default();
        *stored = (*stored).max(checkpoint);
        Ok(())
    }
}

/// Groups `User` events by user, in the order users first appear and each user's events in
/// sequence order, decoded through `upcasters`.
pub fn by_user(
    events: Vec<LoggedEvent>,
    upcasters: &Upcasters,
) -> Result<Vec<UserBatch>, PersistenceError> {
    let mut batches: Vec<UserBatch> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for logged in events {
        if logged.event.aggregate_type != User::TYPE {
            continue;
        }
        let event = envelope(logged.event, upcasters)?;
        match index.get(&event.aggregate_id) {
            Some(&at) => batches[at].1.push(event),
            None => {
                index.insert(event.aggregate_id.clone(), batches.len());
                batches.push((event.aggregate_id.clone(), vec![event]));
            }
        }
    }
    for (_, events) in &mut batches {
        events.sort_by_key(|event| event.sequence);
    }
    Ok(batches)
}

/// Follows the log from a stored checkpoint into its followers.
pub struct Projector {
    name: String,
    log: Arc<dyn EventLog>,
    checkpoints: Arc<dyn CheckpointStore>,
    followers: Vec<Arc<dyn Follower>>,
    upcasters: Upcasters,
    poll_interval: Duration,
}

impl Projector {
    /// A projector named `name` (its checkpoint's key) reading `log` into `followers`.
    pub fn new(
        name: &str,
        log: Arc<dyn EventLog>,
        checkpoints: Arc<dyn CheckpointStore>,
        followers: Vec<Arc<dyn Follower>>,
        upcasters: Upcasters,
    ) -> Self {
        Self {
            name: name.to_owned(),
            log,
            checkpoints,
            followers,
            upcasters,
            poll_interval: POLL_INTERVAL,
        }
    }

    /// Polls every `interval` instead of [`POLL_INTERVAL`].
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Reads and applies everything the log holds after the stored checkpoint, batch by
    /// batch, advancing the checkpoint after each. Returns how many events it read.
    pub async fn catch_up(&self) -> Result<usize, PersistenceError> {
        let mut checkpoint = self.checkpoints.load(&self.name).await?;
        let mut read = 0;
        loop {
            let events = self.log.read_after(checkpoint, BATCH).await?;
            let Some(last) = events.last().map(|event| event.checkpoint) else {
                return Ok(read);
            };
            let count = events.len();
            let batch = by_user(events, &self.upcasters)?;
            for follower in &self.followers {
                follower.follow(&batch).await.map_err(|error| {
                    tracing::warn!(follower = follower.name(), error = %error, "catch-up failed");
                    error
                })?;
            }
            self.checkpoints.advance(&self.name, last).await?;
            checkpoint = last;
            read += count;
            if count < BATCH {
                return Ok(read);
            }
        }
    }

    /// Catches up every poll interval until `stop` completes. Failures (the database down)
    /// are logged and retried with a growing wait; the checkpoint stays where it was.
    pub async fn run_until(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut wait = self.poll_interval;
        loop {
            let pass = tokio::select! {
                () = &mut stop => return,
                pass = self.catch_up() => pass,
            };
            wait = match pass {
                Ok(read) => {
                    if read > 0 {
                        tracing::debug!(projector = %self.name, events = read, "caught up");
                    }
                    self.poll_interval
                }
                Err(error) => {
                    tracing::error!(projector = %self.name, error = %error,
                        "the projector could not follow the log; retrying");
                    (wait * 2).clamp(self.poll_interval, MAX_BACKOFF)
                }
            };
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
