//! Folding the log's events into views, user by user, in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use cqrs_es::{Aggregate, EventEnvelope};
use serde_json::Value;
use twofold_domain::{EventMetadata, User, UserEvent};

use super::RebuildError;
use crate::log::{envelope, Upcasters};
use crate::personal::{holds_sealed, KeyRing};
use crate::projection::fold;
use crate::{ProjectedView, SessionsView, UserView};

/// One user's views as folded from the log; `None` until an event changes the view, as the
/// projection writes no row before then.
#[derive(Default)]
pub(super) struct Folded {
    user: Option<UserView>,
    sessions: Option<SessionsView>,
    last_sequence: usize,
    /// Events that came before one of their predecessors, by sequence.
    waiting: BTreeMap<usize, StoredEvent>,
}

impl Folded {
    fn apply(&mut self, event: &EventEnvelope<User>) {
        if UserView::is_changed_by(event.payload.kind()) {
            fold(self.user.get_or_insert_with(UserView::default), event);
        }
        if SessionsView::is_changed_by(event.payload.kind()) {
            fold(
                self.sessions.get_or_insert_with(SessionsView::default),
                event,
            );
        }
    }
}

/// A stored event, its payload and metadata as JSON text.
#[derive(Clone, Copy)]
pub(super) struct StoredRow<'a> {
    pub(super) aggregate_id: &'a str,
    pub(super) sequence: usize,
    pub(super) event_type: &'a str,
    pub(super) event_version: &'a str,
    pub(super) payload: &'a str,
    pub(super) metadata: &'a str,
}

/// A stored event kept until its turn.
struct StoredEvent {
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
}

/// Folds the events of the log into views, user by user.
pub(super) struct Folder {
    pub(super) users: HashMap<String, Folded>,
    upcasters: Upcasters,
    /// The data keys that open the personal data of the events it takes.
    keys: Arc<KeyRing>,
    pub(super) events: usize,
}

impl Folder {
    /// A folder whose events are read through `upcasters`, their personal data opened with
    /// `keys` (where a user's key is gone, it reads as erased).
    pub(super) fn new(upcasters: Upcasters, keys: Arc<KeyRing>) -> Self {
        Self {
            users: HashMap::new(),
            upcasters,
            keys,
            events: 0,
        }
    }

    /// Takes in one stored event. Each user's events are folded in the order of their
    /// sequence, whatever the order they come in: one that comes before its predecessor
    /// waits for it. [`Folder::finish`] reports those still waiting.
    pub(super) fn take(&mut self, row: StoredRow<'_>) -> Result<(), RebuildError> {
        self.events += 1;
        // Looked up before it is inserted: most events are of a user already met, and their
        // id need not be copied.
        let folded = match self.users.get_mut(row.aggregate_id) {
            Some(folded) => folded,
            None => self.users.entry(row.aggregate_id.to_owned()).or_default(),
        };
        let next = folded.last_sequence + 1;
        if row.sequence > next {
            let waiting = StoredEvent {
                event_type: row.event_type.to_owned(),
                event_version: row.event_version.to_owned(),
                payload: row.payload.to_owned(),
                metadata: row.metadata.to_owned(),
            };
            if folded.waiting.insert(row.sequence, waiting).is_some() {
                return Err(twice(row.aggregate_id, row.sequence));
            }
            return Ok(());
        }
        if row.sequence < next {
            return Err(twice(row.aggregate_id, row.sequence));
        }
        fold_row(folded, &self.upcasters, &self.keys, row)?;
        while let Some(waiting) = folded.waiting.remove(&(folded.last_sequence + 1)) {
            let row = StoredRow {
                aggregate_id: row.aggregate_id,
                sequence: folded.last_sequence + 1,
                event_type: &waiting.event_type,
                event_version: &waiting.event_version,
                payload: &waiting.payload,
                metadata: &waiting.metadata,
            };
            fold_row(folded, &self.upcasters, &self.keys, row)?;
        }
        Ok(())
    }

    /// Checks that every event taken was folded: a user whose events still wait lacks the
    /// one before them.
    pub(super) fn finish(&self) -> Result<(), RebuildError> {
        for (user, folded) in &self.users {
            if let Some(&found) = folded.waiting.keys().next() {
                return Err(RebuildError::Gap {
                    user: user.clone(),
                    after: folded.last_sequence,
                    found,
                });
            }
        }
        Ok(())
    }

    /// Each user's view, with the sequence of their last event.
    pub(super) fn user_views(&self) -> impl Iterator<Item = (&String, &UserView, usize)> {
        self.users
            .iter()
            .filter_map(|(id, folded)| Some((id, folded.user.as_ref()?, folded.last_sequence)))
    }

    /// Each user's sessions view, its client addresses and user agents opened, with the
    /// sequence of their last event.
    pub(super) fn session_views(&self) -> impl Iterator<Item = (&String, SessionsView, usize)> {
        self.users.iter().filter_map(|(id, folded)| {
            let mut view = folded.sessions.clone()?;
            for session in &mut view.sessions {
                let fields = [
                    ("ip", session.ip_address.as_mut()),
                    ("user_agent", session.user_agent.as_mut()),
                ];
                for (field, value) in fields {
                    if let Some(value) = value {
                        self.keys.open_metadata_value(id, field, value);
                    }
                }
            }
            Some((id, view, folded.last_sequence))
        })
    }
}

/// The error for an event of `user` met twice.
fn twice(user: &str, sequence: usize) -> RebuildError {
    RebuildError::Store(PersistenceError::UnknownError(
        format!("event {sequence} of user {user} read twice").into(),
    ))
}

/// Folds `row`, the next event of the user `folded` holds. Payload and metadata come as
/// JSON text: events no view reacts to never have their metadata parsed, and events no
/// upcaster touches are parsed once, straight into the domain type.
///
/// Of the metadata, only the client's address and user agent are read: they are all the
/// views read of it ([`EventMetadata::client_of`]).
///
/// Only a sealed payload is opened here. Sealed metadata (the client's address and user
/// agent) is folded as it is stored: the sessions view copies both without reading them, and
/// a session's are replaced at its next refresh, so only those the final views hold are
/// opened, once each, by [`Folder::session_views`]. A view that came to read them would need
/// them opened here.
fn fold_row(
    folded: &mut Folded,
    upcasters: &Upcasters,
    keys: &KeyRing,
    row: StoredRow<'_>,
) -> Result<(), RebuildError> {
    folded.last_sequence = row.sequence;
    if holds_sealed(row.payload) {
        let sealed = SerializedEvent {
            aggregate_id: row.aggregate_id.to_owned(),
            sequence: row.sequence,
            aggregate_type: User::TYPE.to_owned(),
            event_type: row.event_type.to_owned(),
            event_version: row.event_version.to_owned(),
            payload: serde_json::from_str(row.payload)?,
            metadata: serde_json::from_str(row.metadata)?,
        };
        let opened = envelope(keys.open(sealed), upcasters)?;
        if UserView::is_changed_by(opened.payload.kind())
            || SessionsView::is_changed_by(opened.payload.kind())
        {
            folded.apply(&opened);
        }
        return Ok(());
    }
    let needs_upcast = upcasters
        .iter()
        .any(|upcaster| upcaster.can_upcast(row.event_type, row.event_version));
    let event: UserEvent = if needs_upcast {
        let serialized = SerializedEvent {
            aggregate_id: String::new(),
            sequence: row.sequence,
            aggregate_type: User::TYPE.to_owned(),
            event_type: row.event_type.to_owned(),
            event_version: row.event_version.to_owned(),
            payload: serde_json::from_str(row.payload)?,
            metadata: Value::Object(serde_json::Map::new()),
        };
        envelope(serialized, upcasters)?.payload
    } else {
        serde_json::from_str(row.payload)?
    };
    if !UserView::is_changed_by(event.kind()) && !SessionsView::is_changed_by(event.kind()) {
        return Ok(());
    }
    let envelope = EventEnvelope {
        aggregate_id: String::new(),
        sequence: row.sequence,
        payload: event,
        metadata: EventMetadata::client_map_of_json(row.metadata)?,
    };
    folded.apply(&envelope);
    Ok(())
}
