//! Event repositories: Postgres (through postgres-es) and in memory. Both write a user's address
//! reservation (a keyed digest, never the address) in the same atomic step as the `SignedUp`
//! event that claims it, so uniqueness holds under concurrency and the address -> user lookup is
//! never behind. Both keep the users' data keys (sealed under the sealing key) outside the log,
//! open the personal data of the events they read with them, and destroy a user's key when the
//! user is erased (see `twofold_projections::personal`).

pub mod ceremonies;
mod memory;
mod postgres;

use async_trait::async_trait;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use twofold_domain::services::SecretSealer;
use twofold_domain::values::{Email, KeyedDigest, SealedSecret, UserId};
use twofold_nats::MailJob;
use twofold_projections::personal::{DataKey, KeyRing, PersonalData};
use twofold_projections::PlannedChange;
use zeroize::Zeroizing;

pub use ceremonies::{
    Ceremony, CeremonyKind, CeremonyStore, MemCeremonyStore, PgCeremonyStore, CEREMONY_TTL,
};
pub use memory::MemEventRepository;
pub use postgres::PgEventRepository;

/// Raised (boxed in `PersistenceError::UnknownError`) when a sign-up claims a taken email.
#[derive(Debug, thiserror::Error)]
#[error("the email address is already registered")]
pub struct EmailTaken;

/// Finds the user an email address belongs to, case-insensitively.
#[async_trait]
pub trait EmailIndex: Send + Sync {
    /// The owner of `email`, if any.
    async fn find_user(&self, email: &Email) -> Result<Option<UserId>, PersistenceError>;
}

/// What the address index is keyed by: a keyed digest of the lower-cased address, so the
/// index never holds an address in clear.
pub fn email_index_input(email: &Email) -> Vec<u8> {
    format!("email:{}", email.key()).into_bytes()
}

/// A sign-up's claim on an address: its keyed digests under every configured sealing key
/// (the current one first, which is the one stored). An address indexed under a key retired
/// since is still taken.
#[derive(Debug, Clone)]
pub struct EmailClaim {
    /// The user claiming it.
    pub user_id: UserId,
    /// The digests, current key first.
    pub digests: Vec<KeyedDigest>,
}

/// One command's commit: its events, and what must be stored with them or not at all.
#[derive(Debug, Default)]
pub struct Commit<'a> {
    /// The events, one aggregate's, numbered after its last stored one, personal data sealed.
    pub events: &'a [SerializedEvent],
    /// The mail jobs they cause.
    pub jobs: &'a [MailJob],
    /// A new snapshot of the user after them.
    pub snapshot: Option<Snapshot>,
    /// The address a sign-up claims.
    pub email_claim: Option<EmailClaim>,
    /// A data key created for the user (sealed under the sealing key), which sealed the
    /// events' personal data.
    pub new_key: Option<SealedSecret>,
    /// The user is erased: their data key, address, snapshot and waiting mail are deleted
    /// with the events, so that nothing of them can be read from then on.
    pub forget: bool,
    /// The chain digest of the event before the first of `events`, as the load read it
    /// ([`UserEvents::chain_head`]); read again in the commit when unknown. A stale one cannot be
    /// stored: the stream has moved on, so the first event's sequence is taken.
    pub previous_chain_digest: Option<String>,
    /// Changes of views the events make, for a store that keeps views beside its events to
    /// make in the statement that writes them. A change whose view does not stand where its
    /// event follows is not made, and the commit goes on without it.
    pub view_changes: &'a [PlannedChange],
}

/// What a commit stored besides its events.
#[derive(Debug, Default)]
pub struct StoredCommit {
    /// Which of the commit's view changes it made, one flag each, in their order.
    pub views_changed: Vec<bool>,
    /// The chain digest of the commit's last event, where the store chains its events.
    pub chain_head: Option<String>,
}

/// One user's events after a sequence, as a command loads them, with what its commit needs:
/// the user's data key (which opened them, and seals what the command adds) and where the
/// event chain stands, read together.
#[derive(Default)]
pub struct UserEvents {
    /// The events, in sequence order, the personal data of their payloads opened. Their
    /// metadata is left out (an empty object): a command folds payloads alone, and reading
    /// it would cost a parse and the opening of its sealed fields for each event.
    pub events: Vec<SerializedEvent>,
    /// The user's data key, if they have one.
    pub keys: KeyRing,
    /// The chain digest of the user's last event (the last of `events`, or the one at the
    /// sequence they follow), where the store chains its events and the read saw it.
    pub chain_head: Option<String>,
}

/// Opens sealed data keys with `sealer`; a key that does not open is left out (its user's data
/// reads as erased) and logged.
fn key_ring(
    sealer: &dyn SecretSealer,
    sealed: impl IntoIterator<Item = (String, SealedSecret)>,
) -> KeyRing {
    let mut ring = KeyRing::default();
    for (user, sealed) in sealed {
        match sealer.open(&sealed) {
            Ok(bytes) => {
                use secrecy::ExposeSecret;
                let Ok(key) = <[u8; 32]>::try_from(bytes.expose_secret()) else {
                    tracing::error!(user_id = user, "a data key is not 32 bytes");
                    continue;
                };
                ring.insert(user, DataKey::new(Zeroizing::new(key)));
            }
            Err(error) => {
                tracing::error!(user_id = user, error = %error, "a data key does not open");
            }
        }
    }
    ring
}

/// `sealed` (a data key) sealed again under `sealer`'s current key, if it is under another.
fn reseal_key(
    sealer: &dyn SecretSealer,
    sealed: &SealedSecret,
) -> Result<Option<SealedSecret>, PersistenceError> {
    if sealed.key_id == sealer.current_key_id() {
        return Ok(None);
    }
    let key = sealer
        .open(sealed)
        .map_err(|error| PersistenceError::UnknownError(Box::new(error)))?;
    use secrecy::ExposeSecret;
    Ok(Some(sealer.seal(key.expose_secret())))
}

/// A user as stored: the newest trusted snapshot and the events after it.
#[derive(Default)]
pub struct StoredUser {
    /// The newest snapshot that can be trusted, if any.
    pub snapshot: Option<Snapshot>,
    /// The events after the snapshot's sequence (every event without one).
    pub tail: UserEvents,
}

/// A user's folded state after one of their events, taken so that loading them does not
/// fold every event again. A cache of the events, never the truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The sequence of the last event folded into it.
    pub sequence: usize,
    /// The state's shape when it was taken (`twofold_domain::user::SNAPSHOT_VERSION`).
    pub state_version: String,
    /// The folded state, as JSON text: stored, digested and parsed into the user as it is,
    /// never through a `serde_json::Value` (whose tree costs as much again to build as the
    /// user, and which a snapshot of a user with a hundred sessions makes large).
    pub state: String,
}

/// The write side of an event store: a command's events and what goes with them, committed
/// in one atomic step or not at all; the snapshots it keeps; and the users' data keys.
pub trait EventRepository:
    PersistedEventRepository + EmailIndex + PersonalData + Clone + 'static
{
    /// Stores `commit`, and says which of its view changes it made and where the event chain
    /// stands after it. A sequence already taken, or a data key created meanwhile by another
    /// command, is `OptimisticLockError`; a taken address, [`EmailTaken`].
    fn commit(
        &self,
        commit: Commit<'_>,
    ) -> impl std::future::Future<Output = Result<StoredCommit, PersistenceError>> + Send;

    /// User `aggregate_id`'s events after sequence `after`, with their data key and chain head.
    fn user_events_after(
        &self,
        aggregate_id: &str,
        after: usize,
    ) -> impl std::future::Future<Output = Result<UserEvents, PersistenceError>> + Send;

    /// User `aggregate_id` as a command loads them: the newest snapshot that can be trusted,
    /// if any, and the events after it (after none without one), with their data key and
    /// chain head.
    fn load(
        &self,
        aggregate_id: &str,
    ) -> impl std::future::Future<Output = Result<StoredUser, PersistenceError>> + Send;

    /// The owner of `email` as [`Self::load`] loads them, with their id; `None` when no
    /// account has the address. A store that can does both in one read (a login's).
    fn load_by_email(
        &self,
        email: &Email,
    ) -> impl std::future::Future<Output = Result<Option<(UserId, StoredUser)>, PersistenceError>> + Send
    {
        async move {
            let Some(id) = self.find_user(email).await? else {
                return Ok(None);
            };
            Ok(Some((id, self.load(&id.to_string()).await?)))
        }
    }

    /// After a sealing-key rotation: seals user `aggregate_id`'s data key again under the
    /// current sealing key, and moves their address reservation to `address`'s first digest
    /// (the current key's) from any other of them.
    fn reseal_personal_data(
        &self,
        aggregate_id: &str,
        address: Option<&[KeyedDigest]>,
    ) -> impl std::future::Future<Output = Result<PersonalResealed, PersistenceError>> + Send;
}

/// What [`EventRepository::reseal_personal_data`] moved to the current sealing key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PersonalResealed {
    /// The data key.
    pub key: bool,
    /// The address reservation.
    pub address: bool,
}
