//! Executes `User` commands against the event store and returns the events they recorded.
//!
//! cqrs-es's `CqrsFramework::execute` returns `()`, but a login's outcome *is* its events
//! (`LoggedIn`, `SecondFactorRequired`, `LoginFailed`), so this gateway runs the steps itself:
//! load, handle, ask the mail policy for the emails the new facts cause, commit events and mail
//! jobs in one transaction, dispatch to the projections. A commit that loses an
//! optimistic-lock race is retried from a fresh load, so the loser of a double spend gets the
//! domain's real answer (code already used) rather than a conflict.

use std::time::Instant;

use async_trait::async_trait;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventStore, PersistenceError, SerializedEvent};
use cqrs_es::{Aggregate, EventEnvelope, EventStore, Query};
use twofold_domain::user::ThrottledFactor;
use twofold_domain::values::{Email, UserId};
use twofold_domain::{EventMetadata, User, UserCommand, UserEvent, UserServices};

use crate::app::mail_policy::{MailPolicy, MailSecrets};
use crate::app::store::EventRepository;
use crate::app::AppError;
use crate::metrics::Metrics;

/// Commit attempts before a command gives up with `409 concurrency.conflict`.
const MAX_ATTEMPTS: usize = 16;

/// What a command committed.
#[derive(Debug)]
pub struct Committed {
    /// The user the command ran on.
    pub user_id: UserId,
    /// The events it recorded, in order; none when it changed nothing.
    pub events: Vec<UserEvent>,
    /// The user's state after them.
    pub user: User,
}

/// The command side, as the use cases see it.
#[async_trait]
pub trait Users: Send + Sync {
    /// Runs `command` on user `id` and commits its events together with the emails they
    /// cause, built with this request's `secrets`.
    async fn execute(
        &self,
        id: UserId,
        command: UserCommand,
        metadata: &EventMetadata,
        secrets: &MailSecrets,
    ) -> Result<Committed, AppError>;
    /// The current state of user `id`, folded from its events.
    async fn load(&self, id: UserId) -> Result<User, AppError>;
    /// The user who owns `email`, in any letter case.
    async fn find_by_email(&self, email: &Email) -> Result<Option<UserId>, AppError>;
    /// Every event of user `id`, in sequence order, read through the upcasters.
    async fn events(&self, id: UserId) -> Result<Vec<EventEnvelope<User>>, AppError>;
}

/// The gateway over an event repository `R`.
pub struct CommandGateway<R: EventRepository> {
    repository: R,
    store: PersistedEventStore<R, User>,
    mail: MailPolicy,
    queries: Vec<Box<dyn Query<User>>>,
    services: UserServices,
    metrics: Metrics,
}

impl<R: EventRepository> CommandGateway<R> {
    /// A gateway storing through `repository`, deciding emails with `mail` and keeping
    /// `queries` current.
    pub fn new(
        repository: R,
        mail: MailPolicy,
        queries: Vec<Box<dyn Query<User>>>,
        services: UserServices,
    ) -> Self {
        Self {
            store: PersistedEventStore::new_event_store(repository.clone())
                .with_upcasters(twofold_domain::upcasters()),
            repository,
            mail,
            queries,
            services,
            metrics: Metrics::new(),
        }
    }

    /// Records command latency and lockouts into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Security log lines and the lockout counter for factors that this commit locked.
    fn log_lockouts(&self, id: UserId, committed: &[EventEnvelope<User>]) {
        for envelope in committed {
            if let UserEvent::FactorLocked { factor, until, .. } = &envelope.payload {
                tracing::info!(target: "security", user_id = %id, ?factor, %until, "factor locked");
                self.metrics.lockout(factor_label(factor));
            }
        }
    }

    /// Runs the command: load, handle, plan the mail, commit, dispatch; retried on a lost race.
    async fn run(
        &self,
        id: UserId,
        command: UserCommand,
        metadata: &EventMetadata,
        secrets: &MailSecrets,
    ) -> Result<Committed, AppError> {
        let aggregate_id = id.to_string();
        for _ in 0..MAX_ATTEMPTS {
            let mut context = self.store.load_aggregate(&aggregate_id).await?;
            let sink = EventSink::default();
            context
                .aggregate
                .handle(command.clone(), &self.services, &sink)
                .await?;
            let events = sink.collect().await;
            if events.is_empty() {
                return Ok(Committed {
                    user_id: id,
                    events,
                    user: context.aggregate,
                });
            }
            let jobs = self
                .mail
                .jobs(
                    &context.aggregate,
                    &events,
                    secrets,
                    metadata.request_id.as_deref(),
                )
                .map_err(|error| AppError::Internal(Box::new(error)))?;
            let envelopes = envelopes(&aggregate_id, context.current_sequence, events, metadata);
            let serialized = envelopes
                .iter()
                .map(SerializedEvent::try_from)
                .collect::<Result<Vec<_>, _>>()
                .map_err(AppError::from)?;
            match self.repository.commit(&serialized, &jobs).await {
                Ok(()) => {
                    self.log_lockouts(id, &envelopes);
                    for query in &self.queries {
                        query.dispatch(&aggregate_id, &envelopes).await;
                    }
                    return Ok(Committed {
                        user_id: id,
                        events: envelopes
                            .into_iter()
                            .map(|envelope| envelope.payload)
                            .collect(),
                        user: context.aggregate,
                    });
                }
                Err(PersistenceError::OptimisticLockError) => {
                    tracing::debug!(user_id = %id, "command lost a race; retrying");
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(AppError::Conflict)
    }
}

/// The events of one commit, numbered after `last_sequence`, each with the command's metadata.
fn envelopes(
    aggregate_id: &str,
    last_sequence: usize,
    events: Vec<UserEvent>,
    metadata: &EventMetadata,
) -> Vec<EventEnvelope<User>> {
    let metadata = metadata.to_map();
    events
        .into_iter()
        .zip(last_sequence + 1..)
        .map(|(payload, sequence)| EventEnvelope {
            aggregate_id: aggregate_id.to_owned(),
            sequence,
            payload,
            metadata: metadata.clone(),
        })
        .collect()
}

#[async_trait]
impl<R: EventRepository> Users for CommandGateway<R> {
    async fn execute(
        &self,
        id: UserId,
        command: UserCommand,
        metadata: &EventMetadata,
        secrets: &MailSecrets,
    ) -> Result<Committed, AppError> {
        let name = command_name(&command);
        let started = Instant::now();
        let result = self.run(id, command, metadata, secrets).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.code(),
        };
        self.metrics.command(name, outcome, started.elapsed());
        result
    }

    async fn load(&self, id: UserId) -> Result<User, AppError> {
        let context = self.store.load_aggregate(&id.to_string()).await?;
        Ok(context.aggregate)
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<UserId>, AppError> {
        Ok(self.repository.find_user(email).await?)
    }

    async fn events(&self, id: UserId) -> Result<Vec<EventEnvelope<User>>, AppError> {
        Ok(self.store.load_events(&id.to_string()).await?)
    }
}

/// The metric label of a locked factor.
fn factor_label(factor: &ThrottledFactor) -> &'static str {
    match factor {
        ThrottledFactor::Password => "password",
        ThrottledFactor::SecondFactor => "second_factor",
        ThrottledFactor::BackupCode => "backup_code",
    }
}

/// The metric label of a command.
fn command_name(command: &UserCommand) -> &'static str {
    match command {
        UserCommand::SignUp(_) => "sign_up",
        UserCommand::EnableTfa(_) => "enable_tfa",
        UserCommand::LogIn(_) => "log_in",
        UserCommand::VerifyTfaCode(_) => "verify_tfa_code",
        UserCommand::UseBackupCode(_) => "use_backup_code",
        UserCommand::RefreshSession(_) => "refresh_session",
        UserCommand::EndSession(_) => "end_session",
        UserCommand::EndOtherSessions(_) => "end_other_sessions",
        UserCommand::ChangePassword(_) => "change_password",
        UserCommand::RequestPasswordReset(_) => "request_password_reset",
        UserCommand::ResetPassword(_) => "reset_password",
        UserCommand::DisableTfa(_) => "disable_tfa",
        UserCommand::SwitchTfaDevice(_) => "switch_tfa_device",
        UserCommand::RegenerateBackupCodes(_) => "regenerate_backup_codes",
        UserCommand::GrantAdmin => "grant_admin",
        UserCommand::LockAccount => "lock_account",
        UserCommand::UnlockAccount => "unlock_account",
        UserCommand::EndAllSessions => "end_all_sessions",
        UserCommand::ResealSecrets => "reseal_secrets",
        UserCommand::NoteSignUpAttempt => "note_sign_up_attempt",
        UserCommand::RecordAuditRead(_) => "record_audit_read",
    }
}
