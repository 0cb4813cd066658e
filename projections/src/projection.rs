//! Keeps the user view current as commands commit.

use async_trait::async_trait;
use cqrs_es::persist::{PersistenceError, ViewRepository};
use cqrs_es::{EventEnvelope, Query, View};
use twofold_domain::User;

use crate::UserView;

/// Attempts at a view write that loses a race with another write of the same view.
const VIEW_WRITE_ATTEMPTS: usize = 5;

/// Projects `User` events into [`UserView`]s. Unlike cqrs-es's `GenericQuery` it skips events
/// that do not change the view and retries a write that lost an optimistic-lock race, so
/// concurrent commands on one user cannot leave the view behind.
pub struct UserProjection<R> {
    views: std::sync::Arc<R>,
}

impl<R> UserProjection<R> {
    /// A projection writing to `views`.
    pub fn new(views: std::sync::Arc<R>) -> Self {
        Self { views }
    }
}

impl<R: ViewRepository<UserView, User>> UserProjection<R> {
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
                None => (
                    UserView::default(),
                    cqrs_es::persist::ViewContext::new(view_id.to_owned(), 0),
                ),
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
impl<R: ViewRepository<UserView, User>> Query<User> for UserProjection<R> {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<User>]) {
        let relevant: Vec<&EventEnvelope<User>> = events
            .iter()
            .filter(|envelope| UserView::is_changed_by(&envelope.payload))
            .collect();
        if relevant.is_empty() {
            return;
        }
        if let Err(error) = self.apply(aggregate_id, &relevant).await {
            tracing::error!(
                user_id = aggregate_id,
                error = %error,
                "the user view could not be updated; rebuild the views to repair it"
            );
        }
    }
}
