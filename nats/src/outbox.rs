//! The transactional outbox: mail jobs are written to Postgres in the same transaction as the
//! events that cause them, and a relay publishes them to JetStream, deleting each row only
//! after JetStream acknowledged it. A crash between commit and publish loses nothing (the row
//! waits for the next relay); a crash between publish and delete re-publishes, which JetStream
//! drops as a duplicate of the same `Nats-Msg-Id`. Relays on several instances share the rows
//! through `FOR UPDATE SKIP LOCKED`, so each row is in flight in one relay at a time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use sqlx::postgres::PgListener;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{publish, MailJob, Topology};

/// The channel relays listen on, so a new row is published at once rather than at the next poll.
const NOTIFY_CHANNEL: &str = "twofold_mail_outbox";
/// Rows taken per relay transaction.
const BATCH: i64 = 64;
/// How often the relay looks even without a notification.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between attempts while NATS is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// An outbox row older than this is reported as lag at warn level.
const LAG_WARNING: Duration = Duration::from_secs(60);
/// How often the relay reports its lag while healthy.
const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(30);

/// Writes `job` to the outbox (and its task record) on `connection`, normally inside the
/// transaction that commits the events causing it.
pub async fn enqueue(connection: &mut PgConnection, job: &MailJob) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO mail_outbox (id, job) VALUES ($1, $2)")
        .bind(job.id)
        .bind(Json(job))
        .execute(&mut *connection)
        .await?;
    sqlx::query("INSERT INTO mail_tasks (id, owner) VALUES ($1, $2)")
        .bind(job.id)
        .bind(job.owner.as_uuid())
        .execute(&mut *connection)
        .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Moves outbox rows to JetStream.
pub struct OutboxRelay {
    pool: PgPool,
    jetstream: Context,
    topology: Topology,
    recorder: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
}

impl OutboxRelay {
    /// A relay from `pool`'s outbox to `jetstream`.
    pub fn new(pool: PgPool, jetstream: Context, topology: Topology) -> Self {
        Self {
            pool,
            jetstream,
            topology,
            recorder: None,
        }
    }

    /// Records the relay's metrics into `recorder` rather than the global one:
    /// `twofold_outbox_published_total`, and the gauges `twofold_outbox_waiting` and
    /// `twofold_outbox_oldest_seconds` (its lag).
    pub fn with_recorder(mut self, recorder: Arc<dyn metrics::Recorder + Send + Sync>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    fn record(&self, record: impl FnOnce()) {
        match &self.recorder {
            Some(recorder) => metrics::with_local_recorder(recorder.as_ref(), record),
            None => record(),
        }
    }

    /// Relays until the task is dropped. Failures (NATS or Postgres down) are logged and
    /// retried with back-off; rows stay in the outbox meanwhile.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await;
    }

    /// Relays until `stop` resolves, then drains the outbox once more and returns. A batch in
    /// progress is always finished (published and deleted) first, so stopping leaves no row
    /// half-relayed, and jobs committed by the last requests are not left waiting.
    pub async fn run_until(self, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut listener = self.listen().await;
        let mut declared = false;
        let mut backoff = Duration::from_millis(100);
        let mut last_report: Option<tokio::time::Instant> = None;
        loop {
            if last_report.is_none_or(|last| last.elapsed() >= LAG_REPORT_INTERVAL) {
                self.report_lag().await;
                last_report = Some(tokio::time::Instant::now());
            }
            let wait = self.step(&mut declared, &mut backoff).await;
            // After a failure wait out the back-off; when drained, wait for a notification
            // or the next poll.
            let pause = async {
                match (wait, listener.as_mut()) {
                    (Some(wait), _) => tokio::time::sleep(wait).await,
                    (None, Some(listener)) => {
                        let _ = tokio::time::timeout(POLL_INTERVAL, listener.recv()).await;
                    }
                    (None, None) => tokio::time::sleep(POLL_INTERVAL).await,
                }
            };
            tokio::select! {
                () = &mut stop => break,
                () = pause => {}
            }
        }
        if declared {
            match self.drain().await {
                Ok(published) => tracing::debug!(published, "relay: final drain"),
                Err(error) => {
                    tracing::warn!(error = %error, "relay: final drain failed; the jobs stay in the outbox");
                }
            }
        }
        tracing::info!("relay: stopped");
    }

    /// One round: declare the streams if needed, then drain. Returns the back-off to wait
    /// after a failure, or `None` when the outbox was drained.
    async fn step(&self, declared: &mut bool, backoff: &mut Duration) -> Option<Duration> {
        if !*declared {
            match self.topology.declare(&self.jetstream).await {
                Ok(()) => *declared = true,
                Err(error) => {
                    tracing::warn!(error = %error, "relay: cannot declare the mail streams yet");
                    return Some(next_backoff(backoff));
                }
            }
        }
        match self.drain().await {
            Ok(published) => {
                *backoff = Duration::from_millis(100);
                if published > 0 {
                    tracing::debug!(published, "relay: published mail jobs");
                }
                None
            }
            Err(error) => {
                self.report_lag().await;
                tracing::warn!(error = %error, "relay: publishing failed; the jobs stay in the outbox");
                Some(next_backoff(backoff))
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await.ok()?;
        listener.listen(NOTIFY_CHANNEL).await.ok()?;
        Some(listener)
    }

    /// Publishes every row it can lock; returns how many it published.
    pub async fn drain(&self) -> Result<usize, async_nats::Error> {
        let mut total = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let rows: Vec<(Uuid, Json<MailJob>)> = sqlx::query_as(
                "SELECT id, job FROM mail_outbox ORDER BY created_at, id LIMIT $1 \
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                tx.commit().await?;
                return Ok(total);
            }
            let mut published = Vec::with_capacity(rows.len());
            let mut failure = None;
            for (id, Json(job)) in &rows {
                match publish(&self.jetstream, &self.topology, job).await {
                    Ok(()) => published.push(*id),
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            sqlx::query("DELETE FROM mail_outbox WHERE id = ANY($1)")
                .bind(&published)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            total += published.len();
            let count = u64::try_from(published.len()).unwrap_or(u64::MAX);
            self.record(|| metrics::counter!("twofold_outbox_published_total").increment(count));
            if let Some(error) = failure {
                return Err(error.into());
            }
        }
    }

    /// Logs how far behind the relay is: rows waiting and the age of the oldest.
    pub async fn report_lag(&self) {
        let lag: Result<(i64, f64), _> = sqlx::query_as(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 \
             FROM mail_outbox",
        )
        .fetch_one(&self.pool)
        .await;
        if let Ok((waiting, oldest_seconds)) = lag {
            self.record(|| {
                #[allow(clippy::cast_precision_loss)] // a row count far below 2^52
                metrics::gauge!("twofold_outbox_waiting").set(waiting as f64);
                metrics::gauge!("twofold_outbox_oldest_seconds").set(oldest_seconds);
            });
            if oldest_seconds > LAG_WARNING.as_secs_f64() {
                tracing::warn!(waiting, oldest_seconds, "relay lag");
            } else {
                tracing::info!(waiting, oldest_seconds, "relay lag");
            }
        }
    }
}

/// The current back-off, doubling the next one up to [`MAX_BACKOFF`].
fn next_backoff(backoff: &mut Duration) -> Duration {
    let current = *backoff;
    *backoff = (current * 2).min(MAX_BACKOFF);
    current
}
