//! Mail from the API's side: building jobs (codes sealed for the mailer), queueing jobs that
//! no command causes, and task status. On the real stack jobs go through the Postgres outbox
//! to JetStream and the mailer; in the embedded mode an in-process worker sends them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::Context;
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use twofold_domain::values::{DeviceType, Email, UserId};
use twofold_mailer::Sender;
use twofold_nats::{Mail, MailJob, MailSealer, TaskState, TaskStatus, Topology};
use uuid::Uuid;

use crate::app::AppError;
use crate::metrics::Metrics;

/// Builds mail jobs, sealing the codes they carry.
pub struct MailFactory {
    sealer: MailSealer,
}

impl MailFactory {
    /// A factory sealing with `sealer`.
    pub fn new(sealer: MailSealer) -> Self {
        Self { sealer }
    }

    /// The jobs for one recipient, caused by the request `request_id`.
    pub fn to<'a>(
        &'a self,
        owner: UserId,
        to: &'a Email,
        request_id: Option<&'a str>,
    ) -> Recipient<'a> {
        Recipient {
            sealer: &self.sealer,
            owner,
            to,
            request_id,
        }
    }
}

/// Builds the jobs of one recipient. Codes are sealed bound to the recipient and to their job,
/// so a job's code cannot be moved into an email to someone else, nor resent in another job.
pub struct Recipient<'a> {
    sealer: &'a MailSealer,
    owner: UserId,
    to: &'a Email,
    request_id: Option<&'a str>,
}

impl Recipient<'_> {
    fn job(&self, mail: Mail) -> MailJob {
        self.job_with_id(Uuid::new_v4(), mail)
    }

    fn job_with_id(&self, id: Uuid, mail: Mail) -> MailJob {
        MailJob {
            id,
            owner: self.owner,
            to: self.to.clone(),
            request_id: self.request_id.map(str::to_owned),
            mail,
        }
    }

    /// The backup codes of an enrolment or a regeneration.
    pub fn backup_codes(&self, codes: &[SecretString]) -> MailJob {
        let codes: Vec<String> = codes
            .iter()
            .map(|code| code.expose_secret().to_owned())
            .collect();
        let id = Uuid::new_v4();
        let codes = self.sealer.seal_codes(&codes, self.to.as_str(), id);
        self.job_with_id(id, Mail::BackupCodes { codes })
    }

    /// A login code for an email second factor.
    pub fn login_code(&self, code: &SecretString) -> MailJob {
        let valid_minutes =
            u32::try_from(twofold_domain::user::EMAIL_CODE_TTL.whole_minutes()).unwrap_or(10);
        let id = Uuid::new_v4();
        let code = self.sealer.seal(code.expose_secret(), self.to.as_str(), id);
        self.job_with_id(
            id,
            Mail::LoginCode {
                code,
                valid_minutes,
            },
        )
    }

    /// A confirmation code, sealed for this job.
    pub fn confirmation_code(&self, code: &SecretString) -> MailJob {
        let valid_minutes =
            u32::try_from(twofold_domain::user::CONFIRMATION_CODE_TTL.whole_minutes())
                .unwrap_or(10);
        let id = Uuid::new_v4();
        let code = self.sealer.seal(code.expose_secret(), self.to.as_str(), id);
        self.job_with_id(
            id,
            Mail::ConfirmationCode {
                code,
                valid_minutes,
            },
        )
    }

    /// The security notice that two-factor authentication was turned on.
    pub fn tfa_enabled(&self, device_type: DeviceType) -> MailJob {
        self.job(Mail::TfaEnabled { device_type })
    }

    /// The security notice that a passkey was added.
    pub fn passkey_added(&self) -> MailJob {
        self.job(Mail::PasskeyAdded)
    }

    /// The security notice that a passkey was removed.
    pub fn passkey_removed(&self) -> MailJob {
        self.job(Mail::PasskeyRemoved)
    }

    /// The security notice that a passkey's sign counter went back.
    pub fn passkey_counter_regressed(&self) -> MailJob {
        self.job(Mail::PasskeyCounterRegressed)
    }

    /// The security notice that two-factor authentication was turned off.
    pub fn tfa_disabled(&self) -> MailJob {
        self.job(Mail::TfaDisabled)
    }

    /// The notice that someone tried to sign up with the owner's address.
    pub fn sign_up_attempted(&self) -> MailJob {
        self.job(Mail::SignUpAttempted)
    }

    /// The security notice that the password was changed (or `reset`).
    pub fn password_changed(&self, reset: bool) -> MailJob {
        self.job(Mail::PasswordChanged { reset })
    }

    /// The security notice that a backup code was used.
    pub fn backup_code_used(&self, remaining: usize) -> MailJob {
        self.job(Mail::BackupCodeUsed { remaining })
    }

    /// A password reset token.
    pub fn password_reset(&self, token: &SecretString) -> MailJob {
        let valid_minutes =
            u32::try_from(twofold_domain::user::RESET_TOKEN_TTL.whole_minutes()).unwrap_or(15);
        let id = Uuid::new_v4();
        let token = self
            .sealer
            .seal(token.expose_secret(), self.to.as_str(), id);
        self.job_with_id(
            id,
            Mail::PasswordReset {
                token,
                valid_minutes,
            },
        )
    }

    /// A test email.
    pub fn test(&self) -> MailJob {
        self.job(Mail::Test)
    }
}

/// Queues jobs that no command causes, and reports task states.
#[async_trait]
pub trait MailQueue: Send + Sync {
    /// Queues `job`.
    async fn enqueue(&self, job: MailJob) -> Result<(), AppError>;
    /// The owner and state of task `id`, if it exists.
    async fn status(&self, id: Uuid) -> Result<Option<(UserId, TaskState)>, AppError>;
}

/// The real stack: the outbox table, and the state the mailer writes to its key-value bucket.
pub struct OutboxMailQueue {
    pool: PgPool,
    /// Where the mailer records task states; `None` for a tool that only queues.
    statuses: Option<(Context, Topology)>,
}

impl OutboxMailQueue {
    /// A queue over `pool`'s outbox, reading states from `jetstream`.
    pub fn new(pool: PgPool, jetstream: Context, topology: Topology) -> Self {
        Self {
            pool,
            statuses: Some((jetstream, topology)),
        }
    }

    /// A queue over `pool`'s outbox that reads no states (every task is `Pending`): for the
    /// command line, which queues but never reports.
    pub fn queue_only(pool: PgPool) -> Self {
        Self {
            pool,
            statuses: None,
        }
    }

    /// The state the mailer recorded, or `Pending` if it recorded none (or NATS is down).
    async fn state(&self, id: Uuid) -> TaskState {
        let recorded = async {
            let (jetstream, topology) = self.statuses.as_ref()?;
            let bucket = jetstream
                .get_key_value(topology.status_bucket())
                .await
                .ok()?;
            let value = bucket.get(id.to_string()).await.ok()??;
            serde_json::from_slice::<TaskStatus>(&value).ok()
        };
        recorded
            .await
            .map_or(TaskState::Pending, |status| status.state)
    }
}

#[async_trait]
impl MailQueue for OutboxMailQueue {
    async fn enqueue(&self, job: MailJob) -> Result<(), AppError> {
        let mut connection = self.pool.acquire().await.map_err(AppError::database)?;
        twofold_nats::enqueue(&mut connection, &job)
            .await
            .map_err(AppError::database)
    }

    async fn status(&self, id: Uuid) -> Result<Option<(UserId, TaskState)>, AppError> {
        let owner: Option<Uuid> = sqlx::query_scalar("SELECT owner FROM mail_tasks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(AppError::database)?;
        match owner {
            Some(owner) => Ok(Some((UserId::from_uuid(owner), self.state(id).await))),
            None => Ok(None),
        }
    }
}

/// Task states kept in the embedded mode; the oldest are forgotten first.
const TASKS_KEPT: usize = 10_000;

#[derive(Default)]
struct Tasks {
    by_id: HashMap<Uuid, (UserId, TaskState)>,
    order: VecDeque<Uuid>,
}

impl Tasks {
    fn set(&mut self, id: Uuid, owner: UserId, state: TaskState) {
        if self.by_id.insert(id, (owner, state)).is_none() {
            self.order.push_back(id);
            while self.order.len() > TASKS_KEPT {
                if let Some(oldest) = self.order.pop_front() {
                    self.by_id.remove(&oldest);
                }
            }
        }
    }
}

/// The embedded mode: a worker in this process sends each job through the mailer's `Sender`.
pub struct InProcessMailQueue {
    jobs: tokio::sync::mpsc::UnboundedSender<MailJob>,
    tasks: Arc<Mutex<Tasks>>,
}

impl InProcessMailQueue {
    /// Starts the worker; jobs sent on the returned channel (by the event repository) are
    /// delivered like those enqueued here, and counted in `metrics`.
    pub fn start(
        sender: Sender,
        sealer: MailSealer,
        metrics: Metrics,
    ) -> (Self, tokio::sync::mpsc::UnboundedSender<MailJob>) {
        let (jobs, mut receiver) = tokio::sync::mpsc::unbounded_channel::<MailJob>();
        let tasks: Arc<Mutex<Tasks>> = Arc::default();
        let worker_tasks = Arc::clone(&tasks);
        tokio::spawn(async move {
            while let Some(job) = receiver.recv().await {
                let owner = job.owner;
                record(&worker_tasks, job.id, owner, TaskState::Pending);
                let template = job.mail.template();
                let state = match sender.send(&job, &sealer).await {
                    Ok(()) => {
                        metrics.email("sent");
                        tracing::info!(job_id = %job.id, template, "email sent");
                        TaskState::Success
                    }
                    Err(error) => {
                        metrics.email("failed");
                        tracing::error!(job_id = %job.id, template, error = %error, "email not sent");
                        TaskState::Failure
                    }
                };
                record(&worker_tasks, job.id, owner, state);
            }
        });
        (
            Self {
                jobs: jobs.clone(),
                tasks,
            },
            jobs,
        )
    }
}

fn record(tasks: &Mutex<Tasks>, id: Uuid, owner: UserId, state: TaskState) {
    if let Ok(mut tasks) = tasks.lock() {
        tasks.set(id, owner, state);
    }
}

#[async_trait]
impl MailQueue for InProcessMailQueue {
    async fn enqueue(&self, job: MailJob) -> Result<(), AppError> {
        record(&self.tasks, job.id, job.owner, TaskState::Pending);
        self.jobs
            .send(job)
            .map_err(|error| AppError::Internal(Box::new(error)))
    }

    async fn status(&self, id: Uuid) -> Result<Option<(UserId, TaskState)>, AppError> {
        Ok(self
            .tasks
            .lock()
            .ok()
            .and_then(|tasks| tasks.by_id.get(&id).copied()))
    }
}
