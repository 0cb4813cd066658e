//! An in-memory view repository for the embedded mode: same contract as the Postgres one,
//! including the optimistic version check.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::RwLock;

use cqrs_es::persist::{PersistenceError, ViewContext, ViewRepository};
use cqrs_es::{Aggregate, View};

/// Views held in a map, each with its version.
pub struct MemViewRepository<V, A> {
    views: RwLock<HashMap<String, (V, i64)>>,
    _aggregate: PhantomData<A>,
}

impl<V, A> Default for MemViewRepository<V, A> {
    fn default() -> Self {
        Self {
            views: RwLock::new(HashMap::new()),
            _aggregate: PhantomData,
        }
    }
}

impl<V: Clone, A> MemViewRepository<V, A> {
    /// Every view, in no particular order.
    pub fn all(&self) -> Result<Vec<V>, PersistenceError> {
        let views = self.views.read().map_err(|_| poisoned())?;
        Ok(views.values().map(|(view, _)| view.clone()).collect())
    }

    /// Drops every view (before a rebuild).
    pub fn clear(&self) -> Result<(), PersistenceError> {
        self.views.write().map_err(|_| poisoned())?.clear();
        Ok(())
    }
}

fn poisoned() -> PersistenceError {
    PersistenceError::UnknownError("in-memory view lock poisoned".into())
}

impl<V, A> ViewRepository<V, A> for MemViewRepository<V, A>
where
    V: View<A> + Clone,
    A: Aggregate,
{
    async fn load(&self, view_id: &str) -> Result<Option<V>, PersistenceError> {
        let views = self.views.read().map_err(|_| poisoned())?;
        Ok(views.get(view_id).map(|(view, _)| view.clone()))
    }

    async fn load_with_context(
        &self,
        view_id: &str,
    ) -> Result<Option<(V, ViewContext)>, PersistenceError> {
        let views = self.views.read().map_err(|_| poisoned())?;
        Ok(views
            .get(view_id)
            .map(|(view, version)| (view.clone(), ViewContext::new(view_id.to_owned(), *version))))
    }

    async fn update_view(&self, view: V, context: ViewContext) -> Result<(), PersistenceError> {
        let mut views = self.views.write().map_err(|_| poisoned())?;
        let current = views.get(&context.view_instance_id).map_or(0, |(_, v)| *v);
        if current != context.version {
            return Err(PersistenceError::OptimisticLockError);
        }
        views.insert(context.view_instance_id, (view, context.version + 1));
        Ok(())
    }
}
