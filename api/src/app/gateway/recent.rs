//! The users this instance's commands left behind, so that the next command on one of them
//! can start from memory instead of reading the store.
//!
//! An entry is a user as folded up to one of their events. That stays true of that event
//! forever (the log only grows), but the store may have moved on since: another instance, or
//! another command here, may have committed. The gateway therefore trusts an entry only as
//! far as the store confirms it:
//!
//! - A command that records events commits them after the entry's sequence. If anything was
//!   committed since, the store refuses the commit as a lost race, and the command runs again
//!   from a read, as every lost race does.
//! - A command refused, or that records nothing, may have been answered otherwise by the
//!   newer state: it runs again from a read, and that run's answer is the one given.
//!
//! So an entry that is current saves the read, and one that is behind costs one more run of
//! the command; no answer depends on which. Only a commit's outcome is kept, never a read.
//!
//! An entry holds what a command holds while it runs: the user's secrets and their data key
//! in clear. It is used for the time to live the cache was started with
//! (`TWOFOLD_RECENT_USERS_TTL`) after it was kept, and dropped within [`SWEEP_PERIOD`] after
//! that, even on an idle instance. This instance forgets a user it erases at once; an erasure
//! on another instance leaves the entry here until then. At most [`RECENT_USERS`] users are
//! kept, the oldest forgotten first. With a time to live of zero nothing is kept, built or
//! locked.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::Loaded;
use crate::app::client_limit::every;

/// How many users are kept at most.
const RECENT_USERS: usize = 4096;

/// How often expired users are dropped, whether or not commands come.
const SWEEP_PERIOD: Duration = Duration::from_secs(1);

struct Entry {
    loaded: Loaded,
    kept_at: Instant,
}

/// The users recent commands left, by aggregate id, in the order they were kept (a read does
/// not move an entry, so the oldest is always last and expiry can start there).
pub(super) struct RecentUsers {
    entries: Mutex<LruCache<String, Entry>>,
    ttl: Duration,
}

impl RecentUsers {
    /// Keeps users for `ttl` (none when it is zero), and drops the expired ones every
    /// [`SWEEP_PERIOD`] until it is dropped itself.
    pub(super) fn start(ttl: Duration) -> Arc<Self> {
        let capacity = NonZeroUsize::new(RECENT_USERS).unwrap_or(NonZeroUsize::MIN);
        let recent = Arc::new(Self {
            entries: Mutex::new(LruCache::new(capacity)),
            ttl,
        });
        if !ttl.is_zero() {
            every(SWEEP_PERIOD, Arc::downgrade(&recent), |recent| async move {
                recent.drop_expired(&mut recent.entries());
            });
        }
        recent
    }

    fn entries(&self) -> MutexGuard<'_, LruCache<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// User `aggregate_id` as the last commit of theirs on this instance left them, if that
    /// was less than the time to live ago.
    pub(super) fn get(&self, aggregate_id: &str) -> Option<Loaded> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut entries = self.entries();
        match entries.peek(aggregate_id) {
            Some(entry) if entry.kept_at.elapsed() < self.ttl => Some(entry.loaded.clone()),
            Some(_) => {
                entries.pop(aggregate_id);
                None
            }
            None => None,
        }
    }

    /// Keeps user `aggregate_id` as a commit just left them (`left`, built only when users
    /// are kept), unless a later state of theirs is kept already (a command that committed
    /// after this one, but got here first). Expired entries are dropped on the way.
    pub(super) fn keep(&self, aggregate_id: &str, left: impl FnOnce() -> Loaded) {
        if self.ttl.is_zero() {
            return;
        }
        let loaded = left();
        let mut entries = self.entries();
        let later_kept = entries
            .peek(aggregate_id)
            .is_some_and(|entry| entry.loaded.sequence >= loaded.sequence);
        if !later_kept {
            let kept_at = Instant::now();
            entries.put(aggregate_id.to_owned(), Entry { loaded, kept_at });
        }
        self.drop_expired(&mut entries);
    }

    /// Drops the expired entries of `entries` (this cache's, locked), oldest first.
    fn drop_expired(&self, entries: &mut LruCache<String, Entry>) {
        while entries
            .peek_lru()
            .is_some_and(|(_, entry)| entry.kept_at.elapsed() >= self.ttl)
        {
            entries.pop_lru();
        }
    }

    /// Forgets user `aggregate_id`.
    pub(super) fn forget(&self, aggregate_id: &str) {
        self.entries().pop(aggregate_id);
    }
}

#[cfg(test)]
mod tests {
    use twofold_domain::User;
    use twofold_projections::personal::KeyRing;

    use super::*;

    fn at(sequence: usize) -> Loaded {
        Loaded {
            user: User::default(),
            sequence,
            snapshot_sequence: 0,
            keys: KeyRing::default(),
            chain_head: None,
        }
    }

    fn kept_sequence(recent: &RecentUsers, user: &str) -> Option<usize> {
        recent.get(user).map(|loaded| loaded.sequence)
    }

    #[tokio::test]
    async fn a_later_state_is_not_replaced_by_an_earlier_one() {
        let recent = RecentUsers::start(Duration::from_secs(60));
        recent.keep("ada", || at(5));
        recent.keep("ada", || at(4));
        assert_eq!(kept_sequence(&recent, "ada"), Some(5));
        recent.keep("ada", || at(6));
        assert_eq!(kept_sequence(&recent, "ada"), Some(6));
        recent.forget("ada");
        assert_eq!(kept_sequence(&recent, "ada"), None);
    }

    #[tokio::test]
    async fn a_user_is_kept_for_the_time_to_live_and_expired_ones_are_dropped_as_others_are_kept() {
        let recent = RecentUsers::start(Duration::from_millis(200));
        recent.keep("ada", || at(1));
        recent.keep("grace", || at(1));
        assert_eq!(kept_sequence(&recent, "ada"), Some(1));
        std::thread::sleep(Duration::from_millis(250));
        // Before the first sweep (which waits a period): dropped by the next keep.
        recent.keep("alan", || at(1));
        assert_eq!(recent.entries().len(), 1);
        assert_eq!(kept_sequence(&recent, "grace"), None);
        assert_eq!(kept_sequence(&recent, "alan"), Some(1));
    }

    #[tokio::test]
    async fn an_idle_instance_drops_expired_users_within_a_sweep_period() {
        let recent = RecentUsers::start(Duration::from_millis(100));
        recent.keep("ada", || at(1));
        tokio::time::sleep(SWEEP_PERIOD + Duration::from_millis(300)).await;
        assert_eq!(recent.entries().len(), 0);
    }

    #[tokio::test]
    async fn no_time_to_live_keeps_no_one() {
        let recent = RecentUsers::start(Duration::ZERO);
        recent.keep("ada", || at(1));
        assert_eq!(kept_sequence(&recent, "ada"), None);
    }
}
