//! Folding the log's events into views, user by user, in memory.

use std::collections::HashMap;
use std::sync::Arc;

use cqrs_es::persist::SerializedEvent;
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

    /// Takes in one stored event. The payload and metadata come as JSON text: events no view
    /// reacts to never have their metadata parsed, and events no upcaster touches are parsed
    /// once, straight into the domain type.
    ///
    /// Of the metadata, only the client's address and user agent are read: they are all the
    /// views read of it ([`EventMetadata::client_of`]).
    ///
    /// Only a sealed payload is opened here. Sealed metadata (the client's address and user
    /// agent) is folded as it is stored: the sessions view copies both without reading
    /// them, and a session's are replaced at its next refresh, so only those the final views
    /// hold are opened, once each, by [`Folder::session_views`]. A view that came to read
    /// them would need them opened here.
    pub(super) fn take(
        &mut self,
        aggregate_id: &str,
        sequence: usize,
        event_type: &str,
        event_version: &str,
        payload: &str,
        metadata: &str,
    ) -> Result<(), RebuildError> {
        self.events += 1;
        // Looked up before it is inserted: most events are of a user already met, and their
        // id need not be copied.
        let folded = match self.users.get_mut(aggregate_id) {
            Some(folded) => folded,
            None => self.users.entry(aggregate_id.to_owned()).or_default(),
        };
        if sequence != folded.last_sequence + 1 {
            return Err(RebuildError::Gap {
                user: aggregate_id.to_owned(),
                after: folded.last_sequence,
                found: sequence,
            });
        }
        folded.last_sequence = sequence;
        if holds_sealed(payload) {
            let sealed = SerializedEvent {
                aggregate_id: aggregate_id.to_owned(),
                sequence,
                aggregate_type: User::TYPE.to_owned(),
                event_type: event_type.to_owned(),
                event_version: event_version.to_owned(),
                payload: serde_json::from_str(payload)?,
                metadata: serde_json::from_str(metadata)?,
            };
            let opened = envelope(self.keys.open(sealed), &self.upcasters)?;
            if UserView::is_changed_by(opened.payload.kind())
                || SessionsView::is_changed_by(opened.payload.kind())
            {
                folded.apply(&opened);
            }
            return Ok(());
        }
        let needs_upcast = self
            .upcasters
            .iter()
            .any(|upcaster| upcaster.can_upcast(event_type, event_version));
        let event: UserEvent = if needs_upcast {
            let serialized = SerializedEvent {
                aggregate_id: String::new(),
                sequence,
                aggregate_type: User::TYPE.to_owned(),
                event_type: event_type.to_owned(),
                event_version: event_version.to_owned(),
                payload: serde_json::from_str(payload)?,
                metadata: Value::Object(serde_json::Map::new()),
            };
            envelope(serialized, &self.upcasters)?.payload
        } else {
            serde_json::from_str(payload)?
        };
        if !UserView::is_changed_by(event.kind()) && !SessionsView::is_changed_by(event.kind()) {
            return Ok(());
        }
        let envelope = EventEnvelope {
            aggregate_id: String::new(),
            sequence,
            payload: event,
            metadata: EventMetadata::client_map_of_json(metadata)?,
        };
        folded.apply(&envelope);
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
