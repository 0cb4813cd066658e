//! What an access token may still do, without a database round trip per request.
//!
//! An access token is valid while its signature and claims are, and while its session is
//! live: a logout, an ended session, a password change or reset, an admin lock or an admin
//! ending every session all end sessions, and so all kill the access tokens of those sessions
//! at once. Checking the sessions on every request would read the database every time, so the
//! user's view and live sessions are cached in the process:
//!
//! - On the instance that committed a change, the entry is dropped with the commit (before the
//!   response), so the next request there already sees it.
//! - On every other instance, an entry is at most [`ACCESS_CACHE_TTL`] old: that is the bound
//!   on how long a revoked token keeps working elsewhere.
//!
//! A load that started before a change was dropped is not cached over it (each user has a
//! generation that every drop moves on). The cache holds at most [`ACCESS_CACHE_USERS`] users
//! and forgets the least recently used.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_es::{EventEnvelope, Query};
use lru::LruCache;
use twofold_domain::values::{SessionId, UserId};
use twofold_domain::User;
use twofold_projections::{CommitQuery, UserDirectory, UserView};

use super::AppError;

/// How old a cached entry may be: how long a token revoked on another instance keeps working.
pub const ACCESS_CACHE_TTL: Duration = Duration::from_secs(1);
/// How many users the cache holds at most.
pub const ACCESS_CACHE_USERS: usize = 10_000;

/// A user as their access tokens see them: the view, and the sessions still live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAccess {
    /// The user as clients see them.
    pub view: UserView,
    sessions: HashSet<SessionId>,
}

impl UserAccess {
    /// Whether `session` is live: its tokens are still good.
    pub fn session_is_live(&self, session: SessionId) -> bool {
        self.sessions.contains(&session)
    }
}

struct Slot {
    /// Moves on at every drop, so that a load begun before it is not cached.
    generation: u64,
    cached: Option<(Instant, Arc<UserAccess>)>,
}

/// The cache of [`UserAccess`]es over the views.
pub struct AccessCache {
    directory: Arc<dyn UserDirectory>,
    slots: Mutex<LruCache<UserId, Slot>>,
    ttl: Duration,
}

impl AccessCache {
    /// A cache over `directory`.
    pub fn new(directory: Arc<dyn UserDirectory>) -> Self {
        let capacity = NonZeroUsize::new(ACCESS_CACHE_USERS).unwrap_or(NonZeroUsize::MIN);
        Self {
            directory,
            slots: Mutex::new(LruCache::new(capacity)),
            ttl: ACCESS_CACHE_TTL,
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, LruCache<UserId, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `user` as their access tokens see them; `None` if they do not exist.
    pub async fn access(&self, user: UserId) -> Result<Option<Arc<UserAccess>>, AppError> {
        let generation = {
            let mut slots = self.slots();
            match slots.get(&user) {
                Some(Slot {
                    cached: Some((loaded, access)),
                    ..
                }) if loaded.elapsed() < self.ttl => return Ok(Some(Arc::clone(access))),
                Some(slot) => slot.generation,
                None => 0,
            }
        };
        let Some(view) = self.directory.find(user).await? else {
            return Ok(None);
        };
        let sessions = self.directory.sessions(user).await?;
        let access = Arc::new(UserAccess {
            view,
            sessions: sessions.sessions.iter().map(|session| session.id).collect(),
        });
        let mut slots = self.slots();
        let slot = slots.get_or_insert_mut(user, || Slot {
            generation,
            cached: None,
        });
        if slot.generation == generation {
            slot.cached = Some((Instant::now(), Arc::clone(&access)));
        }
        Ok(Some(access))
    }

    /// Forgets `user`, whose events just changed.
    pub fn drop_user(&self, user: UserId) {
        let mut slots = self.slots();
        let slot = slots.get_or_insert_mut(user, || Slot {
            generation: 0,
            cached: None,
        });
        slot.generation += 1;
        slot.cached = None;
    }
}

/// The cache as the gateway dispatches to it, after the views: the instance that committed
/// forgets the user before it answers.
pub struct DropsAccess(pub Arc<AccessCache>);

impl CommitQuery for DropsAccess {}

#[async_trait]
impl Query<User> for DropsAccess {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<User>]) {
        if events.is_empty() {
            return;
        }
        if let Ok(user) = aggregate_id.parse::<UserId>() {
            self.0.drop_user(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use cqrs_es::persist::PersistenceError;
    use twofold_projections::{SessionSummary, SessionsView};

    use super::*;

    /// A directory that counts its reads and answers with the session ids it is told.
    #[derive(Default)]
    struct Counting {
        reads: AtomicUsize,
        sessions: Mutex<Vec<SessionId>>,
    }

    #[async_trait]
    impl UserDirectory for Counting {
        async fn find(&self, id: UserId) -> Result<Option<UserView>, PersistenceError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(Some(UserView {
                id: Some(id),
                ..UserView::default()
            }))
        }

        async fn list(&self, _: u64, _: u64) -> Result<Vec<UserView>, PersistenceError> {
            Ok(Vec::new())
        }

        async fn sessions(&self, _: UserId) -> Result<SessionsView, PersistenceError> {
            let at = time::OffsetDateTime::UNIX_EPOCH;
            let ids = self.sessions.lock().unwrap().clone();
            Ok(SessionsView {
                sessions: ids
                    .into_iter()
                    .map(|id| SessionSummary {
                        id,
                        created_at: at,
                        last_used_at: at,
                        ip_address: None,
                        user_agent: None,
                    })
                    .collect(),
            })
        }
    }

    fn user() -> UserId {
        UserId::from_uuid(uuid::Uuid::from_u128(1))
    }

    fn session() -> SessionId {
        SessionId::from_uuid(uuid::Uuid::from_u128(2))
    }

    #[tokio::test]
    async fn a_user_is_read_once_then_served_from_memory_until_dropped() {
        let directory = Arc::new(Counting::default());
        directory.sessions.lock().unwrap().push(session());
        let cache = AccessCache::new(directory.clone());
        for _ in 0..100 {
            let access = cache.access(user()).await.unwrap().unwrap();
            assert!(access.session_is_live(session()));
        }
        assert_eq!(directory.reads.load(Ordering::SeqCst), 1);

        // The session ends: the commit drops the user, and the next request reads again.
        directory.sessions.lock().unwrap().clear();
        cache.drop_user(user());
        let access = cache.access(user()).await.unwrap().unwrap();
        assert!(!access.session_is_live(session()));
        assert_eq!(directory.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_entry_older_than_the_bound_is_read_again() {
        let directory = Arc::new(Counting::default());
        let cache = AccessCache {
            ttl: Duration::from_millis(20),
            ..AccessCache::new(directory.clone())
        };
        cache.access(user()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        cache.access(user()).await.unwrap();
        assert_eq!(directory.reads.load(Ordering::SeqCst), 2);
    }

    /// A directory whose reads wait for a permit, so a test can drop a user mid-read.
    struct Gated {
        inner: Counting,
        permits: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl UserDirectory for Gated {
        async fn find(&self, id: UserId) -> Result<Option<UserView>, PersistenceError> {
            let _permit = self.permits.acquire().await;
            self.inner.find(id).await
        }

        async fn list(&self, offset: u64, limit: u64) -> Result<Vec<UserView>, PersistenceError> {
            self.inner.list(offset, limit).await
        }

        async fn sessions(&self, id: UserId) -> Result<SessionsView, PersistenceError> {
            self.inner.sessions(id).await
        }
    }

    #[tokio::test]
    async fn a_read_begun_before_a_commit_dropped_the_user_is_not_cached_over_it() {
        let directory = Arc::new(Gated {
            inner: Counting::default(),
            permits: tokio::sync::Semaphore::new(0),
        });
        let cache = Arc::new(AccessCache::new(directory.clone()));
        let reading = tokio::spawn({
            let cache = Arc::clone(&cache);
            async move { cache.access(user()).await }
        });
        tokio::task::yield_now().await;
        // A commit for the user lands while the read is under way.
        cache.drop_user(user());
        directory.permits.add_permits(10);
        reading.await.unwrap().unwrap();
        // What that read found may predate the commit: the next request reads again.
        cache.access(user()).await.unwrap();
        assert_eq!(directory.inner.reads.load(Ordering::SeqCst), 2);
        cache.access(user()).await.unwrap();
        assert_eq!(directory.inner.reads.load(Ordering::SeqCst), 2);
    }
}
