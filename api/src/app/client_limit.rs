//! The per-client allowance behind the rate limit of the endpoints callable without a token:
//! `N` requests a minute with a burst of `N`, one request's worth refilled every `60 s / N`.
//!
//! A client is an IPv4 address, or the /64 of an IPv6 address (one subscriber's share of a
//! network, in which it can pick a new address for every request); an IPv4-mapped IPv6 address
//! (`::ffff:a.b.c.d`) is its IPv4 address.
//!
//! On Postgres the allowance is shared by every instance: one row per client holds the
//! instant its allowance is whole again (the "theoretical arrival time" of the generic cell
//! rate algorithm, GCRA), keyed by a keyed digest of the client (an address is personal
//! data), and one atomic statement admits or refuses each request. GCRA rather than a fixed
//! window because it is what the in-process limiter has always done: a fixed window would let
//! a client spend two allowances around a window's edge, and a sliding log would keep a row
//! per request. The database's clock decides, so the instances' clocks need not agree. The
//! embedded mode has one instance, and keeps its allowances in memory.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sqlx::PgPool;
use twofold_domain::services::SecretSealer;

use crate::app::AppError;

/// How often rows and entries of clients whose allowance is whole again are forgotten.
pub const SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// What a request is counted against: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The client `address` belongs to.
    pub fn of(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let network = u128::from(v6) & !u128::from(u64::MAX);
                Self(IpAddr::V6(Ipv6Addr::from(network)))
            }
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the allowance; counted.
    Admitted,
    /// Over the allowance; not counted. The next request is admitted after `retry_after`.
    Refused {
        /// How long until one request's worth is back.
        retry_after: Duration,
    },
}

/// Counts requests per client.
#[async_trait]
pub trait ClientLimiter: Send + Sync {
    /// Admits and counts one request of `client`, or refuses it.
    async fn admit(&self, client: ClientKey) -> Result<Admission, AppError>;
}

/// The allowance's two durations, in whole microseconds (Postgres's precision), so that a
/// burst of exactly `N` fits the window in the database as in memory.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    /// The time one request's worth takes to come back: `60 s / N`.
    refill_micros: i64,
    /// `N` refills: how far ahead of now a client's whole-again instant may run.
    window_micros: i64,
}

impl Allowance {
    fn per_minute(per_minute: NonZeroU32) -> Self {
        let refill_micros = 60_000_000 / i64::from(per_minute.get());
        Self {
            refill_micros,
            window_micros: refill_micros * i64::from(per_minute.get()),
        }
    }
}

/// Seconds, as `make_interval(secs => …)` takes them.
#[allow(clippy::cast_precision_loss)] // At most 60 000 000: exact in an f64.
fn seconds(micros: i64) -> f64 {
    micros as f64 / 1e6
}

/// Admits a request when the client's whole-again instant, pushed one refill later (from now
/// if it lies in the past), is at most one window ahead; otherwise changes nothing and
/// returns no row. The row lock of `ON CONFLICT` orders concurrent requests of one client,
/// from any instance.
const ADMIT: &str = "\
    INSERT INTO client_rate_limit (client_digest, whole_at) \
    VALUES ($1, now() + make_interval(secs => $2)) \
    ON CONFLICT (client_digest) DO UPDATE \
    SET whole_at = GREATEST(client_rate_limit.whole_at, now()) + make_interval(secs => $2) \
    WHERE GREATEST(client_rate_limit.whole_at, now()) + make_interval(secs => $2) \
          <= now() + make_interval(secs => $3) \
    RETURNING true";

/// How long a refused client still has to wait, in microseconds.
const WAIT: &str = "\
    SELECT (EXTRACT(EPOCH FROM whole_at - now()) * 1000000)::bigint \
    FROM client_rate_limit WHERE client_digest = $1";

/// The Postgres table `client_rate_limit`, shared by every instance.
pub struct PgClientLimiter {
    pool: PgPool,
    sealer: Arc<dyn SecretSealer>,
    allowance: Allowance,
}

impl PgClientLimiter {
    /// `per_minute` requests a minute per client, counted in `pool` under digests by
    /// `sealer`; rows of clients whose allowance is whole again are deleted every
    /// `sweep_period` for as long as the limiter lives.
    pub fn start(
        pool: PgPool,
        sealer: Arc<dyn SecretSealer>,
        per_minute: NonZeroU32,
        sweep_period: Duration,
    ) -> Arc<Self> {
        let limiter = Arc::new(Self {
            pool,
            sealer,
            allowance: Allowance::per_minute(per_minute),
        });
        every(
            sweep_period,
            Arc::downgrade(&limiter),
            |limiter| async move {
                match sweep(&limiter.pool).await {
                    Ok(0) => {}
                    Ok(swept) => tracing::debug!(swept, "rate-limit rows swept"),
                    Err(error) => tracing::warn!(%error, "sweeping the rate-limit rows failed"),
                }
            },
        );
        limiter
    }

    /// The keyed digest a client is stored under, with the key of the address index and of
    /// the unknown-account throttle; the prefix keeps it apart from their digests.
    fn digest(&self, client: ClientKey) -> String {
        self.sealer
            .digest(format!("rate limit client {client}").as_bytes())
            .digest
    }
}

/// Deletes the rows of clients whose allowance is whole again (a missing row means the same);
/// returns how many.
pub async fn sweep(pool: &PgPool) -> Result<u64, AppError> {
    sqlx::query("DELETE FROM client_rate_limit WHERE whole_at <= now()")
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        .map_err(AppError::database)
}

#[async_trait]
impl ClientLimiter for PgClientLimiter {
    async fn admit(&self, client: ClientKey) -> Result<Admission, AppError> {
        let digest = self.digest(client);
        let admitted: Option<bool> = sqlx::query_scalar(ADMIT)
            .bind(&digest)
            .bind(seconds(self.allowance.refill_micros))
            .bind(seconds(self.allowance.window_micros))
            .fetch_optional(&self.pool)
            .await
            .map_err(AppError::database)?;
        if admitted.is_some() {
            return Ok(Admission::Admitted);
        }
        // Only to say when to come back: the decision above stands whatever this reads.
        let ahead: Option<i64> = sqlx::query_scalar(WAIT)
            .bind(&digest)
            .fetch_optional(&self.pool)
            .await
            .map_err(AppError::database)?;
        let wait = ahead.unwrap_or(0) + self.allowance.refill_micros - self.allowance.window_micros;
        Ok(Admission::Refused {
            retry_after: Duration::from_micros(u64::try_from(wait).unwrap_or(0)),
        })
    }
}

/// In memory, for the embedded mode (one process, so nothing to share).
pub struct MemClientLimiter {
    limiter: DefaultKeyedRateLimiter<ClientKey>,
}

impl MemClientLimiter {
    /// `per_minute` requests a minute per client; idle clients are forgotten every
    /// `sweep_period` for as long as the limiter lives.
    pub fn start(per_minute: NonZeroU32, sweep_period: Duration) -> Arc<Self> {
        let limiter = Arc::new(Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
        });
        every(
            sweep_period,
            Arc::downgrade(&limiter),
            |limiter| async move {
                limiter.limiter.retain_recent();
            },
        );
        limiter
    }
}

#[async_trait]
impl ClientLimiter for MemClientLimiter {
    async fn admit(&self, client: ClientKey) -> Result<Admission, AppError> {
        Ok(match self.limiter.check_key(&client) {
            Ok(()) => Admission::Admitted,
            Err(not_until) => Admission::Refused {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        })
    }
}

/// Runs `task` on `target` every `period` until `target` is dropped.
pub(crate) fn every<T, F, Fut>(period: Duration, target: Weak<T>, task: F)
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; there is nothing to sweep yet.
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(target) = target.upgrade() else {
                return;
            };
            task(target).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(address: &str) -> ClientKey {
        ClientKey::of(address.parse().unwrap())
    }

    #[test]
    fn an_ipv4_address_is_its_own_client() {
        assert_eq!(key("203.0.113.9").to_string(), "203.0.113.9");
        assert_ne!(key("203.0.113.9"), key("203.0.113.10"));
    }

    #[test]
    fn an_ipv6_address_counts_as_its_64() {
        assert_eq!(key("2001:db8:1:2:3:4:5:6").to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), key("2001:db8:1:2:ffff::1"));
        assert_eq!(
            key("2001:db8:1:2::"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::1").to_string(), "::/64");
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_address() {
        assert_eq!(key("::ffff:203.0.113.9"), key("203.0.113.9"));
        assert_eq!(key("::ffff:203.0.113.9").to_string(), "203.0.113.9");
        // Not the other mapped addresses of its /64.
        assert_ne!(key("::ffff:203.0.113.9"), key("::ffff:203.0.113.10"));
    }

    #[test]
    fn a_burst_of_n_fits_the_window_exactly() {
        for n in [1, 5, 7, 120, 1000, u32::MAX] {
            let allowance = Allowance::per_minute(NonZeroU32::new(n).unwrap());
            assert!(allowance.window_micros <= 60_000_000);
            assert_eq!(
                allowance.window_micros,
                allowance.refill_micros * i64::from(n)
            );
        }
    }

    #[tokio::test]
    async fn in_memory_a_burst_of_n_then_a_refusal_that_says_when() {
        let limiter = MemClientLimiter::start(NonZeroU32::new(3).unwrap(), SWEEP_PERIOD);
        let client = key("2001:db8::1");
        for _ in 0..3 {
            assert_eq!(limiter.admit(client).await.unwrap(), Admission::Admitted);
        }
        let Admission::Refused { retry_after } = limiter.admit(key("2001:db8::2")).await.unwrap()
        else {
            panic!("the fourth request of the /64 is admitted");
        };
        assert!(retry_after > Duration::from_secs(19) && retry_after <= Duration::from_secs(20));
        assert_eq!(
            limiter.admit(key("2001:db8:0:1::1")).await.unwrap(),
            Admission::Admitted
        );
    }
}
