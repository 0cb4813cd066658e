//! The Postgres event repository: postgres-es for reads, and a commit that writes the events
//! (each chained to its predecessor, see `twofold_projections::chain`), any email
//! reservation and the mail jobs in one transaction.

use async_trait::async_trait;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;
use twofold_domain::values::{Email, UserId};
use twofold_domain::User;

use std::sync::Arc;

use twofold_nats::MailJob;
use twofold_projections::chain::{self, ChainKey, ChainedEvent};

use super::{claimed_email, EmailIndex, EmailTaken, EventRepository, Snapshot};

// The payload and metadata are sent as the exact text their digests cover.
const INSERT_EVENT: &str = "INSERT INTO events \
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, \
     content_digest, chain_digest, chain_key_id) \
    VALUES ($1, $2, $3, $4, $5, $6::json, $7::json, $8, $9, $10)";
/// Keeps a snapshot unless a newer one is kept.
const KEEP_SNAPSHOT: &str = "INSERT INTO user_snapshots \
    (aggregate_type, aggregate_id, sequence, state_version, state, digest, key_id) \
    VALUES ($1, $2, $3, $4, $5::json, $6, $7) \
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET sequence = EXCLUDED.sequence, \
        state_version = EXCLUDED.state_version, state = EXCLUDED.state, \
        digest = EXCLUDED.digest, key_id = EXCLUDED.key_id, taken_at = now() \
    WHERE user_snapshots.sequence < EXCLUDED.sequence";
const RESERVE_EMAIL: &str = "INSERT INTO user_emails (email_key, user_id) VALUES ($1, $2)";
const EMAIL_CONSTRAINT: &str = "user_emails_email_key_pkey";

/// Events in Postgres.
pub struct PgEventRepository {
    pool: PgPool,
    reader: PostgresEventRepository,
    chain_key: Arc<ChainKey>,
}

impl PgEventRepository {
    /// A repository over the `events` and `user_emails` tables, chaining with `chain_key`.
    pub fn new(pool: PgPool, chain_key: Arc<ChainKey>) -> Self {
        let reader = PostgresEventRepository::new(pool.clone());
        Self {
            pool,
            reader,
            chain_key,
        }
    }
}

impl Clone for PgEventRepository {
    fn clone(&self) -> Self {
        Self::new(self.pool.clone(), Arc::clone(&self.chain_key))
    }
}

fn persistence_error(error: sqlx::Error) -> PersistenceError {
    if let sqlx::Error::Database(database) = &error {
        if database.code().as_deref() == Some("23505") {
            return if database.constraint() == Some(EMAIL_CONSTRAINT) {
                PersistenceError::UnknownError(Box::new(EmailTaken))
            } else {
                PersistenceError::OptimisticLockError
            };
        }
    }
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
            PersistenceError::ConnectionError(Box::new(error))
        }
        other => PersistenceError::UnknownError(Box::new(other)),
    }
}

impl PersistedEventRepository for PgEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reader.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reader
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        _snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        self.commit(events, &[], None).await
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.reader.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reader.stream_all_events::<A>().await
    }
}

#[async_trait]
impl EmailIndex for PgEventRepository {
    async fn find_user(&self, email: &Email) -> Result<Option<UserId>, PersistenceError> {
        let user_id: Option<String> =
            sqlx::query_scalar("SELECT user_id FROM user_emails WHERE email_key = $1")
                .bind(email.key())
                .fetch_optional(&self.pool)
                .await
                .map_err(persistence_error)?;
        user_id
            .map(|id| {
                id.parse().map_err(|error: uuid::Error| {
                    PersistenceError::DeserializationError(Box::new(error))
                })
            })
            .transpose()
    }
}

impl EventRepository for PgEventRepository {
    async fn commit(
        &self,
        events: &[SerializedEvent],
        jobs: &[MailJob],
        snapshot: Option<&Snapshot>,
    ) -> Result<(), PersistenceError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(persistence_error)?;
        let mut previous = match events.first() {
            Some(first) => chain::previous_digest(
                &mut tx,
                &first.aggregate_type,
                &first.aggregate_id,
                first.sequence as u64,
            )
            .await
            .map_err(persistence_error)?,
            None => None,
        };
        for event in events {
            let sequence = i64::try_from(event.sequence)
                .map_err(|error| PersistenceError::UnknownError(Box::new(error)))?;
            let chained = ChainedEvent {
                aggregate_type: event.aggregate_type.clone(),
                aggregate_id: event.aggregate_id.clone(),
                sequence: event.sequence as u64,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                payload: serde_json::to_string(&event.payload)?,
                metadata: serde_json::to_string(&event.metadata)?,
            };
            let (content_digest, chain_digest) =
                chain::digests(&self.chain_key, previous.as_deref(), &chained);
            sqlx::query(INSERT_EVENT)
                .bind(&chained.aggregate_type)
                .bind(&chained.aggregate_id)
                .bind(sequence)
                .bind(&chained.event_type)
                .bind(&chained.event_version)
                .bind(&chained.payload)
                .bind(&chained.metadata)
                .bind(&content_digest)
                .bind(&chain_digest)
                .bind(self.chain_key.id())
                .execute(&mut *tx)
                .await
                .map_err(persistence_error)?;
            previous = Some(chain_digest);
            if let Some((email_key, user_id)) = claimed_email(event)? {
                sqlx::query(RESERVE_EMAIL)
                    .bind(email_key)
                    .bind(user_id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(persistence_error)?;
            }
        }
        for job in jobs {
            twofold_nats::enqueue(&mut tx, job)
                .await
                .map_err(persistence_error)?;
        }
        if let (Some(snapshot), Some(first)) = (snapshot, events.first()) {
            let state = serde_json::to_string(&snapshot.state)?;
            let sequence = snapshot.sequence as u64;
            let digest = chain::snapshot_digest(
                &self.chain_key,
                &first.aggregate_type,
                &first.aggregate_id,
                sequence,
                &snapshot.state_version,
                &state,
            );
            sqlx::query(KEEP_SNAPSHOT)
                .bind(&first.aggregate_type)
                .bind(&first.aggregate_id)
                .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
                .bind(&snapshot.state_version)
                .bind(&state)
                .bind(&digest)
                .bind(self.chain_key.id())
                .execute(&mut *tx)
                .await
                .map_err(persistence_error)?;
        }
        tx.commit().await.map_err(persistence_error)
    }

    async fn snapshot(&self, aggregate_id: &str) -> Result<Option<Snapshot>, PersistenceError> {
        let row: Option<(i64, String, String, String, String)> = sqlx::query_as(
            "SELECT sequence, state_version, state::text, digest, key_id FROM user_snapshots \
             WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(User::TYPE)
        .bind(aggregate_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(persistence_error)?;
        let Some((sequence, state_version, state, digest, key_id)) = row else {
            return Ok(None);
        };
        if key_id != self.chain_key.id() {
            // Taken under a retired key: the user is folded from the events until the next.
            return Ok(None);
        }
        let sequence = u64::try_from(sequence).unwrap_or_default();
        let expected = chain::snapshot_digest(
            &self.chain_key,
            User::TYPE,
            aggregate_id,
            sequence,
            &state_version,
            &state,
        );
        if expected != digest {
            tracing::warn!(target: "security", user_id = aggregate_id,
                "a snapshot does not match its digest; the user is folded from every event");
            return Ok(None);
        }
        Ok(Some(Snapshot {
            sequence: usize::try_from(sequence).unwrap_or(usize::MAX),
            state_version,
            state: serde_json::from_str(&state)?,
        }))
    }
}
