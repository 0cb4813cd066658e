//! Rebuilding the views from the log, on either store (see `twofold_projections::rebuild`):
//! `twofold views rebuild` on Postgres, and the running service's own in-memory views in the
//! embedded mode.

use std::sync::Arc;

use sqlx::PgPool;
use twofold_projections::log::{EventLog, Upcasters};
use twofold_projections::personal::PersonalData;
use twofold_projections::rebuild::{rebuild_memory, rebuild_postgres, RebuildError, RebuildReport};
use twofold_projections::{MemViewStore, SessionsView, UserView};

use crate::app::App;

/// The upcasters every reader of the log goes through: the domain's.
pub fn upcasters() -> Upcasters {
    Upcasters::from(twofold_domain::upcasters())
}

/// The views of a store and the log they are rebuilt from.
#[derive(Clone)]
pub enum ViewSet {
    /// In Postgres: the view tables beside `events`, and the keys that open the personal data
    /// of the events (the event repository keeps them).
    Postgres {
        /// The database.
        pool: PgPool,
        /// The users' data keys.
        personal: Arc<dyn PersonalData>,
    },
    /// In memory.
    Memory {
        /// The in-memory log.
        log: Arc<dyn EventLog>,
        /// The user views.
        users: Arc<MemViewStore<UserView>>,
        /// The sessions views.
        sessions: Arc<MemViewStore<SessionsView>>,
    },
}

impl App {
    /// Rebuilds this service's views from the log (see [`rebuild`]).
    pub async fn rebuild_views(&self, apply: bool) -> Result<RebuildReport, RebuildError> {
        rebuild(&self.views, apply).await
    }
}

/// Replays the log into fresh views, compares them with `views` and, with `apply`, puts the
/// rebuilt ones in their place.
pub async fn rebuild(views: &ViewSet, apply: bool) -> Result<RebuildReport, RebuildError> {
    match views {
        ViewSet::Postgres { pool, personal } => {
            rebuild_postgres(pool, Arc::clone(personal), upcasters(), apply).await
        }
        ViewSet::Memory {
            log,
            users,
            sessions,
        } => rebuild_memory(log.clone(), upcasters(), users, sessions, apply).await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
    use cqrs_es::DomainEvent;
    use twofold_domain::values::{Email, FullName, PasswordHash, UserId};
    use twofold_domain::{User, UserEvent};
    use twofold_projections::log::EventLog;
    use twofold_projections::{MemViewStore, StoredView, ViewStore};

    use super::*;
    use crate::app::store::MemEventRepository;

    fn stored(user: &str, sequence: usize, event: &UserEvent) -> SerializedEvent {
        SerializedEvent {
            aggregate_id: user.to_owned(),
            sequence,
            aggregate_type: "User".to_owned(),
            event_type: event.event_type(),
            event_version: event.event_version(),
            payload: serde_json::to_value(event).unwrap(),
            metadata: serde_json::json!({"actor": "anonymous"}),
        }
    }

    #[tokio::test]
    async fn the_embedded_views_are_rebuilt_from_the_in_memory_log() {
        let (outbox, _jobs) = tokio::sync::mpsc::unbounded_channel();
        let events = MemEventRepository::new(
            outbox,
            std::sync::Arc::new(twofold_domain::testing::HexSealer),
        );
        let user = UserId::new_random().to_string();
        let signed_up = UserEvent::SignedUp {
            user_id: user.parse().unwrap(),
            email: Email::parse("ada@example.com").unwrap(),
            full_name: FullName::parse("Ada Lovelace").unwrap(),
            password_hash: PasswordHash::from_phc("plain$x".to_owned()),
            at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let granted = UserEvent::AdminGranted {
            at: time::OffsetDateTime::UNIX_EPOCH,
        };
        events
            .persist::<User>(
                &[stored(&user, 1, &signed_up), stored(&user, 2, &granted)],
                None,
            )
            .await
            .unwrap();
        let users = Arc::new(MemViewStore::default());
        let sessions = Arc::new(MemViewStore::default());
        let views = ViewSet::Memory {
            log: Arc::new(events) as Arc<dyn EventLog>,
            users: Arc::clone(&users),
            sessions,
        };

        // The live view missed AdminGranted.
        let report = rebuild(&views, false).await.unwrap();
        assert_eq!(report.events, 2);
        let found: Vec<String> = report.differences.iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [format!(
                "user {user} view user_view field (row): live absent rebuilt {}",
                serde_json::json!({"id": user, "email": "ada@example.com",
                    "full_name": "Ada Lovelace", "tfa_enabled": false, "device": null,
                    "is_admin": true, "is_locked": false})
            )]
        );
        assert_eq!(
            users.load(&user).await.unwrap(),
            None,
            "a check changes nothing"
        );

        let applied = rebuild(&views, true).await.unwrap();
        assert!(applied.applied);
        let StoredView {
            view,
            last_sequence,
        } = users.load(&user).await.unwrap().unwrap();
        assert!(view.is_admin);
        assert_eq!(last_sequence, 2);
        assert_eq!(rebuild(&views, false).await.unwrap().differences, []);
    }
}
