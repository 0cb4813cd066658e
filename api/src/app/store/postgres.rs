//! The Postgres event repository: postgres-es for reads (each event's personal data opened with
//! its user's data key), and a commit that writes the events (each chained to its predecessor,
//! see `twofold_projections::chain`), the address reservation, a new data key, the mail jobs,
//! a snapshot and the changes of views made in place in one transaction — or, for an erasure,
//! deletes what identifies the user.
//!
//! Every commit writes its events before anything else of the user (a statement's other
//! writes wait for the events' insert, see [`after_events`]): a commit that loses the race
//! for a sequence waits for the winner there, holding nothing the winner needs, so two
//! commits of one user never wait for each other in opposite orders.

use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use rand::RngCore;
use serde_json::Value;
use sqlx::{PgPool, Row};
use twofold_domain::services::SecretSealer;
use twofold_domain::values::{Email, KeyedDigest, SealedSecret, UserId};
use twofold_domain::User;
use twofold_projections::chain::{self, ChainKey, ChainedEvent};
use twofold_projections::personal::{open_events, DataKey, KeyRing, PersonalData};
use twofold_projections::{PgQuery, PlannedChange};
use zeroize::Zeroizing;

use super::{
    email_index_input, key_ring, reseal_key, Commit, EmailIndex, EmailTaken, EventRepository,
    PersonalResealed, Snapshot, StoredCommit, StoredUser, UserEvents,
};

/// One aggregate's events in one statement, in the order given: `$1` the aggregate type, `$2`
/// its id, `$3` the chain key's id, `$4` to `$10` one array per column. The payload and
/// metadata are sent as the exact text their digests cover (`json` keeps its input text as it
/// is).
macro_rules! insert_events {
    () => {
        "INSERT INTO events \
        (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, \
         content_digest, chain_digest, chain_key_id) \
        SELECT $1, $2, e.sequence, e.event_type, e.event_version, e.payload::json, \
            e.metadata::json, e.content_digest, e.chain_digest, $3 \
        FROM UNNEST($4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
            $10::text[]) WITH ORDINALITY \
            AS e(sequence, event_type, event_version, payload, metadata, content_digest, \
                 chain_digest, place) \
        ORDER BY e.place"
    };
}
/// The events' insert as the common table expression `inserted`, before other writes.
macro_rules! inserted {
    () => {
        concat!("WITH inserted AS (", insert_events!(), " RETURNING 1) ")
    };
}
/// The condition that holds a write of a statement beginning with [`inserted`] until the
/// events' insert has written its first event (and so holds that event's place).
macro_rules! after_events {
    () => {
        " WHERE EXISTS (SELECT FROM inserted)"
    };
}
/// Keeps a snapshot of aggregate `$1`, `$2` under chain key `$3`, unless a newer one is kept:
/// its sequence, state version, state and digest are the four parameters given, then the
/// condition of the write (empty for none).
macro_rules! keep_snapshot {
    ($sequence:literal, $state_version:literal, $state:literal, $digest:literal,
     $condition:expr) => {
        concat!(
            "INSERT INTO user_snapshots \
            (aggregate_type, aggregate_id, sequence, state_version, state, digest, key_id) \
            SELECT $1, $2, ",
            $sequence,
            ", ",
            $state_version,
            ", ",
            $state,
            "::json, ",
            $digest,
            ", $3",
            $condition,
            " ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
                sequence = EXCLUDED.sequence, state_version = EXCLUDED.state_version, \
                state = EXCLUDED.state, digest = EXCLUDED.digest, key_id = EXCLUDED.key_id, \
                taken_at = now() \
            WHERE user_snapshots.sequence < EXCLUDED.sequence"
        )
    };
}
const INSERT_EVENTS: &str = insert_events!();
/// Keeps a snapshot unless a newer one is kept, in a transaction with its events.
const KEEP_SNAPSHOT: &str = keep_snapshot!("$4", "$5", "$6", "$7", "");
/// The snapshot of [`INSERT_EVENTS_KEEPING_SNAPSHOT`], its parameters after the events'.
macro_rules! keep_snapshot_after_events {
    () => {
        keep_snapshot!("$11", "$12", "$13", "$14", after_events!())
    };
}
/// The events and a snapshot after them in one statement, a transaction of its own: the
/// parameters of [`INSERT_EVENTS`], then the snapshot's sequence, state version, state and
/// digest. If the events cannot be inserted, the snapshot is not kept either.
const INSERT_EVENTS_KEEPING_SNAPSHOT: &str = concat!(inserted!(), keep_snapshot_after_events!());
/// The first parameter after those of [`INSERT_EVENTS`].
const AFTER_EVENTS_PARAMETERS: usize = 11;
/// The first parameter after those of [`INSERT_EVENTS_KEEPING_SNAPSHOT`].
const AFTER_SNAPSHOT_PARAMETERS: usize = 15;
const RESERVE_EMAIL: &str = "INSERT INTO user_emails (email_key, user_id) VALUES ($1, $2)";
const EMAIL_CONSTRAINT: &str = "user_emails_email_key_pkey";
/// A user's events from a sequence on, each row with the user's data key and its chain
/// digest: what a command needs, in one round trip. The metadata is not read (an empty
/// object in its place): a command folds payloads alone (see [`UserEvents::events`]). The
/// key is looked up once, not once a row (a user has one).
const USER_EVENTS_FROM: &str = "WITH k AS MATERIALIZED \
        (SELECT key_id, sealed_key FROM user_data_keys WHERE aggregate_id = $2) \
    SELECT e.aggregate_type, e.aggregate_id, e.sequence, \
        e.event_type, e.event_version, e.payload, '{}'::jsonb AS metadata, e.chain_digest, \
        k.key_id, k.sealed_key \
    FROM events e LEFT JOIN k ON true \
    WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 AND e.sequence >= $3 \
    ORDER BY e.sequence";
/// A user as a command loads them, in one round trip: the events from the snapshot's sequence
/// on (from the first without one), each row with the data key and chain digest as in
/// [`USER_EVENTS_FROM`] and the snapshot's columns, its state on the first row alone. `$with`
/// is any common table expressions before the user's (each followed by a comma), `$user` the
/// SQL that gives the user's id.
///
/// The snapshot and the key are each read once, as one-row tables joined to every event
/// (a user has at most one of each): joined to the events directly, Postgres looked both up
/// again for every row (42 buffer reads for 8 events against 12).
macro_rules! user_from_snapshot {
    ($with:literal, $user:literal) => {
        concat!(
            "WITH ",
            $with,
            "s AS MATERIALIZED (SELECT sequence, state_version, state, digest, key_id \
                FROM user_snapshots WHERE aggregate_type = $1 AND aggregate_id = ",
            $user,
            "), k AS MATERIALIZED (SELECT key_id, sealed_key FROM user_data_keys \
                WHERE aggregate_id = ",
            $user,
            ") SELECT e.aggregate_type, e.aggregate_id, e.sequence, \
                e.event_type, e.event_version, e.payload, '{}'::jsonb AS metadata, \
                e.chain_digest, k.key_id, k.sealed_key, \
                s.sequence AS snapshot_sequence, s.state_version AS snapshot_state_version, \
                CASE WHEN e.sequence = s.sequence THEN s.state::text END AS snapshot_state, \
                s.digest AS snapshot_digest, s.key_id AS snapshot_key_id \
            FROM events e LEFT JOIN k ON true LEFT JOIN s ON true \
            WHERE e.aggregate_type = $1 AND e.aggregate_id = ",
            $user,
            " AND e.sequence >= GREATEST(1, (SELECT sequence FROM s)) ORDER BY e.sequence"
        )
    };
}
/// User `$2` as a command loads them.
const USER_FROM_SNAPSHOT: &str = user_from_snapshot!("", "$2");
/// The owner of an address (`$2`: its keyed digests) as a command loads them: a login's lookup
/// and load in one round trip. No row when no account has the address.
const OWNER_FROM_SNAPSHOT: &str = user_from_snapshot!(
    "owner AS (SELECT user_id FROM user_emails WHERE email_key = ANY($2) LIMIT 1), ",
    "(SELECT user_id FROM owner)"
);
/// A data key; a second one for the same user is a lost race (the events were sealed with it).
const KEEP_DATA_KEY: &str =
    "INSERT INTO user_data_keys (aggregate_id, key_id, sealed_key) VALUES ($1, $2, $3)";

/// The events, a snapshot after them (`snapshot`) and changes of views they make in one
/// statement: [`INSERT_EVENTS_KEEPING_SNAPSHOT`] or [`INSERT_EVENTS`] with each change's
/// common table expressions and parameters after theirs. It returns one row: how many rows
/// each change wrote. It is one transaction: if the events cannot be inserted, nothing of it
/// is kept.
///
/// Written for each commit that has changes (a few microseconds): their parameters are
/// numbered after the statement's own, which depend on the snapshot.
fn statement_with_views(snapshot: bool, view_changes: &[PlannedChange]) -> String {
    let (mut statement, mut parameter) = if snapshot {
        (
            concat!(
                inserted!(),
                ", kept AS (",
                keep_snapshot_after_events!(),
                " RETURNING 1)"
            )
            .to_owned(),
            AFTER_SNAPSHOT_PARAMETERS,
        )
    } else {
        (inserted!().to_owned(), AFTER_EVENTS_PARAMETERS)
    };
    let mut written = Vec::with_capacity(view_changes.len());
    for change in view_changes {
        statement.push_str(", ");
        statement.push_str(&change.common_table_expressions(parameter, "inserted"));
        parameter += change.parameter_count();
        written.push(change.rows_written());
    }
    statement.push_str(" SELECT ");
    statement.push_str(&written.join(", "));
    statement
}

/// The columns of a commit's events, one array each, for [`INSERT_EVENTS`].
#[derive(Default)]
struct EventRows {
    sequence: Vec<i64>,
    event_type: Vec<String>,
    event_version: Vec<String>,
    payload: Vec<String>,
    metadata: Vec<String>,
    content_digest: Vec<String>,
    chain_digest: Vec<String>,
}

/// Events in Postgres.
pub struct PgEventRepository {
    pool: PgPool,
    reader: PostgresEventRepository,
    chain_key: Arc<ChainKey>,
    sealer: Arc<dyn SecretSealer>,
}

/// A user id as the tables keep it.
fn parse_user_id(id: &str) -> Result<UserId, PersistenceError> {
    id.parse()
        .map_err(|error: uuid::Error| PersistenceError::DeserializationError(Box::new(error)))
}

impl PgEventRepository {
    /// The keys `email` may be indexed under: its keyed digest under each sealing key.
    fn email_digests(&self, email: &Email) -> Vec<String> {
        self.sealer
            .digests(&email_index_input(email))
            .into_iter()
            .map(|digest| digest.digest)
            .collect()
    }

    /// A repository over the `events`, `user_emails` and `user_data_keys` tables, chaining with
    /// `chain_key`, and opening data keys and digesting addresses with `sealer`.
    pub fn new(pool: PgPool, chain_key: Arc<ChainKey>, sealer: Arc<dyn SecretSealer>) -> Self {
        let reader = PostgresEventRepository::new(pool.clone());
        Self {
            pool,
            reader,
            chain_key,
            sealer,
        }
    }
}

impl Clone for PgEventRepository {
    fn clone(&self) -> Self {
        Self::new(
            self.pool.clone(),
            Arc::clone(&self.chain_key),
            Arc::clone(&self.sealer),
        )
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
    twofold_projections::log::database(error)
}

impl PersistedEventRepository for PgEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self.reader.get_events::<A>(aggregate_id).await?;
        open_events(self, events).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self
            .reader
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await?;
        open_events(self, events).await
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
        self.commit(Commit {
            events,
            ..Commit::default()
        })
        .await?;
        Ok(())
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
            sqlx::query_scalar("SELECT user_id FROM user_emails WHERE email_key = ANY($1) LIMIT 1")
                .bind(self.email_digests(email))
                .fetch_optional(&self.pool)
                .await
                .map_err(persistence_error)?;
        user_id.as_deref().map(parse_user_id).transpose()
    }
}

#[async_trait]
impl PersonalData for PgEventRepository {
    async fn keys(&self, users: &[&str]) -> Result<KeyRing, PersistenceError> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT aggregate_id, key_id, sealed_key FROM user_data_keys \
             WHERE aggregate_id = ANY($1)",
        )
        .bind(users)
        .fetch_all(&self.pool)
        .await
        .map_err(persistence_error)?;
        Ok(self.ring(rows))
    }

    async fn all_keys(&self) -> Result<KeyRing, PersistenceError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT aggregate_id, key_id, sealed_key FROM user_data_keys")
                .fetch_all(&self.pool)
                .await
                .map_err(persistence_error)?;
        Ok(self.ring(rows))
    }
}

/// What [`PgEventRepository::seal_older_personal_data`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OlderDataSealed {
    /// Users whose events held personal data in clear.
    pub users: u64,
    /// Their events rewritten (sealed).
    pub events_rewritten: u64,
}

/// Where a stored row holds personal data in clear: a sign-up from before sealed sign-ups, or
/// a client address or user agent in the metadata.
const HOLDS_CLEAR_PERSONAL_DATA: &str = "aggregate_type = 'User' AND \
    ((event_type = 'SignedUp' AND event_version <> '3.0') \
     OR metadata->>'ip' NOT LIKE 'sealed:v1:%' \
     OR metadata->>'user_agent' NOT LIKE 'sealed:v1:%')";

impl PgEventRepository {
    /// Seals, once, the personal data of the events stored before per-user keys: for each
    /// user with such rows, a data key (theirs, or a new one), their sign-up brought to the
    /// current shape and sealed, their metadata sealed, and their chain computed again (the
    /// rows changed: `audit verify` then holds, and a head saved before reports the rewritten
    /// users). Every instance calls it before it serves; the first does the work under a lock
    /// and a marker row makes it never run again.
    pub async fn seal_older_personal_data(
        pool: &PgPool,
        sealer: &dyn SecretSealer,
        chain_key: &ChainKey,
    ) -> Result<OlderDataSealed, PersistenceError> {
        let mut tx = pool.begin().await.map_err(persistence_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('twofold personal data sealed'))")
            .execute(&mut *tx)
            .await
            .map_err(persistence_error)?;
        let done: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM personal_data_sealed)")
            .fetch_one(&mut *tx)
            .await
            .map_err(persistence_error)?;
        if done {
            return Ok(OlderDataSealed::default());
        }
        let users: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT DISTINCT aggregate_id FROM events WHERE {HOLDS_CLEAR_PERSONAL_DATA} \
             ORDER BY aggregate_id"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(persistence_error)?;
        let upcasters = twofold_domain::upcasters();
        let mut sealed = OlderDataSealed::default();
        for user in &users {
            let mut ring = KeyRing::default();
            let stored: Option<(String, String)> = sqlx::query_as(
                "SELECT key_id, sealed_key FROM user_data_keys WHERE aggregate_id = $1",
            )
            .bind(user)
            .fetch_optional(&mut *tx)
            .await
            .map_err(persistence_error)?;
            match stored {
                Some((key_id, ciphertext)) => {
                    ring = key_ring(
                        sealer,
                        [(user.clone(), SealedSecret { key_id, ciphertext })],
                    );
                }
                None => {
                    let mut bytes = Zeroizing::new([0u8; 32]);
                    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
                    let key = sealer.seal(bytes.as_ref());
                    sqlx::query(KEEP_DATA_KEY)
                        .bind(user)
                        .bind(&key.key_id)
                        .bind(&key.ciphertext)
                        .execute(&mut *tx)
                        .await
                        .map_err(persistence_error)?;
                    ring.insert(user.clone(), DataKey::new(bytes));
                }
            }
            let rows = sqlx::query(&format!(
                "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, \
                    payload, metadata FROM events \
                 WHERE aggregate_id = $1 AND {HOLDS_CLEAR_PERSONAL_DATA} ORDER BY sequence \
                 FOR UPDATE"
            ))
            .bind(user)
            .fetch_all(&mut *tx)
            .await
            .map_err(persistence_error)?;
            for row in &rows {
                let mut event = twofold_projections::log::serialized_event(row)?;
                if event.event_type == "SignedUp" {
                    while let Some(upcaster) = upcasters.iter().find(|upcaster| {
                        upcaster.can_upcast(&event.event_type, &event.event_version)
                    }) {
                        event = upcaster.upcast(event);
                    }
                }
                ring.seal(&mut event, || {
                    let mut nonce = [0u8; 24];
                    rand::rngs::OsRng.fill_bytes(&mut nonce);
                    nonce
                });
                sqlx::query(
                    "UPDATE events SET event_version = $3, payload = $4::json, metadata = $5::json \
                     WHERE aggregate_id = $1 AND sequence = $2 AND aggregate_type = 'User'",
                )
                .bind(user)
                .bind(i64::try_from(event.sequence).unwrap_or(i64::MAX))
                .bind(&event.event_version)
                .bind(serde_json::to_string(&event.payload)?)
                .bind(serde_json::to_string(&event.metadata)?)
                .execute(&mut *tx)
                .await
                .map_err(persistence_error)?;
            }
            chain::rechain(&mut tx, chain_key, User::TYPE, user)
                .await
                .map_err(persistence_error)?;
            // A snapshot holds the address in clear and is only a cache: it is taken again.
            sqlx::query("DELETE FROM user_snapshots WHERE aggregate_id = $1")
                .bind(user)
                .execute(&mut *tx)
                .await
                .map_err(persistence_error)?;
            sealed.users += 1;
            sealed.events_rewritten += rows.len() as u64;
        }
        sqlx::query("INSERT INTO personal_data_sealed (users, events_rewritten) VALUES ($1, $2)")
            .bind(i64::try_from(sealed.users).unwrap_or(i64::MAX))
            .bind(i64::try_from(sealed.events_rewritten).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(persistence_error)?;
        tx.commit().await.map_err(persistence_error)?;
        Ok(sealed)
    }

    /// Rewrites the address reservations stored in clear (before the index was keyed by
    /// digest) into their digests under `sealer`'s current key, in one transaction. Returns
    /// how many it rewrote; none on every start after the first.
    pub async fn index_clear_addresses(
        pool: &PgPool,
        sealer: &dyn SecretSealer,
    ) -> Result<usize, PersistenceError> {
        let mut tx = pool.begin().await.map_err(persistence_error)?;
        // A digest is base64, without '@'; every address has one.
        let clear: Vec<(String, String)> = sqlx::query_as(
            "SELECT email_key, user_id FROM user_emails WHERE strpos(email_key, '@') > 0 \
             FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(persistence_error)?;
        for (address, user_id) in &clear {
            let email = Email::parse(address)
                .map_err(|error| PersistenceError::UnknownError(Box::new(error)))?;
            sqlx::query("UPDATE user_emails SET email_key = $1 WHERE email_key = $2")
                .bind(sealer.digest(&email_index_input(&email)).digest)
                .bind(address)
                .execute(&mut *tx)
                .await
                .map_err(persistence_error)?;
            tracing::debug!(user_id, "address reservation keyed by digest");
        }
        tx.commit().await.map_err(persistence_error)?;
        Ok(clear.len())
    }

    /// The data keys of `rows` (user, key id, sealed key), opened.
    fn ring(&self, rows: Vec<(String, String, String)>) -> KeyRing {
        key_ring(
            self.sealer.as_ref(),
            rows.into_iter()
                .map(|(user, key_id, ciphertext)| (user, SealedSecret { key_id, ciphertext })),
        )
    }

    /// Inserts `events` (one aggregate's, in order) in one statement, chained after
    /// `previous`, the chain digest of the event before the first, and keeps `snapshot` of
    /// the aggregate after them and makes `view_changes` in the same statement; says which
    /// of those it made, and the chain digest of the last event.
    async fn insert_events(
        &self,
        executor: impl sqlx::PgExecutor<'_>,
        events: &[SerializedEvent],
        mut previous: Option<String>,
        snapshot: Option<&Snapshot>,
        view_changes: &[PlannedChange],
    ) -> Result<StoredCommit, PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(StoredCommit {
                views_changed: vec![false; view_changes.len()],
                chain_head: previous,
            });
        };
        let mut rows = EventRows::default();
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
            rows.sequence.push(sequence);
            rows.event_type.push(chained.event_type);
            rows.event_version.push(chained.event_version);
            rows.payload.push(chained.payload);
            rows.metadata.push(chained.metadata);
            rows.content_digest.push(content_digest);
            rows.chain_digest.push(chain_digest.clone());
            previous = Some(chain_digest);
        }
        let with_views;
        let statement = match (snapshot, view_changes) {
            (Some(_), []) => INSERT_EVENTS_KEEPING_SNAPSHOT,
            (None, []) => INSERT_EVENTS,
            (snapshot, views) => {
                with_views = statement_with_views(snapshot.is_some(), views);
                &with_views
            }
        };
        let query = sqlx::query(statement)
            .bind(&first.aggregate_type)
            .bind(&first.aggregate_id)
            .bind(self.chain_key.id())
            .bind(&rows.sequence)
            .bind(&rows.event_type)
            .bind(&rows.event_version)
            .bind(&rows.payload)
            .bind(&rows.metadata)
            .bind(&rows.content_digest)
            .bind(&rows.chain_digest);
        let query = match snapshot {
            Some(snapshot) => self.bind_snapshot(query, first, snapshot),
            None => query,
        };
        if view_changes.is_empty() {
            query.execute(executor).await.map_err(persistence_error)?;
            return Ok(StoredCommit {
                views_changed: Vec::new(),
                chain_head: previous,
            });
        }
        let query = view_changes
            .iter()
            .fold(query, |query, change| change.bind(query));
        let row = query.fetch_one(executor).await.map_err(persistence_error)?;
        let views_changed = (0..view_changes.len())
            .map(|column| {
                let written: i64 = row.try_get(column).map_err(persistence_error)?;
                Ok(written == 1)
            })
            .collect::<Result<_, PersistenceError>>()?;
        Ok(StoredCommit {
            views_changed,
            chain_head: previous,
        })
    }

    /// [`Self::insert_events`] in a transaction of its own. A statement that fails with the
    /// changes of views and not for the events (the database refused it, and not for a taken
    /// sequence) is run again without them: a view the database will not change must not
    /// keep the events out. That view is then brought up by the dispatch, or the catch-up
    /// projector.
    async fn insert_events_alone(
        &self,
        events: &[SerializedEvent],
        previous: String,
        snapshot: Option<&Snapshot>,
        view_changes: &[PlannedChange],
    ) -> Result<StoredCommit, PersistenceError> {
        let inserted = self
            .insert_events(
                &self.pool,
                events,
                Some(previous.clone()),
                snapshot,
                view_changes,
            )
            .await;
        match inserted {
            Err(PersistenceError::UnknownError(error)) if !view_changes.is_empty() => {
                tracing::warn!(error = %error,
                    "the commit of events with changes of views failed; committing the events alone");
                let stored = self
                    .insert_events(&self.pool, events, Some(previous), snapshot, &[])
                    .await?;
                Ok(StoredCommit {
                    views_changed: vec![false; view_changes.len()],
                    ..stored
                })
            }
            other => other,
        }
    }

    /// Binds `snapshot` of `event`'s aggregate after the parameters before it: its sequence,
    /// state version, state and the digest that lets a load trust it.
    fn bind_snapshot<'q>(
        &self,
        query: PgQuery<'q>,
        event: &'q SerializedEvent,
        snapshot: &'q Snapshot,
    ) -> PgQuery<'q> {
        let sequence = snapshot.sequence as u64;
        let digest = chain::snapshot_digest(
            &self.chain_key,
            &event.aggregate_type,
            &event.aggregate_id,
            sequence,
            &snapshot.state_version,
            &snapshot.state,
        );
        query
            .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
            .bind(&snapshot.state_version)
            .bind(&snapshot.state)
            .bind(digest)
    }

    /// The events among `rows` (a user's, from [`USER_EVENTS_FROM`] or
    /// [`USER_FROM_SNAPSHOT`]) after sequence `after`, opened with the data key the rows carry,
    /// and the chain digest of the last row.
    fn user_events(
        &self,
        aggregate_id: &str,
        after: usize,
        rows: &[sqlx::postgres::PgRow],
    ) -> Result<UserEvents, PersistenceError> {
        let Some(last) = rows.last() else {
            return Ok(UserEvents::default());
        };
        let chain_head: Option<String> = last.try_get("chain_digest").map_err(persistence_error)?;
        let key: (Option<String>, Option<String>) = (
            last.try_get("key_id").map_err(persistence_error)?,
            last.try_get("sealed_key").map_err(persistence_error)?,
        );
        let keys = match key {
            (Some(key_id), Some(ciphertext)) => {
                self.ring(vec![(aggregate_id.to_owned(), key_id, ciphertext)])
            }
            _ => KeyRing::default(),
        };
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let event = twofold_projections::log::serialized_event(row)?;
            if event.sequence > after {
                events.push(keys.open(event));
            }
        }
        Ok(UserEvents {
            events,
            keys,
            chain_head,
        })
    }

    /// The snapshot the first row of [`USER_FROM_SNAPSHOT`] carries, if there is one and it
    /// can be trusted: taken under the current chain key, its digest matching, and its state
    /// on that row (the row of the event at its sequence).
    /// User `aggregate_id` from the rows of [`USER_FROM_SNAPSHOT`] (or
    /// [`OWNER_FROM_SNAPSHOT`]): the snapshot they carry if it can be trusted, and the events
    /// after it, or every event, read again, when it cannot.
    async fn stored_user(
        &self,
        aggregate_id: &str,
        rows: Vec<sqlx::postgres::PgRow>,
    ) -> Result<StoredUser, PersistenceError> {
        let Some(first) = rows.first() else {
            // No event: a user to be (a snapshot is only kept with its events).
            return Ok(StoredUser::default());
        };
        let kept: Option<i64> = first
            .try_get("snapshot_sequence")
            .map_err(persistence_error)?;
        match self.trusted_snapshot(aggregate_id, first)? {
            Some(snapshot) => Ok(StoredUser {
                tail: self.user_events(aggregate_id, snapshot.sequence, &rows)?,
                snapshot: Some(snapshot),
            }),
            // Without a snapshot the rows are every event already.
            None if kept.is_none() => Ok(StoredUser {
                snapshot: None,
                tail: self.user_events(aggregate_id, 0, &rows)?,
            }),
            // One not to be trusted: the rows start at its sequence; every event is read.
            None => Ok(StoredUser {
                snapshot: None,
                tail: self.user_events_after(aggregate_id, 0).await?,
            }),
        }
    }

    fn trusted_snapshot(
        &self,
        aggregate_id: &str,
        first: &sqlx::postgres::PgRow,
    ) -> Result<Option<Snapshot>, PersistenceError> {
        let column = |name: &str| -> Result<Option<String>, PersistenceError> {
            first.try_get(name).map_err(persistence_error)
        };
        let sequence: Option<i64> = first
            .try_get("snapshot_sequence")
            .map_err(persistence_error)?;
        let (Some(sequence), Some(state_version), Some(state), Some(digest), Some(key_id)) = (
            sequence,
            column("snapshot_state_version")?,
            column("snapshot_state")?,
            column("snapshot_digest")?,
            column("snapshot_key_id")?,
        ) else {
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
            state,
        }))
    }
}

impl EventRepository for PgEventRepository {
    async fn commit(&self, commit: Commit<'_>) -> Result<StoredCommit, PersistenceError> {
        let Some(first) = commit.events.first() else {
            return Ok(StoredCommit {
                views_changed: vec![false; commit.view_changes.len()],
                chain_head: commit.previous_chain_digest,
            });
        };
        // Events alone (with or without a snapshot), after a known head, are one statement: a
        // transaction of their own, without a BEGIN and a COMMIT of two more round trips (most
        // logins and refreshes). Only this statement makes view changes; the others' views
        // are dispatched.
        let events_alone = commit.jobs.is_empty()
            && commit.email_claim.is_none()
            && commit.new_key.is_none()
            && !commit.forget;
        if events_alone {
            if let Some(previous) = commit.previous_chain_digest {
                return self
                    .insert_events_alone(
                        commit.events,
                        previous,
                        commit.snapshot.as_ref(),
                        commit.view_changes,
                    )
                    .await;
            }
        }
        let mut tx = self.pool.begin().await.map_err(persistence_error)?;
        if let Some(sealed) = &commit.new_key {
            sqlx::query(KEEP_DATA_KEY)
                .bind(&first.aggregate_id)
                .bind(&sealed.key_id)
                .bind(&sealed.ciphertext)
                .execute(&mut *tx)
                .await
                .map_err(persistence_error)?;
        }
        if let Some(claim) = &commit.email_claim {
            let digests: Vec<&str> = claim
                .digests
                .iter()
                .map(|digest| digest.digest.as_str())
                .collect();
            let taken: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM user_emails WHERE email_key = ANY($1))",
            )
            .bind(&digests)
            .fetch_one(&mut *tx)
            .await
            .map_err(persistence_error)?;
            let Some(current) = digests.first().filter(|_| !taken) else {
                return Err(PersistenceError::UnknownError(Box::new(EmailTaken)));
            };
            sqlx::query(RESERVE_EMAIL)
                .bind(current)
                .bind(claim.user_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(persistence_error)?;
        }
        let previous = match commit.previous_chain_digest {
            Some(digest) => Some(digest),
            None => chain::previous_digest(
                &mut tx,
                &first.aggregate_type,
                &first.aggregate_id,
                first.sequence as u64,
            )
            .await
            .map_err(persistence_error)?,
        };
        let stored = self
            .insert_events(&mut *tx, commit.events, previous, None, &[])
            .await?;
        for job in commit.jobs {
            twofold_nats::enqueue(&mut tx, job)
                .await
                .map_err(persistence_error)?;
        }
        if commit.forget {
            for statement in [
                "DELETE FROM user_data_keys WHERE aggregate_id = $1",
                "DELETE FROM user_emails WHERE user_id = $1",
                "DELETE FROM user_snapshots WHERE aggregate_id = $1",
                "DELETE FROM mail_outbox WHERE job->>'owner' = $1",
            ] {
                sqlx::query(statement)
                    .bind(&first.aggregate_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(persistence_error)?;
            }
        } else if let Some(snapshot) = &commit.snapshot {
            let query = sqlx::query(KEEP_SNAPSHOT)
                .bind(&first.aggregate_type)
                .bind(&first.aggregate_id)
                .bind(self.chain_key.id());
            self.bind_snapshot(query, first, snapshot)
                .execute(&mut *tx)
                .await
                .map_err(persistence_error)?;
        }
        tx.commit().await.map_err(persistence_error)?;
        Ok(StoredCommit {
            views_changed: vec![false; commit.view_changes.len()],
            ..stored
        })
    }

    async fn user_events_after(
        &self,
        aggregate_id: &str,
        after: usize,
    ) -> Result<UserEvents, PersistenceError> {
        // From the event at `after` itself, for its chain digest when none follows it.
        let from = i64::try_from(after.max(1)).unwrap_or(i64::MAX);
        let rows = sqlx::query(USER_EVENTS_FROM)
            .bind(User::TYPE)
            .bind(aggregate_id)
            .bind(from)
            .fetch_all(&self.pool)
            .await
            .map_err(persistence_error)?;
        self.user_events(aggregate_id, after, &rows)
    }

    async fn load(&self, aggregate_id: &str) -> Result<StoredUser, PersistenceError> {
        let rows = sqlx::query(USER_FROM_SNAPSHOT)
            .bind(User::TYPE)
            .bind(aggregate_id)
            .fetch_all(&self.pool)
            .await
            .map_err(persistence_error)?;
        self.stored_user(aggregate_id, rows).await
    }

    async fn load_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<(UserId, StoredUser)>, PersistenceError> {
        let rows = sqlx::query(OWNER_FROM_SNAPSHOT)
            .bind(User::TYPE)
            .bind(self.email_digests(email))
            .fetch_all(&self.pool)
            .await
            .map_err(persistence_error)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let aggregate_id: String = first.try_get("aggregate_id").map_err(persistence_error)?;
        let id = parse_user_id(&aggregate_id)?;
        Ok(Some((id, self.stored_user(&aggregate_id, rows).await?)))
    }

    async fn reseal_personal_data(
        &self,
        aggregate_id: &str,
        address: Option<&[KeyedDigest]>,
    ) -> Result<PersonalResealed, PersistenceError> {
        let mut tx = self.pool.begin().await.map_err(persistence_error)?;
        let mut resealed = PersonalResealed::default();
        let sealed: Option<(String, String)> = sqlx::query_as(
            "SELECT key_id, sealed_key FROM user_data_keys WHERE aggregate_id = $1 FOR UPDATE",
        )
        .bind(aggregate_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(persistence_error)?;
        if let Some((key_id, ciphertext)) = sealed {
            if let Some(again) =
                reseal_key(self.sealer.as_ref(), &SealedSecret { key_id, ciphertext })?
            {
                sqlx::query(
                    "UPDATE user_data_keys SET key_id = $2, sealed_key = $3 WHERE aggregate_id = $1",
                )
                .bind(aggregate_id)
                .bind(&again.key_id)
                .bind(&again.ciphertext)
                .execute(&mut *tx)
                .await
                .map_err(persistence_error)?;
                resealed.key = true;
            }
        }
        if let Some([current, older @ ..]) = address {
            let older: Vec<&str> = older.iter().map(|digest| digest.digest.as_str()).collect();
            let moved = sqlx::query(
                "UPDATE user_emails SET email_key = $1 WHERE user_id = $2 AND email_key = ANY($3)",
            )
            .bind(&current.digest)
            .bind(aggregate_id)
            .bind(&older)
            .execute(&mut *tx)
            .await
            .map_err(persistence_error)?;
            resealed.address = moved.rows_affected() > 0;
        }
        tx.commit().await.map_err(persistence_error)?;
        Ok(resealed)
    }
}
