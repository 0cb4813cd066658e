//! WebAuthn ceremonies between their start and their finish: the port, in Postgres (shared by
//! every instance) and in memory (the embedded mode's one instance).
//!
//! Both keep the same guarantees: a ceremony is found only by its random id and only for its
//! kind; it is taken at most once, so that of concurrent finishes exactly one gets it (in
//! Postgres one `DELETE … RETURNING`, in memory a removal under the map's lock); and once its
//! time is up it is never found again, and a periodic sweep forgets it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use time::OffsetDateTime;
use twofold_domain::values::UserId;
use uuid::Uuid;

use crate::app::AppError;

/// How long a ceremony may take from its start to its finish (at most 5 minutes, as the
/// challenge's lifetime should be; WebAuthn's own timeout for the authenticator is shorter).
pub const CEREMONY_TTL: time::Duration = time::Duration::minutes(5);
/// How often expired ceremonies are swept.
pub const CEREMONY_SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// What a ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyKind {
    /// Registering a passkey for a signed-in user.
    Registration,
    /// A passkey as the second factor of a password login.
    Authentication,
    /// A passwordless login with a discoverable passkey.
    Discoverable,
}

impl CeremonyKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Registration => "registration",
            Self::Authentication => "authentication",
            Self::Discoverable => "discoverable",
        }
    }
}

/// A ceremony in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Ceremony {
    /// What it is for.
    pub kind: CeremonyKind,
    /// Whose it is; `None` for a passwordless login, whose user the finish names.
    pub user_id: Option<UserId>,
    /// The relying party library's state of it.
    pub state: serde_json::Value,
}

/// Where ceremonies wait for their finish.
#[async_trait]
pub trait CeremonyStore: Send + Sync {
    /// Keeps `ceremony` under `id` until `expires_at`.
    async fn put(
        &self,
        id: Uuid,
        ceremony: Ceremony,
        expires_at: OffsetDateTime,
    ) -> Result<(), AppError>;

    /// Takes the ceremony `id` of `kind`, if it is there and unexpired: at most once.
    async fn take(&self, id: Uuid, kind: CeremonyKind) -> Result<Option<Ceremony>, AppError>;
}

/// The table `webauthn_ceremonies`, shared by every instance. The database's clock decides
/// expiry, so the instances' clocks need not agree.
pub struct PgCeremonyStore {
    pool: PgPool,
}

impl PgCeremonyStore {
    /// The store on `pool`, sweeping expired rows every `sweep_period` while it lives.
    pub fn start(pool: PgPool, sweep_period: Duration) -> Arc<Self> {
        let store = Arc::new(Self { pool });
        crate::app::client_limit::every(sweep_period, Arc::downgrade(&store), |store| async move {
            let swept = sqlx::query("DELETE FROM webauthn_ceremonies WHERE expires_at <= now()")
                .execute(&store.pool)
                .await;
            match swept {
                Ok(done) if done.rows_affected() > 0 => {
                    tracing::debug!(swept = done.rows_affected(), "expired ceremonies swept");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "sweeping expired ceremonies failed"),
            }
        });
        store
    }
}

#[async_trait]
impl CeremonyStore for PgCeremonyStore {
    async fn put(
        &self,
        id: Uuid,
        ceremony: Ceremony,
        expires_at: OffsetDateTime,
    ) -> Result<(), AppError> {
        sqlx::query(
            "INSERT INTO webauthn_ceremonies (id, kind, user_id, state, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(ceremony.kind.as_str())
        .bind(ceremony.user_id.map(|user| user.as_uuid()))
        .bind(sqlx::types::Json(&ceremony.state))
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(AppError::database)?;
        Ok(())
    }

    async fn take(&self, id: Uuid, kind: CeremonyKind) -> Result<Option<Ceremony>, AppError> {
        let row: Option<(Option<Uuid>, sqlx::types::Json<serde_json::Value>)> = sqlx::query_as(
            "DELETE FROM webauthn_ceremonies \
             WHERE id = $1 AND kind = $2 AND expires_at > now() \
             RETURNING user_id, state",
        )
        .bind(id)
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(AppError::database)?;
        Ok(row.map(|(user_id, state)| Ceremony {
            kind,
            user_id: user_id.map(UserId::from_uuid),
            state: state.0,
        }))
    }
}

/// The waiting ceremonies by id, with when each expires.
type CeremonyMap = HashMap<Uuid, (Ceremony, OffsetDateTime)>;

/// Ceremonies in this process's memory, for the embedded mode (one instance): a map behind a
/// mutex, with the Postgres store's semantics.
pub struct MemCeremonyStore {
    ceremonies: Mutex<CeremonyMap>,
}

impl MemCeremonyStore {
    /// An empty store, sweeping expired ceremonies every `sweep_period` while it lives.
    pub fn start(sweep_period: Duration) -> Arc<Self> {
        let store = Arc::new(Self {
            ceremonies: Mutex::new(HashMap::new()),
        });
        crate::app::client_limit::every(sweep_period, Arc::downgrade(&store), |store| async move {
            let now = OffsetDateTime::now_utc();
            if let Ok(mut ceremonies) = store.ceremonies.lock() {
                ceremonies.retain(|_, (_, expires_at)| *expires_at > now);
            }
        });
        store
    }

    fn locked(&self) -> Result<std::sync::MutexGuard<'_, CeremonyMap>, AppError> {
        self.ceremonies
            .lock()
            .map_err(|_| AppError::Internal("the ceremony map's lock is poisoned".into()))
    }
}

#[async_trait]
impl CeremonyStore for MemCeremonyStore {
    async fn put(
        &self,
        id: Uuid,
        ceremony: Ceremony,
        expires_at: OffsetDateTime,
    ) -> Result<(), AppError> {
        self.locked()?.insert(id, (ceremony, expires_at));
        Ok(())
    }

    async fn take(&self, id: Uuid, kind: CeremonyKind) -> Result<Option<Ceremony>, AppError> {
        let mut ceremonies = self.locked()?;
        let fits = ceremonies.get(&id).is_some_and(|(ceremony, expires_at)| {
            ceremony.kind == kind && *expires_at > OffsetDateTime::now_utc()
        });
        Ok(if fits {
            ceremonies.remove(&id).map(|(ceremony, _)| ceremony)
        } else {
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ceremony(kind: CeremonyKind) -> Ceremony {
        Ceremony {
            kind,
            user_id: None,
            state: serde_json::json!({"challenge": "c"}),
        }
    }

    #[tokio::test]
    async fn a_ceremony_is_taken_once_only_for_its_kind_and_never_after_its_time() {
        let store = MemCeremonyStore::start(CEREMONY_SWEEP_PERIOD);
        let later = OffsetDateTime::now_utc() + CEREMONY_TTL;
        let id = Uuid::new_v4();
        store
            .put(id, ceremony(CeremonyKind::Discoverable), later)
            .await
            .unwrap();
        assert_eq!(
            store.take(id, CeremonyKind::Registration).await.unwrap(),
            None
        );
        assert_eq!(
            store.take(id, CeremonyKind::Discoverable).await.unwrap(),
            Some(ceremony(CeremonyKind::Discoverable))
        );
        assert_eq!(
            store.take(id, CeremonyKind::Discoverable).await.unwrap(),
            None
        );
        let expired = Uuid::new_v4();
        store
            .put(
                expired,
                ceremony(CeremonyKind::Registration),
                OffsetDateTime::now_utc() - time::Duration::seconds(1),
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .take(expired, CeremonyKind::Registration)
                .await
                .unwrap(),
            None
        );
    }
}
