//! The in-memory event repository of the embedded mode. It keeps the guarantees the Postgres
//! one gives (optimistic concurrency per aggregate, unique emails, atomic commits), which
//! cqrs-es's own `MemStore` does not: it appends without checking sequences.
//!
//! Every event stays in process memory for the life of the process, so the embedded mode's
//! memory grows with use. So that nobody takes that growth for a leak, the store reports what
//! it holds on each commit (`twofold_embedded_store_events`, `twofold_embedded_store_bytes`).
//! The bytes are the text the store holds for each event: the JSON of its payload and
//! metadata (personal data sealed, as stored) plus its aggregate id, type, event type and
//! version. Events are kept as that text, not as parsed `serde_json` values, which take
//! several times as much heap; each event also has its commit time, index entry and the
//! allocator's bookkeeping beside it, so the figure is a close lower bound of the heap the
//! store takes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use serde_json::Value;
use time::OffsetDateTime;
use twofold_domain::services::SecretSealer;
use twofold_domain::values::{Email, KeyedDigest, SealedSecret, UserId};
use twofold_domain::User;
use twofold_projections::log::{Checkpoint, EventLog, LoggedEvent};
use twofold_projections::personal::{KeyRing, PersonalData};

use super::{
    email_index_input, key_ring, reseal_key, Commit, EmailIndex, EmailTaken, EventRepository,
    PersonalResealed, Snapshot, StoredCommit, StoredUser, UserEvents,
};
use crate::metrics::Metrics;
use twofold_nats::MailJob;

#[derive(Default)]
struct Stored {
    /// Every event in commit order.
    log: Vec<StoredEvent>,
    /// When each event of `log` was committed.
    recorded_at: Vec<OffsetDateTime>,
    /// Per aggregate (type, id): positions in `log`.
    streams: HashMap<(String, String), Vec<usize>>,
    /// The address index: the keyed digest of an address -> its user.
    emails: HashMap<String, UserId>,
    /// The newest snapshot of each user.
    snapshots: HashMap<String, Snapshot>,
    /// The users' data keys, sealed.
    keys: HashMap<String, SealedSecret>,
    /// The text `log` holds (see [`StoredEvent::size`]).
    bytes: u64,
}

/// An event as the store keeps it: its payload and metadata as JSON text, parsed again when
/// the event is read. A parsed value takes several times the heap of its text (a node per
/// value, an allocation per key and string), and an event is kept far longer than it is
/// read: in a probe, 500 logins (1,000 events of ~350 bytes of JSON) grew the service's RSS
/// by 3.5 MiB with the events held as values, and by 1.6 MiB with them held as text.
/// Parsing the text back gives the values the Postgres store gives, which reads them back
/// from text too.
struct StoredEvent {
    aggregate_id: Box<str>,
    sequence: usize,
    aggregate_type: Box<str>,
    event_type: Box<str>,
    event_version: Box<str>,
    payload: Box<str>,
    metadata: Box<str>,
}

impl StoredEvent {
    fn new(event: &SerializedEvent) -> Result<Self, PersistenceError> {
        let text = |value: &Value| {
            serde_json::to_string(value)
                .map(String::into_boxed_str)
                .map_err(|error| PersistenceError::UnknownError(Box::new(error)))
        };
        Ok(Self {
            aggregate_id: event.aggregate_id.as_str().into(),
            sequence: event.sequence,
            aggregate_type: event.aggregate_type.as_str().into(),
            event_type: event.event_type.as_str().into(),
            event_version: event.event_version.as_str().into(),
            payload: text(&event.payload)?,
            metadata: text(&event.metadata)?,
        })
    }

    /// The bytes of text it holds: its payload and metadata JSON, aggregate id, aggregate
    /// type, event type and event version.
    fn size(&self) -> u64 {
        [
            &self.aggregate_id,
            &self.aggregate_type,
            &self.event_type,
            &self.event_version,
            &self.payload,
            &self.metadata,
        ]
        .iter()
        .map(|text| text.len() as u64)
        .sum()
    }

    fn event(&self) -> Result<SerializedEvent, PersistenceError> {
        self.event_with(parsed(&self.metadata)?)
    }

    /// The event as a command folds it: its payload alone. The metadata, which no command
    /// reads, is left unparsed and reads as empty.
    fn command_event(&self) -> Result<SerializedEvent, PersistenceError> {
        self.event_with(Value::Object(serde_json::Map::new()))
    }

    fn event_with(&self, metadata: Value) -> Result<SerializedEvent, PersistenceError> {
        Ok(SerializedEvent {
            aggregate_id: self.aggregate_id.to_string(),
            sequence: self.sequence,
            aggregate_type: self.aggregate_type.to_string(),
            event_type: self.event_type.to_string(),
            event_version: self.event_version.to_string(),
            payload: parsed(&self.payload)?,
            metadata,
        })
    }
}

fn parsed(text: &str) -> Result<Value, PersistenceError> {
    serde_json::from_str(text)
        .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))
}

impl Stored {
    /// The events of aggregate `aggregate_id` of `aggregate_type` after sequence `after`, each
    /// read by `read`, personal data as stored.
    fn events_of(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after: usize,
        read: fn(&StoredEvent) -> Result<SerializedEvent, PersistenceError>,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let key = (aggregate_type.to_owned(), aggregate_id.to_owned());
        self.streams
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|position| self.log.get(*position))
            .filter(|event| event.sequence > after)
            .map(read)
            .collect()
    }

    /// `events` with their personal data opened with their users' keys.
    fn opened(
        &self,
        sealer: &dyn SecretSealer,
        events: Vec<SerializedEvent>,
    ) -> Vec<SerializedEvent> {
        let ring = key_ring(
            sealer,
            events
                .iter()
                .filter_map(|event| {
                    let sealed = self.keys.get(&event.aggregate_id)?;
                    Some((event.aggregate_id.clone(), sealed.clone()))
                })
                .collect::<HashMap<_, _>>(),
        );
        events.into_iter().map(|event| ring.open(event)).collect()
    }
    /// `logged` with their personal data opened.
    fn opened_logged(
        &self,
        sealer: &dyn SecretSealer,
        logged: Vec<LoggedEvent>,
    ) -> Vec<LoggedEvent> {
        let (places, events): (Vec<_>, Vec<_>) = logged
            .into_iter()
            .map(|logged| ((logged.checkpoint, logged.recorded_at), logged.event))
            .unzip();
        places
            .into_iter()
            .zip(self.opened(sealer, events))
            .map(|((checkpoint, recorded_at), event)| LoggedEvent {
                checkpoint,
                event,
                recorded_at,
            })
            .collect()
    }
}

/// Events in memory; clones share one store. Mail jobs committed with events are handed to
/// an in-process queue once the commit succeeded (there is no process to crash in between
/// that would not also lose the events).
#[derive(Clone)]
pub struct MemEventRepository {
    stored: Arc<Mutex<Stored>>,
    outbox: tokio::sync::mpsc::UnboundedSender<MailJob>,
    sealer: Arc<dyn SecretSealer>,
    /// Where the store reports what it holds, if anywhere.
    metrics: Option<Metrics>,
}

fn poisoned() -> PersistenceError {
    PersistenceError::UnknownError("in-memory event store lock poisoned".into())
}

impl MemEventRepository {
    /// A repository handing committed mail jobs to `outbox`, opening data keys and digesting
    /// addresses with `sealer`.
    pub fn new(
        outbox: tokio::sync::mpsc::UnboundedSender<MailJob>,
        sealer: Arc<dyn SecretSealer>,
    ) -> Self {
        Self {
            stored: Arc::default(),
            outbox,
            sealer,
            metrics: None,
        }
    }

    /// Reports what the store holds into `metrics`, now and after each commit.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        if let Ok(stored) = self.stored.lock() {
            metrics.embedded_store(stored.log.len(), stored.bytes);
        }
        self.metrics = Some(metrics);
        self
    }

    fn select(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let stored = self.stored.lock().map_err(|_| poisoned())?;
        let events = stored.events_of(aggregate_type, aggregate_id, after, StoredEvent::event)?;
        Ok(stored.opened(self.sealer.as_ref(), events))
    }

    /// Keeps `snapshot` as the newest of `aggregate_id`, whatever it holds (tests only: the
    /// store's own snapshots come with commits).
    #[cfg(test)]
    pub fn put_snapshot(&self, aggregate_id: &str, snapshot: Snapshot) {
        if let Ok(mut stored) = self.stored.lock() {
            stored.snapshots.insert(aggregate_id.to_owned(), snapshot);
        }
    }

    fn stream(events: Vec<SerializedEvent>) -> ReplayStream {
        let (mut feed, stream) = ReplayStream::new(events.len().max(1));
        tokio::spawn(async move {
            for event in events {
                if feed.push(Ok(event)).await.is_err() {
                    return;
                }
            }
        });
        stream
    }
}

impl PersistedEventRepository for MemEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.select(A::TYPE, aggregate_id, 0)
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.select(A::TYPE, aggregate_id, last_sequence)
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
        Ok(Self::stream(self.select(A::TYPE, aggregate_id, 0)?))
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let events: Vec<SerializedEvent> = {
            let stored = self.stored.lock().map_err(|_| poisoned())?;
            stored
                .log
                .iter()
                .filter(|event| &*event.aggregate_type == A::TYPE)
                .map(StoredEvent::event)
                .collect::<Result<_, _>>()?
        };
        Ok(Self::stream(events))
    }
}

#[async_trait]
impl EmailIndex for MemEventRepository {
    async fn find_user(&self, email: &Email) -> Result<Option<UserId>, PersistenceError> {
        let digests = self.sealer.digests(&email_index_input(email));
        let stored = self.stored.lock().map_err(|_| poisoned())?;
        Ok(digests
            .iter()
            .find_map(|digest| stored.emails.get(&digest.digest).copied()))
    }
}

#[async_trait]
impl PersonalData for MemEventRepository {
    async fn keys(&self, users: &[&str]) -> Result<KeyRing, PersistenceError> {
        let stored = self.stored.lock().map_err(|_| poisoned())?;
        Ok(key_ring(
            self.sealer.as_ref(),
            users
                .iter()
                .filter_map(|user| Some(((*user).to_owned(), stored.keys.get(*user)?.clone())))
                .collect::<Vec<_>>(),
        ))
    }

    async fn all_keys(&self) -> Result<KeyRing, PersistenceError> {
        let stored = self.stored.lock().map_err(|_| poisoned())?;
        Ok(key_ring(self.sealer.as_ref(), stored.keys.clone()))
    }
}

impl EventRepository for MemEventRepository {
    async fn commit(&self, commit: Commit<'_>) -> Result<StoredCommit, PersistenceError> {
        let events = commit.events;
        // Views in memory are kept apart from the events: their changes are dispatched. The
        // events are not chained.
        let stored_besides = StoredCommit {
            views_changed: vec![false; commit.view_changes.len()],
            chain_head: None,
        };
        let mut stored = self.stored.lock().map_err(|_| poisoned())?;
        // Check everything before changing anything, so a refused commit leaves no trace.
        let Some(first) = events.first() else {
            return Ok(stored_besides);
        };
        let key = (first.aggregate_type.clone(), first.aggregate_id.clone());
        let current = stored.streams.get(&key).map_or(0, Vec::len);
        let in_order = events.iter().enumerate().all(|(offset, event)| {
            event.aggregate_type == first.aggregate_type
                && event.aggregate_id == first.aggregate_id
                && event.sequence == current + offset + 1
        });
        let key_taken = commit.new_key.is_some() && stored.keys.contains_key(&first.aggregate_id);
        if !in_order || key_taken {
            return Err(PersistenceError::OptimisticLockError);
        }
        if let Some(claim) = &commit.email_claim {
            if claim
                .digests
                .iter()
                .any(|digest| stored.emails.contains_key(&digest.digest))
            {
                return Err(PersistenceError::UnknownError(Box::new(EmailTaken)));
            }
        }
        let kept = events
            .iter()
            .map(StoredEvent::new)
            .collect::<Result<Vec<_>, _>>()?;
        let now = OffsetDateTime::now_utc();
        for event in kept {
            let position = stored.log.len();
            stored.bytes += event.size();
            stored.log.push(event);
            stored.recorded_at.push(now);
            stored
                .streams
                .entry(key.clone())
                .or_default()
                .push(position);
        }
        // Under the lock, so that a later commit's figures are never overwritten by these.
        if let Some(metrics) = &self.metrics {
            metrics.embedded_store(stored.log.len(), stored.bytes);
        }
        if let Some(claim) = &commit.email_claim {
            if let Some(current) = claim.digests.first() {
                stored.emails.insert(current.digest.clone(), claim.user_id);
            }
        }
        if let Some(sealed) = commit.new_key {
            stored.keys.insert(first.aggregate_id.clone(), sealed);
        }
        let user = first.aggregate_id.clone();
        let mut jobs: Vec<MailJob> = commit.jobs.to_vec();
        if commit.forget {
            stored.keys.remove(&user);
            stored.snapshots.remove(&user);
            stored.emails.retain(|_, owner| owner.to_string() != user);
            // Nothing more is sent to an address being forgotten.
            jobs.retain(|job| job.owner.to_string() != user);
        } else if let Some(snapshot) = commit.snapshot {
            let kept = stored
                .snapshots
                .entry(user)
                .or_insert_with(|| snapshot.clone());
            if kept.sequence < snapshot.sequence {
                *kept = snapshot;
            }
        }
        drop(stored);
        for job in jobs {
            // The receiver lives as long as the service; if it is gone we are shutting down.
            let _ = self.outbox.send(job);
        }
        Ok(stored_besides)
    }

    async fn user_events_after(
        &self,
        aggregate_id: &str,
        after: usize,
    ) -> Result<UserEvents, PersistenceError> {
        let events = {
            let stored = self.stored.lock().map_err(|_| poisoned())?;
            stored.events_of(User::TYPE, aggregate_id, after, StoredEvent::command_event)?
        };
        let keys = self.keys(&[aggregate_id]).await?;
        let events = events.into_iter().map(|event| keys.open(event)).collect();
        // Events in memory are not chained.
        Ok(UserEvents {
            events,
            keys,
            chain_head: None,
        })
    }

    async fn load(&self, aggregate_id: &str) -> Result<StoredUser, PersistenceError> {
        let snapshot = {
            let stored = self.stored.lock().map_err(|_| poisoned())?;
            stored.snapshots.get(aggregate_id).cloned()
        };
        let after = snapshot.as_ref().map_or(0, |snapshot| snapshot.sequence);
        let tail = self.user_events_after(aggregate_id, after).await?;
        Ok(StoredUser { snapshot, tail })
    }

    async fn reseal_personal_data(
        &self,
        aggregate_id: &str,
        address: Option<&[KeyedDigest]>,
    ) -> Result<PersonalResealed, PersistenceError> {
        let mut stored = self.stored.lock().map_err(|_| poisoned())?;
        let mut resealed = PersonalResealed::default();
        if let Some(sealed) = stored.keys.get_mut(aggregate_id) {
            if let Some(again) = reseal_key(self.sealer.as_ref(), sealed)? {
                *sealed = again;
                resealed.key = true;
            }
        }
        if let (Some([current, older @ ..]), Ok(user)) = (address, aggregate_id.parse::<UserId>()) {
            for digest in older {
                if stored.emails.get(&digest.digest) == Some(&user) {
                    stored.emails.remove(&digest.digest);
                    stored.emails.insert(current.digest.clone(), user);
                    resealed.address = true;
                }
            }
        }
        Ok(resealed)
    }
}

/// The log in memory: an event's checkpoint is its place in commit order. A commit appends
/// under the store's lock, so a reader never sees a later event without the earlier ones.
#[async_trait]
impl EventLog for MemEventRepository {
    async fn read_after(
        &self,
        after: Checkpoint,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, PersistenceError> {
        let stored = self.stored.lock().map_err(|_| poisoned())?;
        let start = usize::try_from(after.position()).unwrap_or(0);
        let logged = stored
            .log
            .iter()
            .zip(&stored.recorded_at)
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(index, (event, recorded_at))| {
                Ok(LoggedEvent {
                    checkpoint: Checkpoint::new(0, i64::try_from(index + 1).unwrap_or(i64::MAX)),
                    event: event.event()?,
                    recorded_at: *recorded_at,
                })
            })
            .collect::<Result<_, PersistenceError>>()?;
        Ok(stored.opened_logged(self.sealer.as_ref(), logged))
    }

    async fn user_log(
        &self,
        aggregate_id: &str,
        after: usize,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, PersistenceError> {
        let stored = self.stored.lock().map_err(|_| poisoned())?;
        let key = (
            <User as Aggregate>::TYPE.to_owned(),
            aggregate_id.to_owned(),
        );
        let logged = stored
            .streams
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|&index| {
                Some((
                    index,
                    stored.log.get(index)?,
                    stored.recorded_at.get(index)?,
                ))
            })
            .filter(|(_, event, _)| event.sequence > after)
            .take(limit)
            .map(|(index, event, recorded_at)| {
                Ok(LoggedEvent {
                    checkpoint: Checkpoint::new(0, i64::try_from(index + 1).unwrap_or(i64::MAX)),
                    event: event.event()?,
                    recorded_at: *recorded_at,
                })
            })
            .collect::<Result<_, PersistenceError>>()?;
        Ok(stored.opened_logged(self.sealer.as_ref(), logged))
    }

    async fn user_events(
        &self,
        aggregate_id: &str,
        after: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.select(<User as Aggregate>::TYPE, aggregate_id, after)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(user: &str, sequence: usize, payload: Value) -> SerializedEvent {
        SerializedEvent {
            aggregate_id: user.to_owned(),
            sequence,
            aggregate_type: "User".to_owned(),
            event_type: "AccountLocked".to_owned(),
            event_version: "1.0".to_owned(),
            payload,
            metadata: json!({"actor": "cli", "request_id": "r-1"}),
        }
    }

    /// The value of the unlabelled sample `name` on `metrics`' page.
    fn gauge(metrics: &Metrics, name: &str) -> Option<f64> {
        metrics.render().lines().find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.parse().ok())?
        })
    }

    #[tokio::test]
    async fn the_store_reports_the_events_it_holds_and_their_serialized_bytes() {
        let (outbox, _mail) = tokio::sync::mpsc::unbounded_channel();
        let metrics = Metrics::new();
        let repository =
            MemEventRepository::new(outbox, Arc::new(twofold_domain::testing::HexSealer))
                .with_metrics(metrics.clone());
        assert_eq!(gauge(&metrics, "twofold_embedded_store_events"), Some(0.0));
        assert_eq!(gauge(&metrics, "twofold_embedded_store_bytes"), Some(0.0));

        let first = [
            event(
                "a",
                1,
                json!({"AccountLocked": {"at": "2026-01-01T00:00:00Z"}}),
            ),
            event(
                "a",
                2,
                json!({"AccountUnlocked": {"at": "2026-01-01T00:00:01Z"}}),
            ),
        ];
        let second = [event("b", 1, json!({"AccountLocked": {"at": "x"}}))];
        for events in [&first[..], &second[..]] {
            repository
                .commit(Commit {
                    events,
                    ..Commit::default()
                })
                .await
                .unwrap();
        }
        // A refused commit (a sequence already taken) adds nothing.
        let refused = repository
            .commit(Commit {
                events: &second,
                ..Commit::default()
            })
            .await;
        assert!(matches!(
            refused,
            Err(PersistenceError::OptimisticLockError)
        ));

        let expected: usize = first
            .iter()
            .chain(&second)
            .map(|event| {
                serde_json::to_vec(&event.payload).unwrap().len()
                    + serde_json::to_vec(&event.metadata).unwrap().len()
                    + "User".len()
                    + "AccountLocked".len()
                    + "1.0".len()
                    + 1
            })
            .sum();
        assert_eq!(gauge(&metrics, "twofold_embedded_store_events"), Some(3.0));
        assert_eq!(
            gauge(&metrics, "twofold_embedded_store_bytes"),
            Some(expected as f64)
        );
    }
}
