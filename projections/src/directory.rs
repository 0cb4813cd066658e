//! Reading user views: one by id, or all of them (admin listing).

use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::persist::PersistenceError;
use sqlx::PgPool;
use twofold_domain::values::UserId;

use crate::log::database;
use crate::{MemViewStore, PgViewStore, SessionsView, UserView, ViewStore};

/// The table the user views live in.
pub const USER_VIEW_TABLE: &str = "user_view";
/// The table the sessions views live in.
pub const SESSION_VIEW_TABLE: &str = "session_view";

/// Whether `view` is of a user who is there: erasing a user blanks their view to the
/// default, which has no id (a view store keeps a row it cannot delete).
fn is_present(view: &UserView) -> bool {
    view.id.is_some()
}

/// Read access to user views.
#[async_trait]
pub trait UserDirectory: Send + Sync {
    /// One user's view; none for an erased user.
    async fn find(&self, id: UserId) -> Result<Option<UserView>, PersistenceError>;
    /// Up to `limit` users after the first `offset`, ordered by email; erased users are not
    /// listed.
    async fn list(&self, offset: u64, limit: u64) -> Result<Vec<UserView>, PersistenceError>;
    /// One user's live sessions.
    async fn sessions(&self, id: UserId) -> Result<SessionsView, PersistenceError>;
}

/// User views in Postgres.
pub struct PgUserDirectory {
    pool: PgPool,
    views: PgViewStore<UserView>,
    sessions: PgViewStore<SessionsView>,
}

impl PgUserDirectory {
    /// Reads from `user_view` and `session_view` through `pool`.
    pub fn new(pool: PgPool) -> Self {
        let views = PgViewStore::new(pool.clone(), USER_VIEW_TABLE);
        let sessions = PgViewStore::new(pool.clone(), SESSION_VIEW_TABLE);
        Self {
            pool,
            views,
            sessions,
        }
    }
}

#[async_trait]
impl UserDirectory for PgUserDirectory {
    async fn find(&self, id: UserId) -> Result<Option<UserView>, PersistenceError> {
        let stored = self.views.load(&id.to_string()).await?;
        Ok(stored.map(|stored| stored.view).filter(is_present))
    }

    async fn list(&self, offset: u64, limit: u64) -> Result<Vec<UserView>, PersistenceError> {
        let payloads: Vec<serde_json::Value> = sqlx::query_scalar(
            "SELECT payload FROM user_view WHERE payload->>'id' IS NOT NULL \
             ORDER BY payload->>'email', view_id OFFSET $1 LIMIT $2",
        )
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        payloads
            .into_iter()
            .map(|payload| serde_json::from_value(payload).map_err(PersistenceError::from))
            .collect()
    }

    async fn sessions(&self, id: UserId) -> Result<SessionsView, PersistenceError> {
        let stored = self.sessions.load(&id.to_string()).await?;
        Ok(stored.map(|stored| stored.view).unwrap_or_default())
    }
}

/// User views in memory (embedded mode).
pub struct MemUserDirectory {
    views: Arc<MemViewStore<UserView>>,
    sessions: Arc<MemViewStore<SessionsView>>,
}

impl MemUserDirectory {
    /// Reads the views these repositories hold.
    pub fn new(
        views: Arc<MemViewStore<UserView>>,
        sessions: Arc<MemViewStore<SessionsView>>,
    ) -> Self {
        Self { views, sessions }
    }
}

#[async_trait]
impl UserDirectory for MemUserDirectory {
    async fn find(&self, id: UserId) -> Result<Option<UserView>, PersistenceError> {
        let stored = self.views.load(&id.to_string()).await?;
        Ok(stored.map(|stored| stored.view).filter(is_present))
    }

    async fn list(&self, offset: u64, limit: u64) -> Result<Vec<UserView>, PersistenceError> {
        let mut views: Vec<UserView> = self
            .views
            .all()?
            .into_iter()
            .map(|(_, stored)| stored.view)
            .filter(is_present)
            .collect();
        views.sort_by(|a, b| a.email.cmp(&b.email).then(a.id.cmp(&b.id)));
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(views.into_iter().skip(offset).take(limit).collect())
    }

    async fn sessions(&self, id: UserId) -> Result<SessionsView, PersistenceError> {
        let stored = self.sessions.load(&id.to_string()).await?;
        Ok(stored.map(|stored| stored.view).unwrap_or_default())
    }
}
