//! Executes `User` commands against the event store and returns the events they recorded.
//!
//! cqrs-es's `CqrsFramework::execute` returns `()`, but a login's outcome *is* its events
//! (`LoggedIn`, `SecondFactorRequired`, `LoginFailed`), so this gateway runs the same steps —
//! load, handle, commit, dispatch to the projections — and hands the committed events back.
//! A commit that loses an optimistic-lock race is retried from a fresh load, so the loser of a
//! double spend gets the domain's real answer (code already used) rather than a conflict.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore, Query};
use twofold_domain::user::ThrottledFactor;
use twofold_domain::values::{Email, UserId};
use twofold_domain::{User, UserCommand, UserEvent, UserServices};
use twofold_nats::{MailJob, OUTBOX_METADATA_KEY};

use crate::app::store::EmailIndex;
use crate::http::error::ApiError;
use crate::metrics::Metrics;

/// Commit attempts before a command gives up with `409 concurrency.conflict`.
const MAX_ATTEMPTS: usize = 16;

/// Who asked for a command and in which request: stored as event metadata, never in payloads.
#[derive(Debug, Clone, Default)]
pub struct CommandMetadata {
    /// The `x-request-id` of the HTTP request.
    pub request_id: Option<String>,
    /// `user:<id>`, `anonymous` or `cli`.
    pub actor: String,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// The client's address (the TCP peer).
    pub ip: Option<String>,
}

impl CommandMetadata {
    fn into_map(self) -> HashMap<String, String> {
        let mut map = HashMap::from([("actor".to_owned(), self.actor)]);
        if let Some(request_id) = self.request_id {
            map.insert("request_id".to_owned(), request_id);
        }
        if let Some(user_agent) = self.user_agent {
            map.insert("user_agent".to_owned(), user_agent);
        }
        if let Some(ip) = self.ip {
            map.insert("ip".to_owned(), ip);
        }
        map
    }
}

/// Decides, from the user's new state and the events a command recorded, which emails the
/// command causes. It runs before the commit, so the jobs are stored atomically with the events.
pub type MailPlan<'a> = &'a (dyn Fn(&User, &[UserEvent]) -> Vec<MailJob> + Send + Sync);

/// A plan for commands that send no email.
pub fn no_mail(_: &User, _: &[UserEvent]) -> Vec<MailJob> {
    Vec::new()
}

/// The command side, as the routes see it.
#[async_trait]
pub trait Users: Send + Sync {
    /// Runs `command` on user `id`, commits its events together with the mail jobs `mail`
    /// plans for them, and returns the events.
    async fn execute(
        &self,
        id: UserId,
        command: UserCommand,
        metadata: CommandMetadata,
        mail: MailPlan<'_>,
    ) -> Result<Vec<UserEvent>, ApiError>;
    /// The current state of user `id`, folded from its events.
    async fn load(&self, id: UserId) -> Result<User, ApiError>;
    /// The user who owns `email`, in any letter case.
    async fn find_by_email(&self, email: &Email) -> Result<Option<UserId>, ApiError>;
}

/// The gateway over an event repository `R`.
pub struct CommandGateway<R: PersistedEventRepository> {
    store: PersistedEventStore<R, User>,
    index: Arc<dyn EmailIndex>,
    queries: Vec<Box<dyn Query<User>>>,
    services: UserServices,
    metrics: Metrics,
}

impl<R: PersistedEventRepository> CommandGateway<R> {
    /// A gateway storing through `repository`, finding emails in `index` and keeping
    /// `queries` current.
    pub fn new(
        repository: R,
        index: Arc<dyn EmailIndex>,
        queries: Vec<Box<dyn Query<User>>>,
        services: UserServices,
    ) -> Self {
        Self {
            store: PersistedEventStore::new_event_store(repository)
                .with_upcasters(twofold_domain::upcasters()),
            index,
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
    fn log_lockouts(&self, id: UserId, committed: &[cqrs_es::EventEnvelope<User>]) {
        for envelope in committed {
            if let UserEvent::FactorLocked { factor, until, .. } = &envelope.payload {
                tracing::info!(target: "security", user_id = %id, ?factor, %until, "factor locked");
                self.metrics.lockout(factor_label(factor));
            }
        }
    }

    /// Runs the command: load, handle, commit, dispatch; retried on a lost race.
    async fn run(
        &self,
        id: UserId,
        command: UserCommand,
        metadata: CommandMetadata,
        mail: MailPlan<'_>,
    ) -> Result<Vec<UserEvent>, ApiError> {
        let aggregate_id = id.to_string();
        let metadata = metadata.into_map();
        for _ in 0..MAX_ATTEMPTS {
            let mut context = self.store.load_aggregate(&aggregate_id).await?;
            let sink = EventSink::default();
            context
                .aggregate()
                .handle(command.clone(), &self.services, &sink)
                .await
                .map_err(ApiError::Domain)?;
            let events = sink.collect().await;
            let jobs = mail(context.aggregate(), &events);
            let mut metadata = metadata.clone();
            if !jobs.is_empty() {
                let jobs = serde_json::to_string(&jobs)
                    .map_err(|error| ApiError::Internal(Box::new(error)))?;
                metadata.insert(OUTBOX_METADATA_KEY.to_owned(), jobs);
            }
            match self.store.commit(events, context, metadata).await {
                Ok(committed) => {
                    self.log_lockouts(id, &committed);
                    if !committed.is_empty() {
                        for query in &self.queries {
                            query.dispatch(&aggregate_id, &committed).await;
                        }
                    }
                    return Ok(committed
                        .into_iter()
                        .map(|envelope| envelope.payload)
                        .collect());
                }
                Err(AggregateError::AggregateConflict) => {
                    tracing::debug!(user_id = %id, "command lost a race; retrying");
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(ApiError::Conflict)
    }
}

#[async_trait]
impl<R: PersistedEventRepository + 'static> Users for CommandGateway<R> {
    async fn execute(
        &self,
        id: UserId,
        command: UserCommand,
        metadata: CommandMetadata,
        mail: MailPlan<'_>,
    ) -> Result<Vec<UserEvent>, ApiError> {
        let name = command_name(&command);
        let started = Instant::now();
        let result = self.run(id, command, metadata, mail).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.status_and_code().1,
        };
        self.metrics.command(name, outcome, started.elapsed());
        result
    }

    async fn load(&self, id: UserId) -> Result<User, ApiError> {
        let mut context = self.store.load_aggregate(&id.to_string()).await?;
        Ok(std::mem::take(context.aggregate()))
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<UserId>, ApiError> {
        Ok(self.index.find_user(email).await?)
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
    }
}
