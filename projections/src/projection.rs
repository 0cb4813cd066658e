//! Keeps the views current as commands commit.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::persist::{PersistenceError, ViewContext, ViewRepository};
use cqrs_es::{EventEnvelope, Query, View};
use twofold_domain::{User, UserEvent};

/// Attempts at a view write that loses a race with another write of the same view.
const VIEW_WRITE_ATTEMPTS: usize = 5;

/// A view kept current by a [`Projection`].
pub trait ProjectedView: View<User> {
    /// The view's name, for logs.
    const NAME: &'static str;
    /// Whether `event` changes this view. Events that do not (most of a user's history, for
    /// the user view) never cost a view write.
    fn is_changed_by(event: &UserEvent) -> bool;
}

/// Projects `User` events into views of type `V`. Unlike cqrs-es's `GenericQuery` it skips
/// events that do not change the view and retries a write that lost an optimistic-lock race,
/// so concurrent commands on one user cannot leave the view behind.
pub struct Projection<V, R> {
    views: Arc<R>,
    _view: PhantomData<V>,
}

impl<V, R> Projection<V, R> {
    /// A projection writing to `views`.
    pub fn new(views: Arc<R>) -> Self {
        Self {
            views,
            _view: PhantomData,
        }
    }
}

impl<V: ProjectedView, R: ViewRepository<V, User>> Projection<V, R> {
    async fn apply(
        &self,
        view_id: &str,
        events: &[&EventEnvelope<User>],
    ) -> Result<(), PersistenceError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut view, context) = match self.views.load_with_context(view_id).await? {
                Some(loaded) => loaded,
                None => (V::default(), ViewContext::new(view_id.to_owned(), 0)),
            };
            for event in events {
                view.update(event);
            }
            match self.views.update_view(view, context).await {
                Err(PersistenceError::OptimisticLockError) if attempt < VIEW_WRITE_ATTEMPTS => {}
                result => return result,
            }
        }
    }
}

#[async_trait]
impl<V: ProjectedView, R: ViewRepository<V, User>> Query<User> for Projection<V, R> {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<User>]) {
        let relevant: Vec<&EventEnvelope<User>> = events
            .iter()
            .filter(|envelope| V::is_changed_by(&envelope.payload))
            .collect();
        if relevant.is_empty() {
            return;
        }
        if let Err(error) = self.apply(aggregate_id, &relevant).await {
            tracing::error!(
                user_id = aggregate_id,
                view = V::NAME,
                error = %error,
                "a view could not be updated; rebuild the views to repair it"
            );
        }
    }
}
