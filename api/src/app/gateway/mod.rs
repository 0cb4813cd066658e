//! Executes `User` commands against the event store and returns the events they recorded.
//!
//! cqrs-es's `CqrsFramework::execute` returns `()`, but a login's outcome *is* its events
//! (`LoggedIn`, `SecondFactorRequired`, `LoginFailed`), so this gateway runs the steps itself:
//! load, handle, ask the mail policy for the emails the new facts cause, commit events and mail
//! jobs in one transaction (with the views' changes where the store can make them there),
//! dispatch to the projections whose change it did not make. A commit that loses an
//! optimistic-lock race is retried from a fresh load, so the loser of a double spend gets the
//! domain's real answer (code already used) rather than a conflict.
//!
//! A command on a user whom a recent command of this instance left behind starts from that
//! state instead of a load ([`recent`] says why that never changes an answer).

mod recent;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistenceError, SerializedEvent};
use cqrs_es::{Aggregate, EventEnvelope};
use secrecy::{ExposeSecret, SecretString};
use twofold_domain::services::{HasherError, PasswordHasher};
use twofold_domain::user::{ThrottledFactor, SNAPSHOT_VERSION};
use twofold_domain::values::SealedSecret;
use twofold_domain::values::{Email, UserId};
use twofold_domain::values::{NewPassword, PasswordHash};
use twofold_domain::{EventMetadata, User, UserCommand, UserEvent, UserServices};
use twofold_projections::log::{envelope, Upcasters};
use twofold_projections::personal::{strip_personal_metadata, DataKey, KeyRing};
use twofold_projections::CommitQuery;
use zeroize::Zeroizing;

use crate::app::mail_policy::{MailPolicy, MailSecrets};
use crate::app::store::{
    email_index_input, Commit, EmailClaim, EventRepository, PersonalResealed, Snapshot,
    StoredCommit, StoredUser, UserEvents,
};
use crate::app::views::upcasters;
use crate::app::AppError;
use crate::metrics::Metrics;
use recent::RecentUsers;

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
    /// The user who owns `email`, read for a command (`None` when no account has the
    /// address): [`Self::execute_found`] runs one on them without reading them again.
    async fn find_for_command(&self, email: &Email) -> Result<Option<FoundUser>, AppError>;
    /// [`Self::execute`] on a user [`Self::find_for_command`] found, starting from what it
    /// read. A commit that loses a race is retried from a fresh read, as always.
    async fn execute_found(
        &self,
        user: FoundUser,
        command: UserCommand,
        metadata: &EventMetadata,
        secrets: &MailSecrets,
    ) -> Result<Committed, AppError>;
    /// Every event of user `id`, in sequence order, read through the upcasters.
    async fn events(&self, id: UserId) -> Result<Vec<EventEnvelope<User>>, AppError>;
    /// After a sealing-key rotation: moves user `id`'s data key and address reservation to the
    /// current sealing key.
    async fn reseal_personal_data(&self, id: UserId) -> Result<PersonalResealed, AppError>;
}

/// A user found by address and read for a command ([`Users::find_for_command`]).
pub struct FoundUser {
    id: UserId,
    stored: StoredUser,
    /// When the read began: the command's latency counts it.
    started: Instant,
}

impl FoundUser {
    /// The user's id.
    pub fn id(&self) -> UserId {
        self.id
    }
}

/// A snapshot is kept after this many events since the last one: a user is then loaded from
/// a snapshot and fewer events than this, whatever the length of their history.
///
/// Each command reads the snapshot and the events after it, each row decoded and folded; a
/// snapshot costs the commit that keeps it one more row written in the events' statement.
/// Refreshes (one event each) on Postgres cost ~15% less CPU at 8 than at 32 (four pairs of
/// benchmark runs alternated; 4 gave no more than 8, 16 less): see bench/README.md.
pub const SNAPSHOT_EVERY: usize = 8;

/// A user as loaded for a command, or as a commit left them.
#[derive(Clone)]
struct Loaded {
    user: User,
    /// The sequence of their last event.
    sequence: usize,
    /// The sequence the snapshot it was loaded from was taken at (0 for none).
    snapshot_sequence: usize,
    /// Their data key, read with the events: it seals what the command adds.
    keys: KeyRing,
    /// The chain digest of their last event, where the store keeps one.
    chain_head: Option<String>,
}

/// The gateway over an event repository `R`.
pub struct CommandGateway<R: EventRepository> {
    repository: R,
    upcasters: Upcasters,
    snapshot_every: usize,
    mail: MailPolicy,
    queries: Vec<Box<dyn CommitQuery>>,
    services: UserServices,
    metrics: Metrics,
    recent: Arc<RecentUsers>,
}

impl<R: EventRepository> CommandGateway<R> {
    /// A gateway storing through `repository`, deciding emails with `mail` and keeping
    /// `queries` current (in the commit where they can be, see [`CommitQuery`]).
    pub fn new(
        repository: R,
        mail: MailPolicy,
        queries: Vec<Box<dyn CommitQuery>>,
        services: UserServices,
    ) -> Self {
        Self {
            repository,
            upcasters: upcasters(),
            snapshot_every: SNAPSHOT_EVERY,
            mail,
            queries,
            services,
            metrics: Metrics::new(),
            recent: RecentUsers::start(Duration::ZERO),
        }
    }

    /// Keeps the users that commands leave for `ttl`, so that the next command on one of them
    /// within it starts there instead of loading them (see [`recent`]). Without it, or with
    /// zero, none is kept and every command loads its user.
    pub fn with_recent_users_for(mut self, ttl: Duration) -> Self {
        self.recent = RecentUsers::start(ttl);
        self
    }

    /// Keeps a snapshot after `events` events since the last one instead of
    /// [`SNAPSHOT_EVERY`] (tests exercise snapshots on short histories with this).
    pub fn with_snapshot_every(mut self, events: usize) -> Self {
        self.snapshot_every = events.max(1);
        self
    }

    /// Loads user `aggregate_id`: the newest snapshot that can be trusted and is of the
    /// current shape, then the events after it, through the upcasters. Without one, every
    /// event.
    async fn load_user(&self, aggregate_id: &str) -> Result<Loaded, AppError> {
        let stored = self.repository.load(aggregate_id).await?;
        self.fold_user(aggregate_id, stored).await
    }

    /// Folds user `aggregate_id` as read: their snapshot, if of the current shape, then the
    /// events after it.
    async fn fold_user(&self, aggregate_id: &str, stored: StoredUser) -> Result<Loaded, AppError> {
        let StoredUser { snapshot, tail } = stored;
        let kept = snapshot.is_some();
        let usable = snapshot
            .filter(|snapshot| snapshot.state_version == SNAPSHOT_VERSION)
            .and_then(
                |snapshot| match serde_json::from_str::<User>(&snapshot.state) {
                    Ok(user) => Some((user, snapshot.sequence)),
                    Err(error) => {
                        tracing::warn!(user_id = aggregate_id, error = %error,
                            "a snapshot does not read; the user is folded from every event");
                        None
                    }
                },
            );
        let (mut user, snapshot_sequence, tail) = match usable {
            Some((user, sequence)) => (user, sequence, tail),
            // A snapshot of another shape: its tail is not enough, every event is read.
            None if kept => (
                User::default(),
                0,
                self.repository.user_events_after(aggregate_id, 0).await?,
            ),
            None => (User::default(), 0, tail),
        };
        let mut sequence = snapshot_sequence;
        let UserEvents {
            events,
            keys,
            chain_head,
        } = tail;
        for event in events {
            let envelope = envelope(event, &self.upcasters)?;
            sequence = envelope.sequence;
            user.apply(envelope.payload);
        }
        Ok(Loaded {
            user,
            sequence,
            snapshot_sequence,
            keys,
            chain_head,
        })
    }

    /// Seals the personal data of `events` (the user's) under the user's data key in `ring`
    /// (as the load read it), creating the key, and adding it to `ring`, if they have none
    /// yet (a sign-up, or a user from before keys existed): returned sealed, to be stored
    /// with them. A user erased
    /// before these events gets no new key: the personal fields of the events' metadata are
    /// left out instead.
    fn seal_personal_data(
        &self,
        aggregate_id: &str,
        erased: bool,
        ring: &mut KeyRing,
        events: &mut [SerializedEvent],
    ) -> Option<SealedSecret> {
        let mut new_key = None;
        if ring.get(aggregate_id).is_none() {
            if erased {
                events.iter_mut().for_each(strip_personal_metadata);
                return None;
            }
            let mut bytes = Zeroizing::new([0u8; 32]);
            self.services.rng.fill(bytes.as_mut());
            new_key = Some(self.services.sealer.seal(bytes.as_ref()));
            ring.insert(aggregate_id.to_owned(), DataKey::new(bytes));
        }
        for event in events {
            ring.seal(event, || {
                let mut nonce = [0u8; 24];
                self.services.rng.fill(&mut nonce);
                nonce
            });
        }
        new_key
    }

    /// The address a sign-up among `envelopes` claims, with its keyed digests.
    fn email_claim(&self, envelopes: &[EventEnvelope<User>]) -> Option<EmailClaim> {
        envelopes
            .iter()
            .find_map(|envelope| match &envelope.payload {
                UserEvent::SignedUp { user_id, email, .. } => Some(EmailClaim {
                    user_id: *user_id,
                    digests: self.services.sealer.digests(&email_index_input(email)),
                }),
                _ => None,
            })
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

    /// Runs the command: load (the first time from `read`, when given, else from the user as
    /// a recent commit left them, if kept), handle, plan the mail, commit, dispatch; retried
    /// from a fresh load on a lost race, and on an answer other than a commit given by a kept
    /// state.
    async fn run(
        &self,
        id: UserId,
        mut read: Option<StoredUser>,
        command: UserCommand,
        metadata: &EventMetadata,
        secrets: &MailSecrets,
    ) -> Result<Committed, AppError> {
        let aggregate_id = id.to_string();
        let services = UserServices {
            hasher: Arc::new(VerifiedOnce::new(Arc::clone(&self.services.hasher))),
            ..self.services.clone()
        };
        let mut recent_allowed = true;
        for _ in 0..MAX_ATTEMPTS {
            let (loaded, from_recent) = match read.take() {
                Some(stored) => (self.fold_user(&aggregate_id, stored).await?, false),
                None => match recent_allowed.then(|| self.recent.get(&aggregate_id)) {
                    Some(Some(kept)) => {
                        self.metrics.recent_user("hit");
                        (kept, true)
                    }
                    _ => (self.load_user(&aggregate_id).await?, false),
                },
            };
            let Loaded {
                mut user,
                sequence,
                snapshot_sequence,
                mut keys,
                chain_head,
            } = loaded;
            let sink = EventSink::default();
            let handled = user.handle(command.clone(), &services, &sink).await;
            let events = sink.collect().await;
            if from_recent && (handled.is_err() || events.is_empty()) {
                // A state that may be behind the store's refused the command or found nothing
                // to change: the store's state answers instead.
                self.metrics.recent_user("answer_rechecked");
                recent_allowed = false;
                continue;
            }
            handled?;
            if events.is_empty() {
                return Ok(Committed {
                    user_id: id,
                    events,
                    user,
                });
            }
            let jobs = self
                .mail
                .jobs(&user, &events, secrets, metadata.request_id.as_deref())
                .map_err(|error| AppError::Internal(Box::new(error)))?;
            let envelopes = envelopes(&aggregate_id, sequence, events, metadata);
            let mut serialized = envelopes
                .iter()
                .map(SerializedEvent::try_from)
                .collect::<Result<Vec<_>, _>>()
                .map_err(AppError::from)?;
            let forget = envelopes
                .iter()
                .any(|envelope| matches!(envelope.payload, UserEvent::UserErased { .. }));
            let new_key = self.seal_personal_data(
                &aggregate_id,
                user.is_erased(),
                &mut keys,
                &mut serialized,
            );
            let email_claim = self.email_claim(&envelopes);
            // The sink applied each event as it was recorded: `user` is the state after them,
            // as a snapshot must hold it (cqrs-es's own snapshot store applies them twice).
            let new_sequence = sequence + envelopes.len();
            let snapshot = (new_sequence - snapshot_sequence >= self.snapshot_every)
                .then(|| {
                    serde_json::to_string(&user).map(|state| Snapshot {
                        sequence: new_sequence,
                        state_version: SNAPSHOT_VERSION.to_owned(),
                        state,
                    })
                })
                .transpose()
                .map_err(|error| AppError::Internal(Box::new(error)))?;
            let snapshot_sequence = snapshot
                .as_ref()
                .map_or(snapshot_sequence, |snapshot| snapshot.sequence);
            // The queries whose change the commit can make, and those changes.
            let (planned_by, view_changes): (Vec<usize>, Vec<_>) = self
                .queries
                .iter()
                .enumerate()
                .filter_map(|(at, query)| {
                    Some((at, query.plan_in_commit(&aggregate_id, &envelopes)?))
                })
                .unzip();
            let commit = Commit {
                events: &serialized,
                jobs: &jobs,
                snapshot,
                email_claim,
                new_key,
                forget,
                previous_chain_digest: chain_head,
                view_changes: &view_changes,
            };
            match self.repository.commit(commit).await {
                Ok(StoredCommit {
                    views_changed,
                    chain_head,
                }) => {
                    if forget || user.is_erased() {
                        self.recent.forget(&aggregate_id);
                    } else {
                        self.recent.keep(&aggregate_id, || Loaded {
                            user: user.clone(),
                            sequence: new_sequence,
                            snapshot_sequence,
                            keys,
                            chain_head,
                        });
                    }
                    self.log_lockouts(id, &envelopes);
                    let made_by_commit = |at: usize| {
                        planned_by
                            .iter()
                            .zip(&views_changed)
                            .any(|(planner, made)| *planner == at && *made)
                    };
                    for (at, query) in self.queries.iter().enumerate() {
                        if !made_by_commit(at) {
                            query.dispatch(&aggregate_id, &envelopes).await;
                        }
                    }
                    return Ok(Committed {
                        user_id: id,
                        events: envelopes
                            .into_iter()
                            .map(|envelope| envelope.payload)
                            .collect(),
                        user,
                    });
                }
                Err(PersistenceError::OptimisticLockError) => {
                    tracing::debug!(user_id = %id, "command lost a race; retrying");
                    if from_recent {
                        self.metrics.recent_user("lost_race");
                    }
                    self.recent.forget(&aggregate_id);
                }
                Err(error) => {
                    self.recent.forget(&aggregate_id);
                    return Err(error.into());
                }
            }
        }
        Err(AppError::Conflict)
    }
}

/// The password hasher of one command's attempts. A command that loses a race is handled again
/// from a fresh load; without this, each attempt checked its password again, an Argon2 hash
/// per lost race, so concurrent logins to one account multiplied the hashing a request cost
/// (up to [`MAX_ATTEMPTS`] times). A check is remembered for this command alone, and only for
/// the same password against the same stored hash: a hash that changed in between (a password
/// changed meanwhile) is checked again. Hashing a new password is not remembered.
struct VerifiedOnce {
    hasher: Arc<dyn PasswordHasher>,
    checked: Mutex<Vec<(PasswordHash, SecretString, bool)>>,
}

impl VerifiedOnce {
    fn new(hasher: Arc<dyn PasswordHasher>) -> Self {
        Self {
            hasher,
            checked: Mutex::default(),
        }
    }

    fn checked(&self) -> MutexGuard<'_, Vec<(PasswordHash, SecretString, bool)>> {
        self.checked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl PasswordHasher for VerifiedOnce {
    async fn hash(&self, password: &NewPassword) -> Result<PasswordHash, HasherError> {
        self.hasher.hash(password).await
    }

    async fn verify(
        &self,
        password: &SecretString,
        hash: &PasswordHash,
    ) -> Result<bool, HasherError> {
        let remembered = self
            .checked()
            .iter()
            .find(|(checked_hash, checked_password, _)| {
                checked_hash == hash && checked_password.expose_secret() == password.expose_secret()
            })
            .map(|(_, _, matches)| *matches);
        if let Some(matches) = remembered {
            return Ok(matches);
        }
        let matches = self.hasher.verify(password, hash).await?;
        self.checked()
            .push((hash.clone(), password.clone(), matches));
        Ok(matches)
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

impl<R: EventRepository> CommandGateway<R> {
    /// [`Self::run`], its latency since `started` and its outcome counted by command.
    async fn timed(
        &self,
        started: Instant,
        id: UserId,
        read: Option<StoredUser>,
        command: UserCommand,
        metadata: &EventMetadata,
        secrets: &MailSecrets,
    ) -> Result<Committed, AppError> {
        let name = command_name(&command);
        let result = self.run(id, read, command, metadata, secrets).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.code(),
        };
        self.metrics.command(name, outcome, started.elapsed());
        result
    }
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
        self.timed(Instant::now(), id, None, command, metadata, secrets)
            .await
    }

    async fn find_for_command(&self, email: &Email) -> Result<Option<FoundUser>, AppError> {
        let started = Instant::now();
        Ok(self
            .repository
            .load_by_email(email)
            .await?
            .map(|(id, stored)| FoundUser {
                id,
                stored,
                started,
            }))
    }

    async fn execute_found(
        &self,
        user: FoundUser,
        command: UserCommand,
        metadata: &EventMetadata,
        secrets: &MailSecrets,
    ) -> Result<Committed, AppError> {
        let FoundUser {
            id,
            stored,
            started,
        } = user;
        self.timed(started, id, Some(stored), command, metadata, secrets)
            .await
    }

    async fn load(&self, id: UserId) -> Result<User, AppError> {
        Ok(self.load_user(&id.to_string()).await?.user)
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<UserId>, AppError> {
        Ok(self.repository.find_user(email).await?)
    }

    async fn events(&self, id: UserId) -> Result<Vec<EventEnvelope<User>>, AppError> {
        let events = self.repository.get_events::<User>(&id.to_string()).await?;
        events
            .into_iter()
            .map(|event| envelope(event, &self.upcasters).map_err(AppError::from))
            .collect()
    }

    async fn reseal_personal_data(&self, id: UserId) -> Result<PersonalResealed, AppError> {
        let user = self.load(id).await?;
        let digests = user
            .email()
            .map(|email| self.services.sealer.digests(&email_index_input(email)));
        Ok(self
            .repository
            .reseal_personal_data(&id.to_string(), digests.as_deref())
            .await?)
    }
}

/// The metric label of a locked factor.
fn factor_label(factor: &ThrottledFactor) -> &'static str {
    match factor {
        ThrottledFactor::Password => "password",
        ThrottledFactor::SecondFactor => "second_factor",
        ThrottledFactor::BackupCode => "backup_code",
        ThrottledFactor::Passkey => "passkey",
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
        UserCommand::EraseOwnAccount(_) => "erase_own_account",
        UserCommand::EraseAccount => "erase_account",
        UserCommand::Reauthenticate(_) => "reauthenticate",
        UserCommand::RequestConfirmationCode(_) => "request_confirmation_code",
        UserCommand::RegisterPasskey(_) => "register_passkey",
        UserCommand::RenamePasskey(_) => "rename_passkey",
        UserCommand::RemovePasskey(_) => "remove_passkey",
        UserCommand::UsePasskey(_) => "use_passkey",
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::persist::PersistedEventRepository;
    use proptest::prelude::*;
    use secrecy::{SecretSlice, SecretString};
    use time::OffsetDateTime;
    use twofold_domain::testing;
    use twofold_domain::user::{
        ChangePassword, EnableTfa, EndOtherSessions, LogIn, NewDevice, Reauthentication,
        RefreshSession, RequestPasswordReset, SignUp, TfaEnrolment, VerifyTfaCode,
    };
    use twofold_domain::values::{
        ChallengeId, Email, FullName, NewPassword, RefreshTokenId, SessionId,
    };
    use twofold_domain::Actor;
    use twofold_nats::MailSealer;

    use super::*;
    use crate::app::mail::MailFactory;
    use crate::app::store::MemEventRepository;

    const PASSWORD: &str = "correct horse battery";

    /// What a random history is made of.
    #[derive(Debug, Clone)]
    enum Step {
        LogIn { right_password: bool },
        Refresh { current_token: bool },
        EnableTfa { authenticator: bool },
        WrongSecondFactor,
        ChangePassword { right_password: bool },
        RequestReset,
        EndOtherSessions,
        Lock,
        Unlock,
        EndAllSessions,
        GrantAdmin,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => any::<bool>().prop_map(|right_password| Step::LogIn { right_password }),
            2 => any::<bool>().prop_map(|current_token| Step::Refresh { current_token }),
            1 => any::<bool>().prop_map(|authenticator| Step::EnableTfa { authenticator }),
            1 => Just(Step::WrongSecondFactor),
            1 => any::<bool>().prop_map(|right_password| Step::ChangePassword { right_password }),
            1 => Just(Step::RequestReset),
            1 => Just(Step::EndOtherSessions),
            1 => Just(Step::Lock),
            1 => Just(Step::Unlock),
            1 => Just(Step::EndAllSessions),
            1 => Just(Step::GrantAdmin),
        ]
    }

    fn secret(text: &str) -> SecretString {
        SecretString::from(text)
    }

    /// What the steps need to know of the history so far: the newest session's tokens and
    /// the newest open challenge.
    #[derive(Default)]
    struct Known {
        session: Option<(SessionId, RefreshTokenId)>,
        challenge: Option<ChallengeId>,
    }

    impl Known {
        fn learn(&mut self, events: &[UserEvent]) {
            for event in events {
                match event {
                    UserEvent::SessionStarted {
                        session_id,
                        refresh_id,
                        ..
                    }
                    | UserEvent::SessionRefreshed {
                        session_id,
                        refresh_id,
                        ..
                    } => self.session = Some((*session_id, *refresh_id)),
                    UserEvent::SecondFactorRequired { challenge_id, .. } => {
                        self.challenge = Some(*challenge_id);
                    }
                    _ => {}
                }
            }
        }
    }

    fn command(step: &Step, known: &Known) -> Option<UserCommand> {
        Some(match step {
            Step::LogIn { right_password } => UserCommand::LogIn(LogIn {
                password: secret(if *right_password { PASSWORD } else { "wrong" }),
                email_code: secret("123456"),
            }),
            Step::Refresh { current_token } => {
                let (session_id, refresh_id) = known.session?;
                UserCommand::RefreshSession(RefreshSession {
                    session_id,
                    refresh_id: if *current_token {
                        refresh_id
                    } else {
                        RefreshTokenId::from_uuid(uuid::Uuid::from_u128(7))
                    },
                    reuse_grace: time::Duration::seconds(10),
                })
            }
            Step::EnableTfa { authenticator } => UserCommand::EnableTfa(EnableTfa {
                enrolment: TfaEnrolment {
                    device: if *authenticator {
                        NewDevice::CodeGenerator {
                            seed: SecretSlice::from(b"12345678901234567890".to_vec()),
                        }
                    } else {
                        NewDevice::Email
                    },
                    backup_codes: vec![secret("AAAA-BBBB-CCCC-DDDD-EEEE-FFFF")],
                },
                // Checked only for a user with a passkey, which these steps never register.
                reauthentication: Reauthentication::RecentSignIn {
                    session: known.session.map_or_else(
                        || SessionId::from_uuid(uuid::Uuid::from_u128(8)),
                        |(session, _)| session,
                    ),
                    window: time::Duration::minutes(5),
                },
            }),
            Step::WrongSecondFactor => UserCommand::VerifyTfaCode(VerifyTfaCode {
                challenge_id: known.challenge?,
                code: secret("000000"),
            }),
            Step::ChangePassword { right_password } => {
                UserCommand::ChangePassword(ChangePassword {
                    current: secret(if *right_password { PASSWORD } else { "wrong" }),
                    new: NewPassword::parse(secret(PASSWORD)).ok()?,
                    keep_session: known.session.map(|(session, _)| session),
                })
            }
            Step::RequestReset => UserCommand::RequestPasswordReset(RequestPasswordReset {
                token: secret("reset-token"),
            }),
            Step::EndOtherSessions => {
                let keep = known.session?.0;
                UserCommand::EndOtherSessions(EndOtherSessions {
                    keep,
                    reauthentication: Reauthentication::RecentSignIn {
                        session: keep,
                        window: time::Duration::days(365),
                    },
                })
            }
            Step::Lock => UserCommand::LockAccount,
            Step::Unlock => UserCommand::UnlockAccount,
            Step::EndAllSessions => UserCommand::EndAllSessions,
            Step::GrantAdmin => UserCommand::GrantAdmin,
        })
    }

    /// Every secret an email of these commands may need.
    fn secrets() -> MailSecrets {
        MailSecrets {
            backup_codes: vec![secret("AAAA-BBBB-CCCC-DDDD-EEEE-FFFF")],
            email_code: Some(secret("123456")),
            reset_token: Some(secret("reset-token")),
        }
    }

    /// The user folded from every stored event, snapshots ignored.
    async fn full_replay(repository: &MemEventRepository, id: UserId) -> User {
        let upcasters = upcasters();
        let mut user = User::default();
        for event in repository
            .get_events::<User>(&id.to_string())
            .await
            .unwrap()
        {
            user.apply(envelope(event, &upcasters).unwrap().payload);
        }
        user
    }

    fn gateway(
        repository: MemEventRepository,
        snapshot_every: usize,
    ) -> CommandGateway<MemEventRepository> {
        let at = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        CommandGateway::new(
            repository,
            MailPolicy::new(MailFactory::new(MailSealer::new(
                twofold_nats::MailKey::derive(&[7; 32]),
            ))),
            Vec::new(),
            testing::services_at(at),
        )
        .with_snapshot_every(snapshot_every)
        .with_recent_users_for(Duration::from_secs(60))
    }

    async fn sign_up(gateway: &CommandGateway<MemEventRepository>, id: UserId) {
        let sign_up = UserCommand::SignUp(SignUp {
            user_id: id,
            email: Email::parse("ada@example.com").unwrap(),
            full_name: FullName::parse("Ada Lovelace").unwrap(),
            password: NewPassword::parse(secret(PASSWORD)).unwrap(),
            tfa: None,
        });
        gateway
            .execute(
                id,
                sign_up,
                &EventMetadata::of(Actor::Anonymous),
                &secrets(),
            )
            .await
            .unwrap();
    }

    /// A login with the right password.
    fn log_in() -> UserCommand {
        UserCommand::LogIn(LogIn {
            password: secret(PASSWORD),
            email_code: secret("123456"),
        })
    }

    /// The command line makes user `id` an administrator.
    async fn grant_admin(gateway: &CommandGateway<MemEventRepository>, id: UserId) {
        gateway
            .execute(
                id,
                UserCommand::GrantAdmin,
                &EventMetadata::of(Actor::Cli),
                &secrets(),
            )
            .await
            .unwrap();
    }

    /// A gateway over a fresh memory store, with Ada signed up.
    struct Ada {
        repository: MemEventRepository,
        gateway: CommandGateway<MemEventRepository>,
        id: UserId,
        /// The mail the store hands over, kept so that handing it over succeeds.
        _mail: tokio::sync::mpsc::UnboundedReceiver<twofold_nats::MailJob>,
    }

    impl Ada {
        /// Keeping a snapshot every `snapshot_every` events.
        async fn signed_up(snapshot_every: usize) -> Self {
            let (outbox, mail) = tokio::sync::mpsc::unbounded_channel();
            let repository = MemEventRepository::new(
                outbox,
                std::sync::Arc::new(twofold_domain::testing::HexSealer),
            );
            let gateway = gateway(repository.clone(), snapshot_every);
            let id = UserId::from_uuid(uuid::Uuid::from_u128(0xada));
            sign_up(&gateway, id).await;
            Self {
                repository,
                gateway,
                id,
                _mail: mail,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// After every step of a random history, the user loaded from the newest snapshot and
        /// the events after it is the user folded from every event.
        #[test]
        fn a_snapshot_and_its_tail_fold_to_what_a_full_replay_folds_to(
            steps in prop::collection::vec(step(), 1..60),
            snapshot_every in 1usize..8,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let (outbox, _mail) = tokio::sync::mpsc::unbounded_channel();
                let repository = MemEventRepository::new(outbox, std::sync::Arc::new(twofold_domain::testing::HexSealer));
                let gateway = gateway(repository.clone(), snapshot_every);
                let id = UserId::from_uuid(uuid::Uuid::from_u128(0xada));
                sign_up(&gateway, id).await;
                let metadata = EventMetadata::of(Actor::User(id));
                let mut known = Known::default();
                for step in &steps {
                    let Some(command) = command(step, &known) else { continue };
                    // A refusal (a locked factor, a closed challenge) is a step too.
                    if let Ok(committed) = gateway.execute(id, command, &metadata, &secrets()).await {
                        known.learn(&committed.events);
                    }
                    let loaded = gateway.load_user(&id.to_string()).await.unwrap();
                    prop_assert_eq!(&loaded.user, &full_replay(&repository, id).await);
                }
                Ok(())
            })?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Two instances, each keeping the users its commands leave, take turns at random on
        /// one user: every command that commits leaves the user a full replay folds, and every
        /// command refused is refused, with the same error, by an instance that keeps no one
        /// and reads the store each time.
        #[test]
        fn instances_starting_from_kept_users_answer_as_one_that_reads_the_store(
            steps in prop::collection::vec((step(), any::<bool>()), 1..60),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let Ada { repository, gateway: first, id, _mail } = Ada::signed_up(SNAPSHOT_EVERY).await;
                let second = gateway(repository.clone(), SNAPSHOT_EVERY);
                let reading = gateway(repository.clone(), SNAPSHOT_EVERY)
                    .with_recent_users_for(Duration::ZERO);
                let metadata = EventMetadata::of(Actor::User(id));
                let mut known = Known::default();
                for (step, on_first) in &steps {
                    let Some(command) = command(step, &known) else { continue };
                    let instance = if *on_first { &first } else { &second };
                    match instance.execute(id, command.clone(), &metadata, &secrets()).await {
                        Ok(committed) => {
                            known.learn(&committed.events);
                            prop_assert_eq!(&committed.user, &full_replay(&repository, id).await);
                        }
                        Err(refused) => {
                            let again = reading.execute(id, command, &metadata, &secrets()).await;
                            prop_assert_eq!(again.err().map(|error| error.code()), Some(refused.code()));
                        }
                    }
                }
                Ok(())
            })?;
        }
    }

    /// The session Ada's login on `gateway` started, and its refresh token.
    async fn logged_in(
        gateway: &CommandGateway<MemEventRepository>,
        id: UserId,
    ) -> (SessionId, RefreshTokenId) {
        let committed = gateway
            .execute(
                id,
                log_in(),
                &EventMetadata::of(Actor::Anonymous),
                &secrets(),
            )
            .await
            .unwrap();
        known_session(&committed)
    }

    /// Refreshes `session` with `token` on `gateway`.
    async fn refresh(
        gateway: &CommandGateway<MemEventRepository>,
        id: UserId,
        (session_id, refresh_id): (SessionId, RefreshTokenId),
    ) -> Result<Committed, AppError> {
        let command = UserCommand::RefreshSession(RefreshSession {
            session_id,
            refresh_id,
            reuse_grace: time::Duration::seconds(10),
        });
        gateway
            .execute(id, command, &EventMetadata::of(Actor::User(id)), &secrets())
            .await
    }

    /// How often `outcome` was counted for commands that started from a kept user.
    fn recent_users(metrics: &Metrics, outcome: &str) -> u64 {
        let line = format!("twofold_command_recent_users_total{{outcome=\"{outcome}\"}} ");
        metrics
            .render()
            .lines()
            .find_map(|rendered| rendered.strip_prefix(&line)?.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_command_after_a_commit_on_the_same_instance_starts_from_what_the_commit_left() {
        let Ada {
            repository,
            gateway,
            id,
            _mail,
        } = Ada::signed_up(SNAPSHOT_EVERY).await;
        let metrics = Metrics::new();
        let gateway = gateway.with_metrics(metrics.clone());
        let mut session = logged_in(&gateway, id).await;
        for _ in 0..20 {
            let committed = refresh(&gateway, id, session).await.unwrap();
            session = known_session(&committed);
            assert_eq!(committed.user, full_replay(&repository, id).await);
        }
        // The login started from what the sign-up left, each refresh from what the last left.
        assert_eq!(recent_users(&metrics, "hit"), 21);
        assert_eq!(recent_users(&metrics, "lost_race"), 0);
        assert_eq!(recent_users(&metrics, "answer_rechecked"), 0);
        // The commits from kept users kept snapshots as commits from loads do.
        let loaded = gateway.load_user(&id.to_string()).await.unwrap();
        assert!(loaded.snapshot_sequence > 0);
        assert!(loaded.sequence - loaded.snapshot_sequence < SNAPSHOT_EVERY);
    }

    #[tokio::test]
    async fn an_instance_behind_another_answers_with_the_store_s_state() {
        let Ada {
            repository,
            gateway: first,
            id,
            _mail,
        } = Ada::signed_up(SNAPSHOT_EVERY).await;
        let metrics = Metrics::new();
        let first = first.with_metrics(metrics.clone());
        let second = gateway(repository.clone(), SNAPSHOT_EVERY);
        let reading =
            gateway(repository.clone(), SNAPSHOT_EVERY).with_recent_users_for(Duration::ZERO);
        logged_in(&first, id).await;

        // A session the first instance has not seen: what it keeps refuses the refresh, and
        // the store's state, asked again, accepts it.
        let session = logged_in(&second, id).await;
        let committed = refresh(&first, id, session).await.unwrap();
        assert_eq!(committed.user, full_replay(&repository, id).await);
        assert_eq!(recent_users(&metrics, "answer_rechecked"), 1);

        // A token the second instance rotated to: what the first keeps takes it for a replay
        // of an old one and ends the session, a commit that loses the race; the store's state
        // accepts it.
        let rotated = refresh(&second, id, known_session(&committed))
            .await
            .unwrap();
        let committed = refresh(&first, id, known_session(&rotated)).await.unwrap();
        assert_eq!(committed.user, full_replay(&repository, id).await);
        assert_eq!(recent_users(&metrics, "lost_race"), 1);

        // The second instance locks the account: what the first keeps would refresh, but the
        // store's state refuses as an instance that keeps no one does.
        second
            .execute(
                id,
                UserCommand::LockAccount,
                &EventMetadata::of(Actor::Cli),
                &secrets(),
            )
            .await
            .unwrap();
        let token = known_session(&committed);
        let refused = refresh(&first, id, token).await.unwrap_err();
        assert_eq!(recent_users(&metrics, "lost_race"), 2);
        let read = refresh(&reading, id, token).await.unwrap_err();
        assert_eq!(refused.code(), read.code());
    }

    /// The newest session `committed` started or refreshed, and its refresh token.
    fn known_session(committed: &Committed) -> (SessionId, RefreshTokenId) {
        let mut known = Known::default();
        known.learn(&committed.events);
        known.session.unwrap()
    }

    #[tokio::test]
    async fn an_erased_user_is_not_kept() {
        let Ada {
            gateway, id, _mail, ..
        } = Ada::signed_up(SNAPSHOT_EVERY).await;
        logged_in(&gateway, id).await;
        assert!(gateway.recent.get(&id.to_string()).is_some());
        gateway
            .execute(
                id,
                UserCommand::EraseAccount,
                &EventMetadata::of(Actor::Cli),
                &secrets(),
            )
            .await
            .unwrap();
        assert!(gateway.recent.get(&id.to_string()).is_none());
    }

    /// A hasher that checks as the test one does, counts its checks, and holds the first
    /// until released, so that a test can commit another command meanwhile.
    #[derive(Default)]
    struct HeldHasher {
        checks: std::sync::atomic::AtomicUsize,
        checking: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    #[async_trait]
    impl PasswordHasher for HeldHasher {
        async fn hash(&self, password: &NewPassword) -> Result<PasswordHash, HasherError> {
            testing::PlainHasher.hash(password).await
        }

        async fn verify(
            &self,
            password: &SecretString,
            hash: &PasswordHash,
        ) -> Result<bool, HasherError> {
            if self
                .checks
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                == 0
            {
                self.checking.notify_one();
                self.release.notified().await;
            }
            testing::PlainHasher.verify(password, hash).await
        }
    }

    #[tokio::test]
    async fn a_login_that_loses_a_race_is_retried_without_hashing_its_password_again() {
        let (outbox, _mail) = tokio::sync::mpsc::unbounded_channel();
        let repository = MemEventRepository::new(
            outbox,
            std::sync::Arc::new(twofold_domain::testing::HexSealer),
        );
        let hasher = Arc::new(HeldHasher::default());
        let at = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        let gateway = Arc::new(CommandGateway::new(
            repository,
            MailPolicy::new(MailFactory::new(MailSealer::new(
                twofold_nats::MailKey::derive(&[7; 32]),
            ))),
            Vec::new(),
            UserServices {
                hasher: Arc::clone(&hasher) as Arc<dyn PasswordHasher>,
                ..testing::services_at(at)
            },
        ));
        let id = UserId::from_uuid(uuid::Uuid::from_u128(0xada));
        sign_up(&gateway, id).await;

        let login = tokio::spawn({
            let gateway = Arc::clone(&gateway);
            async move {
                gateway
                    .execute(
                        id,
                        log_in(),
                        &EventMetadata::of(Actor::Anonymous),
                        &secrets(),
                    )
                    .await
            }
        });
        // While the login's password is being checked, another command commits first.
        hasher.checking.notified().await;
        grant_admin(&gateway, id).await;
        hasher.release.notify_one();

        let committed = login.await.unwrap().unwrap();
        assert!(committed
            .events
            .iter()
            .any(|event| matches!(event, UserEvent::SessionStarted { .. })));
        assert!(
            committed.user.is_admin(),
            "the retry ran on the fresh state"
        );
        assert_eq!(
            hasher.checks.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the retry reused the first check"
        );
    }

    #[tokio::test]
    async fn a_command_on_a_user_found_by_address_runs_on_them_and_a_stale_read_is_read_again() {
        let Ada {
            repository,
            gateway,
            id,
            _mail,
        } = Ada::signed_up(SNAPSHOT_EVERY).await;
        let unknown = Email::parse("grace@example.com").unwrap();
        assert!(gateway.find_for_command(&unknown).await.unwrap().is_none());

        let found = gateway
            .find_for_command(&Email::parse("ADA@example.com").unwrap())
            .await
            .unwrap()
            .expect("the owner of the address, in any letter case");
        assert_eq!(found.id(), id);
        // Another command commits after the read and before the command it was read for.
        grant_admin(&gateway, id).await;
        let committed = gateway
            .execute_found(
                found,
                log_in(),
                &EventMetadata::of(Actor::Anonymous),
                &secrets(),
            )
            .await
            .unwrap();
        assert!(committed
            .events
            .iter()
            .any(|event| matches!(event, UserEvent::SessionStarted { .. })));
        assert!(committed.user.is_admin(), "the command ran on a fresh read");
        assert_eq!(
            gateway.load_user(&id.to_string()).await.unwrap().user,
            full_replay(&repository, id).await
        );
    }

    #[tokio::test]
    async fn a_long_history_is_loaded_from_a_snapshot_and_few_events() {
        let Ada {
            repository,
            gateway,
            id,
            _mail,
        } = Ada::signed_up(SNAPSHOT_EVERY).await;
        let metadata = EventMetadata::of(Actor::Cli);
        for _ in 0..500 {
            for command in [UserCommand::LockAccount, UserCommand::UnlockAccount] {
                gateway
                    .execute(id, command, &metadata, &secrets())
                    .await
                    .unwrap();
            }
        }
        let loaded = gateway.load_user(&id.to_string()).await.unwrap();
        assert_eq!(loaded.sequence, 1001);
        assert!(loaded.sequence - loaded.snapshot_sequence < SNAPSHOT_EVERY);
        assert_eq!(loaded.user, full_replay(&repository, id).await);
    }

    #[tokio::test]
    async fn a_snapshot_of_another_shape_or_that_does_not_read_is_ignored() {
        let Ada {
            repository,
            gateway,
            id,
            _mail,
        } = Ada::signed_up(1).await;
        let metadata = EventMetadata::of(Actor::Cli);
        gateway
            .execute(id, UserCommand::GrantAdmin, &metadata, &secrets())
            .await
            .unwrap();
        let truth = full_replay(&repository, id).await;
        assert!(truth.is_admin());
        for stale in [
            Snapshot {
                sequence: 9,
                state_version: "0".to_owned(),
                state: serde_json::to_string(&User::default()).unwrap(),
            },
            Snapshot {
                sequence: 10,
                state_version: SNAPSHOT_VERSION.to_owned(),
                state: r#"{"not": "a user"}"#.to_owned(),
            },
        ] {
            repository.put_snapshot(&id.to_string(), stale);
            let loaded = gateway.load_user(&id.to_string()).await.unwrap();
            assert_eq!(loaded.snapshot_sequence, 0);
            assert_eq!(loaded.user, truth);
        }
    }
}
