//! Keeps a view current: after each commit (the gateway's dispatch, so the caller reads its own
//! writes) and again from the log (the catch-up projector, which repairs a dispatch that failed).
//! Both paths go through [`Projection::apply`], which applies each event of a user exactly once
//! and in sequence order: events the view already took into account are skipped, and events
//! missing before the ones given (an earlier dispatch that failed or is still running) are read
//! from the log first. Where only one of the events changes the view and its store can, the
//! change is made in place, without reading the view ([`crate::ChangedInPlace`]), and where
//! the event store can, by the very statement that commits the events ([`CommitQuery`]).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::persist::{PersistenceError, SerializedEvent};
use cqrs_es::{EventEnvelope, Query, View};
use twofold_domain::{User, UserEvent, UserEventKind};

use crate::in_place::PlannedChange;
use crate::log::{envelope, EventLog, Upcasters};
use crate::store::{Commit, ViewStore};

/// Attempts at a view write that loses a race with another write of the same view.
const VIEW_WRITE_ATTEMPTS: usize = 8;

/// A view kept current by a [`Projection`].
pub trait ProjectedView: View<User> + Clone {
    /// The view's name: its table, and the name in logs and reports.
    const NAME: &'static str;
    /// Whether events of this kind change this view. Events that do not (most of a user's
    /// history, for the user view) never cost a view write. Implementations match every kind
    /// by name, without a wildcard, so a new event cannot be forgotten.
    fn is_changed_by(kind: UserEventKind) -> bool;

    /// Whether a write of this view that takes `event` into account may be committed lazily
    /// ([`Commit::Lazy`]): only if losing it in a database crash, until the catch-up projector
    /// applies it again, could give no access back that `event` took away. None may unless
    /// the view says so.
    fn may_commit_lazily(event: &UserEvent) -> bool {
        let _ = event;
        false
    }
}

/// Applies `event` to `view` if it changes it; says whether it did.
pub(crate) fn fold<V: ProjectedView>(view: &mut V, event: &EventEnvelope<User>) -> bool {
    if V::is_changed_by(event.payload.kind()) {
        view.update(event);
        true
    } else {
        false
    }
}

/// What folding events into a view did: whether it changed, and how its write may commit.
struct Folded {
    changed: bool,
    commit: Commit,
}

impl Folded {
    fn new() -> Self {
        Self {
            changed: false,
            commit: Commit::Lazy,
        }
    }

    /// Folds `event` into `view`.
    fn take<V: ProjectedView>(&mut self, view: &mut V, event: &EventEnvelope<User>) {
        if fold(view, event) {
            self.changed = true;
            if !V::may_commit_lazily(&event.payload) {
                self.commit = Commit::Durable;
            }
        }
    }
}

/// A query the command gateway keeps current with each commit: it is dispatched the committed
/// events, unless the commit itself made its change ([`Self::plan_in_commit`]).
pub trait CommitQuery: Query<User> {
    /// The change `events` (one commit's, of user `aggregate_id`) make, planned for the
    /// statement that commits them, when the query's store can take it there. `None` (the
    /// default) has the query dispatched the events after the commit.
    fn plan_in_commit(
        &self,
        aggregate_id: &str,
        events: &[EventEnvelope<User>],
    ) -> Option<PlannedChange> {
        let _ = (aggregate_id, events);
        None
    }
}

/// One user's events, in sequence order, as the log or a commit gives them.
pub type UserBatch = (String, Vec<EventEnvelope<User>>);

/// Something that follows the log: the catch-up projector hands it every event after its
/// checkpoint, grouped by user.
#[async_trait]
pub trait Follower: Send + Sync {
    /// The follower's name, for logs.
    fn name(&self) -> &'static str;
    /// Takes these events into account; applying an event it already has is a no-op.
    async fn follow(&self, batch: &[UserBatch]) -> Result<(), PersistenceError>;
}

/// Projects `User` events into views of type `V` kept in a [`ViewStore`].
pub struct Projection<V> {
    views: Arc<dyn ViewStore<V>>,
    log: Arc<dyn EventLog>,
    upcasters: Upcasters,
}

impl<V> Clone for Projection<V> {
    fn clone(&self) -> Self {
        Self {
            views: Arc::clone(&self.views),
            log: Arc::clone(&self.log),
            upcasters: Arc::clone(&self.upcasters),
        }
    }
}

/// The log lacks an event that a later one proves was committed.
#[derive(Debug, thiserror::Error)]
#[error("the log of user {user} has no event {sequence}")]
struct MissingEvent {
    user: String,
    sequence: usize,
}

impl<V: ProjectedView> Projection<V> {
    /// A projection writing to `views`, reading events it lacks from `log` through `upcasters`.
    pub fn new(views: Arc<dyn ViewStore<V>>, log: Arc<dyn EventLog>, upcasters: Upcasters) -> Self {
        Self {
            views,
            log,
            upcasters,
        }
    }

    /// Brings the view of `aggregate_id` up to the last of `events` (that user's, in sequence
    /// order): events at or below the stored view's last sequence are skipped, missing ones
    /// before them are read from the log, and a lost race is retried from a fresh read. When
    /// one event alone changes the view, the store first tries to change it in place.
    pub async fn apply(
        &self,
        aggregate_id: &str,
        events: &[EventEnvelope<User>],
    ) -> Result<(), PersistenceError> {
        let Some(target) = events.last().map(|event| event.sequence) else {
            return Ok(());
        };
        if let Some(change) = only_change::<V>(events) {
            let commit = if V::may_commit_lazily(&change.payload) {
                Commit::Lazy
            } else {
                Commit::Durable
            };
            if self
                .views
                .change_in_place(aggregate_id, change, target, commit)
                .await?
            {
                return Ok(());
            }
        }
        for _ in 0..VIEW_WRITE_ATTEMPTS {
            let stored = self.views.load(aggregate_id).await?;
            let read = stored.as_ref().map(|stored| stored.last_sequence);
            let applied = read.unwrap_or(0);
            if applied >= target {
                return Ok(());
            }
            let mut view = stored.map(|stored| stored.view).unwrap_or_default();
            let mut folded = Folded::new();
            let given = events.iter().filter(|event| event.sequence > applied);
            if consecutive_from(applied + 1, given.clone().map(|event| event.sequence)) {
                for event in given {
                    folded.take(&mut view, event);
                }
            } else {
                let missing = self.log.user_events(aggregate_id, applied).await?;
                for event in self.missing_from_log(aggregate_id, applied, target, missing)? {
                    folded.take(&mut view, &event);
                }
            }
            if !folded.changed {
                // Nothing the view shows changed; its row stays as it is.
                return Ok(());
            }
            if self
                .views
                .save(aggregate_id, &view, read, target, folded.commit)
                .await?
            {
                return Ok(());
            }
            tracing::debug!(
                user_id = aggregate_id,
                view = V::NAME,
                "view write lost a race"
            );
        }
        Err(PersistenceError::OptimisticLockError)
    }

    /// The events `applied + 1 ..= target` of a user, from what the log returned.
    fn missing_from_log(
        &self,
        aggregate_id: &str,
        applied: usize,
        target: usize,
        events: Vec<SerializedEvent>,
    ) -> Result<Vec<EventEnvelope<User>>, PersistenceError> {
        let mut expected = applied + 1;
        let mut envelopes = Vec::new();
        for event in events
            .into_iter()
            .take_while(|event| event.sequence <= target)
        {
            if event.sequence != expected {
                break;
            }
            envelopes.push(envelope(event, &self.upcasters)?);
            expected += 1;
        }
        if expected <= target {
            return Err(PersistenceError::UnknownError(Box::new(MissingEvent {
                user: aggregate_id.to_owned(),
                sequence: expected,
            })));
        }
        Ok(envelopes)
    }
}

/// The one event of `events` that changes views of type `V`, if only one does and the events
/// from it to the last are consecutive: a view that stands before it can take the change in
/// place and be taken to the last event, since those after it change nothing.
fn only_change<V: ProjectedView>(events: &[EventEnvelope<User>]) -> Option<&EventEnvelope<User>> {
    let mut changing = events
        .iter()
        .enumerate()
        .filter(|(_, event)| V::is_changed_by(event.payload.kind()));
    let (at, change) = changing.next()?;
    if changing.next().is_some() {
        return None;
    }
    consecutive_from(
        change.sequence,
        events[at..].iter().map(|event| event.sequence),
    )
    .then_some(change)
}

/// Whether `sequences` are `first, first + 1, …` (and not empty).
fn consecutive_from(first: usize, sequences: impl Iterator<Item = usize>) -> bool {
    let mut expected = first;
    for sequence in sequences {
        if sequence != expected {
            return false;
        }
        expected += 1;
    }
    expected > first
}

#[async_trait]
impl<V: ProjectedView> Query<User> for Projection<V> {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<User>]) {
        if !events
            .iter()
            .any(|event| V::is_changed_by(event.payload.kind()))
        {
            return;
        }
        if let Err(error) = self.apply(aggregate_id, events).await {
            tracing::error!(
                user_id = aggregate_id,
                view = V::NAME,
                error = %error,
                "a view could not be updated after a commit; the catch-up projector will repair it"
            );
        }
    }
}

impl<V: ProjectedView> CommitQuery for Projection<V> {
    /// The one change of `events` to the view, when one event alone changes it (as
    /// [`Projection::apply`] makes in place). The statement makes it only if the view stands
    /// where the event follows; when it does not, the gateway dispatches the events, and
    /// [`Projection::apply`] brings the view up from the log.
    fn plan_in_commit(
        &self,
        aggregate_id: &str,
        events: &[EventEnvelope<User>],
    ) -> Option<PlannedChange> {
        let change = only_change::<V>(events)?;
        let target = events.last()?.sequence;
        match self.views.plan_in_place(aggregate_id, change, target) {
            Ok(planned) => planned,
            Err(error) => {
                tracing::warn!(user_id = aggregate_id, view = V::NAME, error = %error,
                    "a view change could not be planned for its commit; it is dispatched after");
                None
            }
        }
    }
}

#[async_trait]
impl<V: ProjectedView> Follower for Projection<V> {
    fn name(&self) -> &'static str {
        V::NAME
    }

    async fn follow(&self, batch: &[UserBatch]) -> Result<(), PersistenceError> {
        // Only users with an event this view reacts to, and only those whose view is behind
        // it: one read for the whole batch tells which.
        let relevant: Vec<&UserBatch> = batch
            .iter()
            .filter(|(_, events)| {
                events
                    .iter()
                    .any(|event| V::is_changed_by(event.payload.kind()))
            })
            .collect();
        if relevant.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = relevant.iter().map(|(id, _)| id.clone()).collect();
        let stored: HashMap<String, usize> = self.views.last_sequences(&ids).await?;
        for (id, events) in relevant {
            let last_relevant = events
                .iter()
                .filter(|event| V::is_changed_by(event.payload.kind()))
                .map(|event| event.sequence)
                .max()
                .unwrap_or(0);
            if stored
                .get(id)
                .is_some_and(|applied| *applied >= last_relevant)
            {
                continue;
            }
            self.apply(id, events).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::consecutive_from;

    #[test]
    fn only_an_unbroken_run_from_the_first_sequence_is_consecutive() {
        assert!(consecutive_from(3, [3, 4, 5].into_iter()));
        assert!(!consecutive_from(3, [4, 5].into_iter()));
        assert!(!consecutive_from(3, [3, 5].into_iter()));
        assert!(!consecutive_from(3, std::iter::empty()));
    }
}
