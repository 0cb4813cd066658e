//! Throttling of logins to addresses no account has.
//!
//! A real account's password throttle lives in its aggregate; an address without an account
//! has no aggregate, so its failures are counted here, under the domain's same [`Throttle`]
//! policy. Without this, only real accounts would ever answer 429, and the lockout would tell
//! an attacker which addresses have accounts. Addresses are kept only as keyed digests.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use sqlx::PgPool;
use time::OffsetDateTime;
use twofold_domain::user::Throttle;

use crate::app::AppError;

/// Failure counts of logins to addresses without an account, keyed by an address digest.
#[async_trait]
pub trait UnknownAccountThrottle: Send + Sync {
    /// Refuses an attempt while the address is locked, as a real account's password lock does.
    async fn check(&self, email_digest: &str, now: OffsetDateTime) -> Result<(), AppError>;
    /// Records a failed attempt; returns the lock it set, if any.
    async fn record_failure(
        &self,
        email_digest: &str,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, AppError>;
}

/// The Postgres table `unknown_account_throttle`, shared by every instance.
pub struct PgUnknownAccountThrottle {
    pool: PgPool,
}

impl PgUnknownAccountThrottle {
    /// The throttle over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl UnknownAccountThrottle for PgUnknownAccountThrottle {
    async fn check(&self, email_digest: &str, now: OffsetDateTime) -> Result<(), AppError> {
        let locked_until: Option<Option<OffsetDateTime>> = sqlx::query_scalar(
            "SELECT locked_until FROM unknown_account_throttle WHERE email_digest = $1",
        )
        .bind(email_digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(AppError::database)?;
        let throttle = Throttle {
            failures: 0,
            locked_until: locked_until.flatten(),
        };
        throttle.check(now).map_err(AppError::from)
    }

    async fn record_failure(
        &self,
        email_digest: &str,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, AppError> {
        // One statement: concurrent failures each count, on any instance.
        let failures: i32 = sqlx::query_scalar(
            "INSERT INTO unknown_account_throttle (email_digest, failures) VALUES ($1, 1) \
             ON CONFLICT (email_digest) DO UPDATE \
             SET failures = unknown_account_throttle.failures + 1 RETURNING failures",
        )
        .bind(email_digest)
        .fetch_one(&self.pool)
        .await
        .map_err(AppError::database)?;
        let lock = Throttle::lock_after(u32::try_from(failures).unwrap_or(u32::MAX), now);
        if let Some(until) = lock {
            sqlx::query(
                "UPDATE unknown_account_throttle SET locked_until = GREATEST(locked_until, $2) \
                 WHERE email_digest = $1",
            )
            .bind(email_digest)
            .bind(until)
            .execute(&self.pool)
            .await
            .map_err(AppError::database)?;
        }
        Ok(lock)
    }
}

/// In memory, for the embedded mode (one process, so nothing to share).
#[derive(Default)]
pub struct MemUnknownAccountThrottle {
    throttles: Mutex<HashMap<String, Throttle>>,
}

impl MemUnknownAccountThrottle {
    fn with<T>(&self, email_digest: &str, f: impl FnOnce(&mut Throttle) -> T) -> T {
        let mut throttles = self
            .throttles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(throttles.entry(email_digest.to_owned()).or_default())
    }
}

#[async_trait]
impl UnknownAccountThrottle for MemUnknownAccountThrottle {
    async fn check(&self, email_digest: &str, now: OffsetDateTime) -> Result<(), AppError> {
        self.with(email_digest, |throttle| throttle.check(now))
            .map_err(AppError::from)
    }

    async fn record_failure(
        &self,
        email_digest: &str,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, AppError> {
        Ok(self.with(email_digest, |throttle| {
            throttle.record_failure(now);
            Throttle::lock_after(throttle.failures, now)
        }))
    }
}
