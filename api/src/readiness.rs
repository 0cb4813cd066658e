//! What the service depends on to answer requests, and how to ask each whether it answers:
//! the readiness check behind `/health/ready`.

use std::time::Duration;

use sqlx::PgPool;

/// How long one dependency may take to answer a readiness check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The JetStream API subject of the account information request.
const JETSTREAM_INFO: &str = "$JS.API.INFO";

/// What the service depends on to answer requests.
#[derive(Clone)]
pub enum Readiness {
    /// The embedded mode: everything is in this process's memory.
    Embedded,
    /// Postgres (events, views, outbox) and NATS JetStream (mail).
    Services {
        /// The event store's pool.
        pool: PgPool,
        /// The NATS connection the outbox relay publishes through.
        nats: async_nats::Client,
    },
}

impl Readiness {
    /// Each dependency by name, and whether it answered in time.
    pub async fn checks(&self) -> Vec<(&'static str, bool)> {
        match self {
            Self::Embedded => vec![("memory", true)],
            Self::Services { pool, nats } => {
                let (postgres, nats) = tokio::join!(postgres_up(pool), nats_up(nats));
                vec![("postgres", postgres), ("nats", nats)]
            }
        }
    }
}

async fn postgres_up(pool: &PgPool) -> bool {
    let query = sqlx::query("SELECT 1").execute(pool);
    match tokio::time::timeout(CHECK_TIMEOUT, query).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "readiness: Postgres does not answer");
            false
        }
        Err(_) => {
            tracing::warn!("readiness: Postgres did not answer in time");
            false
        }
    }
}

/// JetStream's API answers an account-info request only when the connection is up and
/// JetStream is enabled; without JetStream the request finds no responder.
async fn nats_up(nats: &async_nats::Client) -> bool {
    let request = nats.request(JETSTREAM_INFO, Default::default());
    match tokio::time::timeout(CHECK_TIMEOUT, request).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "readiness: NATS JetStream does not answer");
            false
        }
        Err(_) => {
            tracing::warn!("readiness: NATS JetStream did not answer in time");
            false
        }
    }
}
