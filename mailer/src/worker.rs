//! The JetStream mailer: pulls mail jobs from the shared durable consumer, sends them, and
//! settles each one: acknowledged once its transport has it, retried with exponential
//! back-off when sending fails, and dead-lettered after the last delivery JetStream allows
//! (or at once when retrying cannot help). Every mailer pulls from the same consumer, so
//! JetStream hands each job to one of them at a time.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{kv, AckKind, Context, Message};
use futures::future::FusedFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use secrecy::ExposeSecret;
use twofold_nats::{Mail, MailJob, MailSealer, TaskState, TaskStatus, Topology};

use crate::sender::{SendError, Sender};
use crate::settings::MailerSettings;

/// How long one pull request waits for jobs. It bounds how long shutdown waits for the
/// request in flight; jobs that arrive meanwhile are handed back at once.
const PULL_WAIT: Duration = Duration::from_secs(1);
/// Back-off while NATS is unreachable or the topology cannot be declared.
const SETUP_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const SETUP_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The longest one send may take, progress acknowledgements included.
const SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts to move a job to the dead-letter stream before giving up on it.
const DEAD_LETTER_ATTEMPTS: u32 = 3;
/// The header of a dead-lettered job saying why it died (no address, code or server text).
pub const FAILURE_HEADER: &str = "Twofold-Failure";
/// The last token of the dead-letter subject of a payload that is not a mail job.
pub const UNPARSEABLE: &str = "unparseable";

/// Counters of one mailer, readable while it runs.
#[derive(Debug, Default)]
pub struct MailerStats {
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
}

impl MailerStats {
    /// Emails handed to the transport.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Failed attempts: every retried or dead-lettered delivery, unparseable payloads
    /// included.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Failed attempts handed back to JetStream for a later retry.
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Jobs given up on and moved to the dead-letter stream.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A mailer, before it runs: take [`Mailer::stats`] to watch it, then [`Mailer::run`] it.
pub struct Mailer {
    settings: MailerSettings,
    stats: Arc<MailerStats>,
}

impl Mailer {
    /// A mailer with these settings.
    pub fn new(settings: MailerSettings) -> Self {
        Self {
            settings,
            stats: Arc::default(),
        }
    }

    /// Its counters, updated while it runs.
    pub fn stats(&self) -> Arc<MailerStats> {
        Arc::clone(&self.stats)
    }

    /// Sends mail jobs until `shutdown` resolves. It starts while NATS is down and keeps
    /// trying (connecting, declaring the streams) until NATS is there. On shutdown it stops
    /// pulling, hands back jobs not yet started, finishes those being sent, and returns its
    /// counters. Fails only on settings that cannot work (a From that does not parse, an
    /// unusable mail directory, a malformed NATS URL).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<Arc<MailerStats>> {
        let settings = self.settings;
        let sender = Sender::new(&settings.transport, &settings.from)?;
        let client = async_nats::ConnectOptions::new()
            .name("twofold-mailer")
            .retry_on_initial_connect()
            .connect(settings.nats_url.expose_secret())
            .await
            .context("cannot use NATS_URL")?;
        tracing::info!(
            transport = %settings.transport,
            stream = %settings.topology.stream(),
            consumer = %settings.topology.consumer(),
            "mailer started"
        );
        let worker = Worker {
            jetstream: async_nats::jetstream::new(client),
            topology: settings.topology,
            sealer: MailSealer::new(settings.mail_key).with_retired(settings.retired_mail_keys),
            sender,
            stats: Arc::clone(&self.stats),
            retry_base: settings.retry_base,
            retry_max: settings.retry_max,
            concurrency: settings.concurrency.max(1),
        };
        worker.run(shutdown).await;
        tracing::info!(
            sent = self.stats.sent(),
            failed = self.stats.failed(),
            retried = self.stats.retried(),
            dead_lettered = self.stats.dead_lettered(),
            "mailer stopped"
        );
        Ok(self.stats)
    }
}

/// Runs a mailer with `settings` until `shutdown` resolves; see [`Mailer::run`].
pub async fn run(
    settings: MailerSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<Arc<MailerStats>> {
    Mailer::new(settings).run(shutdown).await
}

/// The delay before retrying a job whose `delivered`-th attempt failed:
/// `base * 2^(delivered - 1)`, at most `max`.
pub fn retry_delay(base: Duration, max: Duration, delivered: i64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    base.saturating_mul(1u32 << doublings).min(max)
}

struct Worker {
    jetstream: Context,
    topology: Topology,
    sealer: MailSealer,
    sender: Sender,
    stats: Arc<MailerStats>,
    retry_base: Duration,
    retry_max: Duration,
    concurrency: usize,
}

/// What a job's handling needs from the consumer it came from.
struct Lease {
    /// The status bucket.
    status: kv::Store,
    /// The consumer's last delivery: a failure at it is final.
    max_deliver: i64,
    /// How often a job being sent tells JetStream it is still being worked on (a third of the
    /// ack wait), so a slow SMTP server does not get it redelivered to another mailer.
    progress_every: Duration,
}

impl Worker {
    async fn run(&self, shutdown: impl Future<Output = ()> + Send) {
        let shutdown = shutdown.fuse();
        tokio::pin!(shutdown);
        let mut in_flight = FuturesUnordered::new();
        let mut backoff = SETUP_BACKOFF_FIRST;
        'setup: while !shutdown.is_terminated() {
            let setup = tokio::select! {
                () = &mut shutdown => break,
                setup = self.setup() => setup,
            };
            let (consumer, lease) = match setup {
                Ok(ready) => ready,
                Err(error) => {
                    tracing::warn!(error = %error, retry_in_ms = backoff.as_millis(), "mailer: NATS not ready");
                    tokio::select! {
                        () = &mut shutdown => {}
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(SETUP_BACKOFF_MAX);
                    continue;
                }
            };
            tracing::info!("mailer: consuming mail jobs");
            while !shutdown.is_terminated() {
                let room = self.concurrency.saturating_sub(in_flight.len());
                if room == 0 {
                    tokio::select! {
                        () = &mut shutdown => {}
                        _ = in_flight.next() => {}
                    }
                    continue;
                }
                let batch = consumer
                    .batch()
                    .max_messages(room)
                    .expires(PULL_WAIT)
                    .messages()
                    .await;
                let mut batch = match batch {
                    Ok(batch) => batch,
                    Err(error) => {
                        tracing::warn!(error = %error, "mailer: pulling jobs failed");
                        while in_flight.next().await.is_some() {}
                        continue 'setup;
                    }
                };
                // Until the pull request ends (full or expired): start each job as it
                // arrives, or hand it back at once once shutting down.
                loop {
                    tokio::select! {
                        biased;
                        () = &mut shutdown => {
                            tracing::info!(in_flight = in_flight.len(), "mailer: shutting down");
                        }
                        Some(()) = in_flight.next() => {}
                        next = batch.next() => match next {
                            None => break,
                            Some(Ok(message)) if shutdown.is_terminated() => hand_back(&message).await,
                            Some(Ok(message)) => {
                                let lease = Arc::clone(&lease);
                                in_flight.push(async move { self.handle(message, &lease).await });
                            }
                            Some(Err(error)) => {
                                tracing::warn!(error = %error, "mailer: pull request failed");
                                while in_flight.next().await.is_some() {}
                                continue 'setup;
                            }
                        },
                    }
                }
                backoff = SETUP_BACKOFF_FIRST;
            }
        }
        while in_flight.next().await.is_some() {}
    }

    /// Declares the streams and gets the shared consumer and the status bucket.
    async fn setup(&self) -> Result<(PullConsumer, Arc<Lease>), async_nats::Error> {
        self.topology.declare(&self.jetstream).await?;
        let consumer: PullConsumer = self
            .jetstream
            .get_stream(self.topology.stream())
            .await?
            .get_or_create_consumer(&self.topology.consumer(), self.topology.consumer_config())
            .await?;
        let status = self.topology.status_store(&self.jetstream).await?;
        // The consumer as it is on the server: it may predate this build's configuration.
        let config = &consumer.cached_info().config;
        let lease = Lease {
            status,
            max_deliver: if config.max_deliver > 0 {
                config.max_deliver
            } else {
                i64::MAX
            },
            progress_every: (config.ack_wait / 3).max(Duration::from_secs(1)),
        };
        Ok((consumer, Arc::new(lease)))
    }

    /// Sends one job and settles its message.
    async fn handle(&self, message: Message, lease: &Lease) {
        let delivered = message.info().map_or(1, |info| info.delivered);
        let job: MailJob = match serde_json::from_slice(&message.payload) {
            Ok(job) => job,
            Err(error) => return self.dead_letter_unparseable(&message, lease, &error).await,
        };
        let template = job.mail.template();
        let request_id = job.request_id.as_deref().unwrap_or("-");
        let attempts = u32::try_from(delivered).unwrap_or(u32::MAX);
        let send = self.sender.send(&job, &self.sealer);
        match send_with_progress(&message, lease.progress_every, send).await {
            Ok(()) => {
                MailerStats::count(&self.stats.sent);
                count_email("sent");
                if let Err(error) = message.double_ack().await {
                    tracing::warn!(job_id = %job.id, template, error = %error,
                        "mailer: sent, but the acknowledgement failed: JetStream may redeliver it");
                }
                put_status(&lease.status, &job, TaskState::Success, attempts).await;
                tracing::info!(job_id = %job.id, template, request_id, outcome = "sent", attempts,
                    "mail job done");
            }
            Err(error) if error.is_permanent() || delivered >= lease.max_deliver => {
                MailerStats::count(&self.stats.failed);
                self.dead_letter(&message, &job, &error, delivered, lease)
                    .await;
                tracing::error!(job_id = %job.id, template, request_id, outcome = "dead-lettered",
                    attempts, permanent = error.is_permanent(), error = %error,
                    "mail job failed for good and was dead-lettered");
            }
            Err(error) => {
                MailerStats::count(&self.stats.failed);
                MailerStats::count(&self.stats.retried);
                count_email("retried");
                let delay = retry_delay(self.retry_base, self.retry_max, delivered);
                put_status(&lease.status, &job, TaskState::Pending, attempts).await;
                if let Err(nak_error) = message.ack_with(AckKind::Nak(Some(delay))).await {
                    tracing::warn!(job_id = %job.id, error = %nak_error,
                        "mailer: cannot hand the job back; JetStream redelivers it after the ack wait");
                }
                tracing::warn!(job_id = %job.id, template, request_id, outcome = "retry", attempts,
                    retry_in_ms = delay.as_millis(), error = %error, "mail job failed, will retry");
            }
        }
    }

    /// Moves `job` to the dead-letter stream, ends its delivery and records the failure.
    async fn dead_letter(
        &self,
        message: &Message,
        job: &MailJob,
        error: &SendError,
        delivered: i64,
        lease: &Lease,
    ) {
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .message_id(format!("{}-dead", job.id))
            .header(FAILURE_HEADER, error.to_string().as_str());
        if self
            .publish_dead_letter(self.topology.dead_letter_subject(&job.mail), publish)
            .await
        {
            MailerStats::count(&self.stats.dead_lettered);
            count_email("dead_lettered");
            terminate(message).await;
            let attempts = u32::try_from(delivered).unwrap_or(u32::MAX);
            put_status(&lease.status, job, TaskState::Failure, attempts).await;
        } else if delivered < lease.max_deliver {
            // JetStream still redelivers it: the next attempt will try again.
            let _ = message.ack_with(AckKind::Nak(Some(self.retry_base))).await;
        } else {
            tracing::error!(job_id = %job.id,
                "mailer: cannot dead-letter the job; it stays unacknowledged in the mail stream");
        }
    }

    /// Moves a payload that is not a mail job to the dead-letter stream. The parse error's
    /// text is not logged: it may quote the payload.
    async fn dead_letter_unparseable(
        &self,
        message: &Message,
        lease: &Lease,
        error: &serde_json::Error,
    ) {
        MailerStats::count(&self.stats.failed);
        let (stream_sequence, delivered) = message
            .info()
            .map_or((0, 1), |info| (info.stream_sequence, info.delivered));
        let reason = format!(
            "not a mail job ({:?} error at line {} column {})",
            error.classify(),
            error.line(),
            error.column()
        );
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .message_id(format!("{}-{stream_sequence}-dead", self.topology.stream()))
            .header(FAILURE_HEADER, reason.as_str());
        if self
            .publish_dead_letter(unparseable_subject(&self.topology), publish)
            .await
        {
            MailerStats::count(&self.stats.dead_lettered);
            count_email("dead_lettered");
            terminate(message).await;
            tracing::error!(stream_sequence, subject = %message.subject, reason,
                "mailer: dead-lettered a payload that is not a mail job");
        } else if delivered < lease.max_deliver {
            let _ = message.ack_with(AckKind::Nak(Some(self.retry_base))).await;
        }
    }

    /// Publishes to the dead-letter stream, trying a few times; whether it got there.
    async fn publish_dead_letter(&self, subject: String, publish: PublishMessage) -> bool {
        for attempt in 1..=DEAD_LETTER_ATTEMPTS {
            let stored = match self
                .jetstream
                .send_publish(subject.clone(), publish.clone())
                .await
            {
                Ok(acknowledgement) => acknowledgement.await.map(|_| ()).map_err(Into::into),
                Err(error) => Err(async_nats::Error::from(error)),
            };
            match stored {
                Ok(()) => return true,
                Err(error) => {
                    tracing::warn!(attempt, error = %error, "mailer: dead-lettering failed");
                    tokio::time::sleep(SETUP_BACKOFF_FIRST * 2u32.pow(attempt)).await;
                }
            }
        }
        false
    }
}

/// `<prefix>.mail_dead.unparseable`, next to the per-template dead-letter subjects.
fn unparseable_subject(topology: &Topology) -> String {
    let test = topology.dead_letter_subject(&Mail::Test);
    let prefix = test
        .strip_suffix(Mail::Test.template())
        .unwrap_or(test.as_str());
    format!("{prefix}{UNPARSEABLE}")
}

/// Runs `send`, telling JetStream every `progress_every` that the job is still being
/// worked on, and gives up after [`SEND_TIMEOUT`].
async fn send_with_progress(
    message: &Message,
    progress_every: Duration,
    send: impl Future<Output = Result<(), SendError>>,
) -> Result<(), SendError> {
    let send = tokio::time::timeout(SEND_TIMEOUT, send);
    tokio::pin!(send);
    let mut progress = tokio::time::interval(progress_every);
    progress.tick().await;
    loop {
        tokio::select! {
            result = &mut send => {
                return result.unwrap_or(Err(SendError::Timeout(SEND_TIMEOUT)));
            }
            _ = progress.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

/// Hands a job not yet started back to JetStream for another mailer.
async fn hand_back(message: &Message) {
    if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
        tracing::warn!(error = %error, "mailer: cannot hand a job back; it is redelivered after the ack wait");
    }
}

/// Ends a dead-lettered job's delivery, so JetStream neither redelivers nor keeps it.
async fn terminate(message: &Message) {
    if let Err(error) = message.double_ack_with(AckKind::Term).await {
        tracing::warn!(error = %error, "mailer: cannot terminate a dead-lettered job");
    }
}

/// Records a job's state in the status bucket (`/tasks/taskstatus` reads it).
async fn put_status(status: &kv::Store, job: &MailJob, state: TaskState, attempts: u32) {
    let value = TaskStatus { state, attempts };
    let stored = match serde_json::to_vec(&value) {
        Ok(json) => status
            .put(job.id.to_string(), json.into())
            .await
            .map(|_| ())
            .map_err(async_nats::Error::from),
        Err(error) => Err(error.into()),
    };
    if let Err(error) = stored {
        tracing::warn!(job_id = %job.id, ?state, error = %error, "mailer: cannot record the job's status");
    }
}

/// Counts a settled job in `twofold_emails_total{outcome}` (`sent`, `retried`,
/// `dead_lettered`) on the global metrics recorder, which the binary serves when
/// `TWOFOLD_MAILER_METRICS_ADDR` is set.
fn count_email(outcome: &'static str) {
    metrics::counter!("twofold_emails_total", "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_delay_doubles_from_the_base_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let delays: Vec<u128> = (1..=6)
            .map(|delivered| retry_delay(base, max, delivered).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(retry_delay(base, max, 0), base);
        assert_eq!(retry_delay(base, Duration::MAX, i64::MAX), base * (1 << 30));
    }

    #[test]
    fn unparseable_payloads_go_next_to_the_template_dead_letters() {
        let topology = Topology::new("it-7").unwrap();
        assert_eq!(unparseable_subject(&topology), "it-7.mail_dead.unparseable");
    }
}
