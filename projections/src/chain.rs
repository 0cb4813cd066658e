//! Tamper evidence: each user's events are chained. Every stored event carries two keyed
//! digests, made with a key derived from the sealing key, which the database never holds:
//! one over its own stored content (aggregate, sequence, type, version, the exact payload and
//! metadata text), and one over that and its predecessor's chain digest. Someone who can
//! write to the database but does not hold the key cannot edit, insert, delete or reorder an
//! event without [`verify`] finding it, and the two digests let it say which: a content
//! digest that fails is an edit (or, if it holds at another sequence, a move); a missing
//! sequence is a deletion; a chain digest that fails where nothing else explains it is an
//! edit of the digests themselves.
//!
//! What the chain cannot show on its own is a user's newest events removed together (the
//! shortened chain is still a valid chain). A head — each user's last sequence and chain
//! digest — saved outside the database and checked later closes that gap ([`Head`],
//! `twofold audit verify --head-out` / `--head-in`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::{PgConnection, PgPool, Row};
use zeroize::Zeroizing;

/// Domain separation: the two digests of this scheme can never be mistaken for each other
/// or for another scheme's.
const CONTENT: &[u8] = b"twofold event content v1";
const LINK: &[u8] = b"twofold event chain v1";
const SNAPSHOT: &[u8] = b"twofold user snapshot v1";

/// A key the chain is computed with, and its id (stored beside each digest, so that a rotated
/// sealing key still verifies what it chained).
pub struct ChainKey {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl ChainKey {
    /// The chain key `key`, known by `id`.
    pub fn new(id: String, key: Zeroizing<[u8; 32]>) -> Self {
        Self { id, key }
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainKey(id={})", self.id)
    }
}

/// The stored content of one event, as the chain covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedEvent {
    /// The aggregate type (`User`).
    pub aggregate_type: String,
    /// The aggregate id (the user id).
    pub aggregate_id: String,
    /// Its sequence in the aggregate.
    pub sequence: u64,
    /// The event type.
    pub event_type: String,
    /// The event version.
    pub event_version: String,
    /// The payload exactly as stored.
    pub payload: String,
    /// The metadata exactly as stored.
    pub metadata: String,
}

impl ChainedEvent {
    /// The digest of this event's own content under `key`.
    pub fn content_digest(&self, key: &ChainKey) -> String {
        let mut mac = key.mac();
        let mut field = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        field(CONTENT);
        field(self.aggregate_type.as_bytes());
        field(self.aggregate_id.as_bytes());
        field(&self.sequence.to_be_bytes());
        field(self.event_type.as_bytes());
        field(self.event_version.as_bytes());
        field(self.payload.as_bytes());
        field(self.metadata.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

/// The chain digest of an event whose content digest is `content` after the chain digest
/// `previous` of its predecessor (none for the first event).
pub fn link(key: &ChainKey, previous: Option<&str>, content: &str) -> String {
    let mut mac = key.mac();
    let mut field = |bytes: &[u8]| {
        mac.update(&(bytes.len() as u64).to_be_bytes());
        mac.update(bytes);
    };
    field(LINK);
    field(previous.unwrap_or_default().as_bytes());
    field(content.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// The digests of an event written after `previous`: its content digest and chain digest.
pub fn digests(key: &ChainKey, previous: Option<&str>, event: &ChainedEvent) -> (String, String) {
    let content = event.content_digest(key);
    let chain = link(key, previous, &content);
    (content, chain)
}

/// The keyed digest of a snapshot: the aggregate, the sequence it was taken at, its state
/// version and the exact state text. A snapshot is a cache the aggregate is loaded from, so
/// one changed behind the service's back must not load.
pub fn snapshot_digest(
    key: &ChainKey,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: u64,
    state_version: &str,
    state: &str,
) -> String {
    let mut mac = key.mac();
    let mut field = |bytes: &[u8]| {
        mac.update(&(bytes.len() as u64).to_be_bytes());
        mac.update(bytes);
    };
    field(SNAPSHOT);
    field(aggregate_type.as_bytes());
    field(aggregate_id.as_bytes());
    field(&sequence.to_be_bytes());
    field(state_version.as_bytes());
    field(state.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// One stored event with its digests, as [`CHAINED_COLUMNS`] select it.
#[derive(Debug, Clone)]
struct StoredLink {
    event: ChainedEvent,
    content_digest: Option<String>,
    chain_digest: Option<String>,
    key_id: Option<String>,
}

fn stored_link(row: &sqlx::postgres::PgRow) -> sqlx::Result<StoredLink> {
    let sequence: i64 = row.try_get("sequence")?;
    Ok(StoredLink {
        event: ChainedEvent {
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: u64::try_from(sequence).unwrap_or_default(),
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
        },
        content_digest: row.try_get("content_digest")?,
        chain_digest: row.try_get("chain_digest")?,
        key_id: row.try_get("chain_key_id")?,
    })
}

/// The columns [`stored_link`] reads, the JSON columns as the exact stored text.
const CHAINED_COLUMNS: &str = "aggregate_type, aggregate_id, sequence, event_type, \
    event_version, payload::text AS payload, metadata::text AS metadata, content_digest, \
    chain_digest, chain_key_id";

/// The chain digest of the event before `sequence` of one aggregate, read within the
/// caller's transaction; `None` when `sequence` is the first (or, should the predecessor have
/// no digest, which [`verify`] reports).
pub async fn previous_digest(
    connection: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: u64,
) -> sqlx::Result<Option<String>> {
    if sequence <= 1 {
        return Ok(None);
    }
    let previous = i64::try_from(sequence - 1).unwrap_or(i64::MAX);
    let stored: Option<Option<String>> = sqlx::query_scalar(
        "SELECT chain_digest FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(previous)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(stored.flatten())
}

/// Chains, once, the events stored before the chain existed: every instance calls it before
/// it serves, the first one does the work under a lock, and a marker row makes it never run
/// again. Only once: afterwards an event without digests can only have been written behind
/// the service's back, and chaining it would hide exactly that. Returns how many events it
/// chained.
pub async fn chain_events_from_before_the_chain(
    pool: &PgPool,
    key: &ChainKey,
) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('twofold event chain'))")
        .execute(&mut *tx)
        .await?;
    let done: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM event_chain_started)")
        .fetch_one(&mut *tx)
        .await?;
    if done {
        return Ok(0);
    }
    let rows = sqlx::query(&format!(
        "SELECT {CHAINED_COLUMNS} FROM events WHERE chain_digest IS NULL \
         ORDER BY aggregate_type, aggregate_id, sequence FOR UPDATE"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let mut previous: Option<(String, String)> = None;
    for row in &rows {
        let stored = stored_link(row)?;
        let after = previous
            .as_ref()
            .filter(|(aggregate_id, _)| *aggregate_id == stored.event.aggregate_id)
            .map(|(_, digest)| digest.as_str());
        let (content, chain) = digests(key, after, &stored.event);
        sqlx::query(
            "UPDATE events SET content_digest = $4, chain_digest = $5, chain_key_id = $6 \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
        )
        .bind(&stored.event.aggregate_type)
        .bind(&stored.event.aggregate_id)
        .bind(i64::try_from(stored.event.sequence).unwrap_or(i64::MAX))
        .bind(&content)
        .bind(&chain)
        .bind(key.id())
        .execute(&mut *tx)
        .await?;
        previous = Some((stored.event.aggregate_id.clone(), chain));
    }
    sqlx::query("INSERT INTO event_chain_started (events_chained) VALUES ($1)")
        .bind(i64::try_from(rows.len()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows.len() as u64)
}

/// Computes the digests of every event of one aggregate again, from its first, within the
/// caller's transaction: for a one-time rewrite of stored rows by the service itself (sealing
/// the personal data of events from before per-user keys). Returns how many it chained.
pub async fn rechain(
    connection: &mut PgConnection,
    key: &ChainKey,
    aggregate_type: &str,
    aggregate_id: &str,
) -> sqlx::Result<u64> {
    let rows = sqlx::query(&format!(
        "SELECT {CHAINED_COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
         ORDER BY sequence FOR UPDATE"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_all(&mut *connection)
    .await?;
    let mut previous: Option<String> = None;
    for row in &rows {
        let stored = stored_link(row)?;
        let (content, chain) = digests(key, previous.as_deref(), &stored.event);
        sqlx::query(
            "UPDATE events SET content_digest = $4, chain_digest = $5, chain_key_id = $6 \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(i64::try_from(stored.event.sequence).unwrap_or(i64::MAX))
        .bind(&content)
        .bind(&chain)
        .bind(key.id())
        .execute(&mut *connection)
        .await?;
        previous = Some(chain);
    }
    Ok(rows.len() as u64)
}

/// What is wrong with one event of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Tampering {
    /// Its content is not what was written at this sequence: it was edited, or inserted.
    Edited,
    /// Its stored digests changed (the content itself is intact).
    DigestEdited,
    /// The sequence holds no event, though later ones exist: it was deleted.
    Deleted,
    /// It is intact, but it was written at another sequence: it was moved here.
    Reordered {
        /// The sequence it was written at.
        written_at: u64,
    },
    /// It has no digest.
    Unchained,
    /// It was chained with a key that is not configured, so it cannot be checked.
    UnknownKey {
        /// The key id stored beside the digest.
        key_id: String,
    },
    /// The user has fewer events than a saved head recorded: the newest were removed.
    Truncated {
        /// The last sequence the head recorded.
        head_sequence: u64,
    },
    /// The event at the head's last sequence is not the one the head recorded.
    HeadMismatch,
}

/// One finding of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The user (aggregate id).
    pub aggregate_id: String,
    /// The sequence at which it was found.
    pub sequence: u64,
    /// What is wrong.
    pub problem: Tampering,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    /// Events checked.
    pub events: u64,
    /// Users (aggregates) checked.
    pub users: u64,
    /// Every problem, by user and sequence.
    pub findings: Vec<Finding>,
    /// The head of the log as it is now.
    pub head: Head,
    /// How long it took.
    pub elapsed: Duration,
}

/// Each user's last sequence and chain digest: saved outside the database, it shows later
/// whether the newest events of any user were removed or rewritten.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Per aggregate id: the last sequence and its chain digest.
    pub users: BTreeMap<String, (u64, String)>,
}

/// Walks every chain of the `events` table with `keys` (the current chain key first) and
/// reports each event that was edited, deleted, inserted or reordered, by user and sequence;
/// with `saved_head`, also each user whose newest events were removed or rewritten since it
/// was taken.
pub async fn verify(
    pool: &PgPool,
    keys: &[ChainKey],
    saved_head: Option<&Head>,
) -> sqlx::Result<Verification> {
    let started = Instant::now();
    let mut verification = Verification::default();
    let query = format!(
        "SELECT {CHAINED_COLUMNS} FROM events ORDER BY aggregate_type, aggregate_id, sequence"
    );
    let mut rows = sqlx::query(&query).fetch(pool);
    let mut chain: Vec<StoredLink> = Vec::new();
    while let Some(row) = rows.try_next().await? {
        let link = stored_link(&row)?;
        if chain
            .first()
            .is_some_and(|first| first.event.aggregate_id != link.event.aggregate_id)
        {
            check_chain(&chain, keys, saved_head, &mut verification);
            chain.clear();
        }
        chain.push(link);
    }
    if !chain.is_empty() {
        check_chain(&chain, keys, saved_head, &mut verification);
    }
    if let Some(saved) = saved_head {
        // Users the saved head knows and the log no longer has lost every event.
        for (aggregate_id, (sequence, _)) in &saved.users {
            if !verification.head.users.contains_key(aggregate_id) {
                verification.findings.push(Finding {
                    aggregate_id: aggregate_id.clone(),
                    sequence: *sequence,
                    problem: Tampering::Truncated {
                        head_sequence: *sequence,
                    },
                });
            }
        }
    }
    verification.elapsed = started.elapsed();
    Ok(verification)
}

/// Checks one user's chain, in stored sequence order.
fn check_chain(
    chain: &[StoredLink],
    keys: &[ChainKey],
    saved_head: Option<&Head>,
    verification: &mut Verification,
) {
    let Some(first) = chain.first() else {
        return;
    };
    let aggregate_id = first.event.aggregate_id.clone();
    verification.users += 1;
    verification.events += chain.len() as u64;
    let key_of = |link: &StoredLink| {
        link.key_id
            .as_deref()
            .and_then(|id| keys.iter().find(|key| key.id() == id))
    };
    let mut found: Vec<(u64, Tampering)> = Vec::new();
    // Content first: each event's own digest, at its sequence or, if moved, at another.
    let sequences: Vec<u64> = chain.iter().map(|link| link.event.sequence).collect();
    let mut intact = vec![false; chain.len()];
    for (index, link) in chain.iter().enumerate() {
        let sequence = link.event.sequence;
        let (Some(content), Some(_)) = (&link.content_digest, &link.chain_digest) else {
            found.push((sequence, Tampering::Unchained));
            continue;
        };
        let Some(key) = key_of(link) else {
            let key_id = link.key_id.clone().unwrap_or_default();
            found.push((sequence, Tampering::UnknownKey { key_id }));
            continue;
        };
        if link.event.content_digest(key) == *content {
            intact[index] = true;
            continue;
        }
        let written_at = sequences.iter().copied().find(|&other| {
            other != sequence
                && ChainedEvent {
                    sequence: other,
                    ..link.event.clone()
                }
                .content_digest(key)
                    == *content
        });
        found.push((
            sequence,
            match written_at {
                Some(written_at) => Tampering::Reordered { written_at },
                None => Tampering::Edited,
            },
        ));
    }
    // Then the links: a gap is a deletion; a broken link next to a finding is its echo; a
    // broken link between intact events means the digests themselves were edited.
    let mut expected = 1;
    for (index, stored) in chain.iter().enumerate() {
        let sequence = stored.event.sequence;
        let gap = sequence > expected;
        while expected < sequence {
            found.push((expected, Tampering::Deleted));
            expected += 1;
        }
        expected = sequence + 1;
        let Some(key) = key_of(stored) else { continue };
        let (Some(content), Some(chain_digest)) = (&stored.content_digest, &stored.chain_digest)
        else {
            continue;
        };
        let previous = index
            .checked_sub(1)
            .and_then(|before| chain[before].chain_digest.as_deref());
        let previous_intact = index == 0 || intact[index - 1];
        if intact[index] && !gap && previous_intact && link(key, previous, content) != *chain_digest
        {
            found.push((sequence, Tampering::DigestEdited));
        }
    }
    if let Some((sequence, digest)) = saved_head.and_then(|head| head.users.get(&aggregate_id)) {
        match chain.iter().find(|link| link.event.sequence == *sequence) {
            Some(link) if link.chain_digest.as_ref() != Some(digest) => {
                found.push((*sequence, Tampering::HeadMismatch));
            }
            Some(_) => {}
            None if chain
                .last()
                .is_some_and(|last| last.event.sequence < *sequence) =>
            {
                found.push((
                    *sequence,
                    Tampering::Truncated {
                        head_sequence: *sequence,
                    },
                ));
            }
            None => found.push((*sequence, Tampering::HeadMismatch)),
        }
    }
    found.sort_by_key(|(sequence, _)| *sequence);
    verification
        .findings
        .extend(found.into_iter().map(|(sequence, problem)| Finding {
            aggregate_id: aggregate_id.clone(),
            sequence,
            problem,
        }));
    if let Some(last) = chain.last() {
        if let Some(digest) = &last.chain_digest {
            verification
                .head
                .users
                .insert(aggregate_id, (last.event.sequence, digest.clone()));
        }
    }
}
