//! The login steps: the password, then (with 2FA on) a TOTP or emailed code, or a backup code.
//! Each answers one [`LoginOutcome`]; refusals are recorded in the user's events, logged under
//! the `security` target and counted.

use secrecy::SecretString;
use twofold_domain::user::{LogIn, LoginOutcome, Refusal, UseBackupCode, VerifyTfaCode};
use twofold_domain::values::{ChallengeId, Email, UserId};
use twofold_domain::{EventMetadata, UserCommand, UserError};

use super::mail_policy::MailSecrets;
use super::{App, AppError};

impl App {
    /// Checks the password of the account with address `username`. An unknown address costs,
    /// counts and answers exactly like a wrong password. While the hash pool has no room the
    /// login is refused (`service.busy`) before it reads anything, known address or not.
    pub async fn log_in(
        &self,
        username: &str,
        password: SecretString,
        metadata: &EventMetadata,
    ) -> Result<LoginOutcome, AppError> {
        if let Err(busy) = self.ensure_hash_room() {
            self.metrics.login(Step::Password.label(), busy.code());
            return Err(busy);
        }
        // The lookup of the address and the read of its owner are one read.
        let found = match Email::parse(username) {
            Ok(email) => self.users.find_for_command(&email).await?,
            Err(_) => None,
        };
        let Some(found) = found else {
            return self.refuse_unknown_account(username, &password).await;
        };
        let user_id = found.id();
        let email_code = self.new_email_code();
        let command = UserCommand::LogIn(LogIn {
            password,
            email_code: email_code.clone(),
        });
        let secrets = MailSecrets {
            email_code: Some(email_code),
            ..MailSecrets::none()
        };
        let decided = self
            .users
            .execute_found(found, command, metadata, &secrets)
            .await
            .and_then(|committed| Ok(LoginOutcome::read(user_id, &committed.events)?));
        self.report(Step::Password, user_id, &decided);
        decided
    }

    /// The second step with a TOTP or emailed code, for challenge `challenge_id`.
    pub async fn verify_tfa_code(
        &self,
        user_id: UserId,
        challenge_id: ChallengeId,
        code: SecretString,
        metadata: &EventMetadata,
    ) -> Result<LoginOutcome, AppError> {
        let command = UserCommand::VerifyTfaCode(VerifyTfaCode { challenge_id, code });
        let decided = self
            .users
            .execute(user_id, command, metadata, &MailSecrets::none())
            .await
            .and_then(|committed| Ok(LoginOutcome::read(user_id, &committed.events)?));
        self.report(Step::SecondFactor, user_id, &decided);
        decided
    }

    /// The second step with a backup code, which is spent (and a notice emailed).
    pub async fn use_backup_code(
        &self,
        user_id: UserId,
        challenge_id: ChallengeId,
        code: SecretString,
        metadata: &EventMetadata,
    ) -> Result<LoginOutcome, AppError> {
        let command = UserCommand::UseBackupCode(UseBackupCode { challenge_id, code });
        let decided = self
            .users
            .execute(user_id, command, metadata, &MailSecrets::none())
            .await
            .and_then(|committed| Ok(LoginOutcome::read(user_id, &committed.events)?));
        self.report(Step::BackupCode, user_id, &decided);
        decided
    }

    /// A login to an address with no account: the same work, throttle and answer as a wrong
    /// password, so neither the answer, its timing nor a lockout tells whether it exists.
    async fn refuse_unknown_account(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<LoginOutcome, AppError> {
        let address = username.trim().to_lowercase();
        let key = self.services.sealer.digest(address.as_bytes()).digest;
        let now = self.services.clock.now();
        let refused: Result<LoginOutcome, AppError> = async {
            self.unknown_accounts.check(&key, now).await?;
            self.hasher
                .verify_dummy(password)
                .await
                .map_err(UserError::from)?;
            if let Some(until) = self.unknown_accounts.record_failure(&key, now).await? {
                tracing::info!(target: "security", %until, "logins to an address with no account locked");
            }
            Ok(LoginOutcome::Refused(Refusal::WrongPassword))
        }
        .await;
        match &refused {
            Ok(_) => {
                tracing::info!(target: "security", "login failed: unknown account");
                self.metrics
                    .login(Step::Password.label(), "unknown_account");
            }
            Err(error) => self.metrics.login(Step::Password.label(), error.code()),
        }
        refused
    }

    /// Refuses a request that will hash a password while the hash pool has no room for it,
    /// before the request does anything else: the pool would refuse its hash anyway, and the
    /// reads that come first (the user, the throttles) would only make the refusal wait
    /// behind the load it is meant to shed. The answer is the one the pool gives when it is
    /// full, `service.busy`, whoever the request is for. The pool still refuses at submit
    /// time when it filled meanwhile: this look reserves nothing.
    pub(super) fn ensure_hash_room(&self) -> Result<(), AppError> {
        if self.hasher.has_room() {
            Ok(())
        } else {
            tracing::debug!("the hash pool is full; refused before any work");
            Err(UserError::HasherSaturated.into())
        }
    }

    /// The security log line and the login counter of a login step.
    fn report(&self, step: Step, user_id: UserId, decided: &Result<LoginOutcome, AppError>) {
        let outcome = match decided {
            Ok(LoginOutcome::LoggedIn(_)) => {
                match step {
                    Step::Password => {
                        tracing::info!(target: "security", %user_id, "login succeeded")
                    }
                    Step::SecondFactor => {
                        tracing::info!(target: "security", %user_id, "second factor accepted")
                    }
                    Step::BackupCode => {
                        tracing::info!(target: "security", %user_id, "backup code used")
                    }
                }
                "ok"
            }
            Ok(LoginOutcome::SecondFactorRequired { .. }) => {
                tracing::info!(target: "security", %user_id, "password accepted; second factor required");
                "second_factor_required"
            }
            Ok(LoginOutcome::Refused(refusal)) => {
                tracing::info!(target: "security", %user_id, step = step.label(), ?refusal, "login step refused");
                match refusal {
                    Refusal::WrongPassword => "wrong_password",
                    _ => "wrong_code",
                }
            }
            Err(error) => {
                let code = error.code();
                tracing::info!(target: "security", %user_id, step = step.label(), code, "login step refused");
                code
            }
        };
        self.metrics.login(step.label(), outcome);
    }
}

/// A login step, as metrics and logs name it.
#[derive(Clone, Copy)]
enum Step {
    Password,
    SecondFactor,
    BackupCode,
}

impl Step {
    fn label(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::SecondFactor => "second_factor",
            Self::BackupCode => "backup_code",
        }
    }
}

#[cfg(test)]
mod tests {
    //! What a login and a sign-up do while the hash pool has no room: they must be refused
    //! before they read anything. The stores count every call they get.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use async_trait::async_trait;
    use cqrs_es::EventEnvelope;
    use time::OffsetDateTime;
    use twofold_domain::values::{FullName, NewPassword};
    use twofold_domain::{testing, Actor, User, UserServices};
    use twofold_nats::{MailJob, MailKey, MailSealer, TaskState};
    use twofold_projections::{MemUserDirectory, MemViewStore};
    use uuid::Uuid;

    use super::*;
    use crate::adapters::{Argon2Hasher, Argon2Params};
    use crate::app::access::AccessCache;
    use crate::app::gateway::{CommandGateway, Committed, FoundUser, Users};
    use crate::app::mail::{MailFactory, MailQueue};
    use crate::app::mail_policy::MailPolicy;
    use crate::app::store::{MemEventRepository, PersonalResealed};
    use crate::app::unknown_accounts::{MemUnknownAccountThrottle, UnknownAccountThrottle};
    use crate::app::views::ViewSet;
    use crate::app::{ExistingEmail, NewAccount, Parts, Settings};
    use crate::metrics::Metrics;

    const PASSWORD: &str = "correct horse battery";

    /// Every call the use cases make to a store.
    #[derive(Default)]
    struct Reads(AtomicUsize);

    impl Reads {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }

        fn one(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct CountedUsers {
        inner: Arc<dyn Users>,
        reads: Arc<Reads>,
    }

    #[async_trait]
    impl Users for CountedUsers {
        async fn execute(
            &self,
            id: UserId,
            command: UserCommand,
            metadata: &EventMetadata,
            secrets: &MailSecrets,
        ) -> Result<Committed, AppError> {
            self.reads.one();
            self.inner.execute(id, command, metadata, secrets).await
        }

        async fn load(&self, id: UserId) -> Result<User, AppError> {
            self.reads.one();
            self.inner.load(id).await
        }

        async fn find_by_email(&self, email: &Email) -> Result<Option<UserId>, AppError> {
            self.reads.one();
            self.inner.find_by_email(email).await
        }

        async fn find_for_command(&self, email: &Email) -> Result<Option<FoundUser>, AppError> {
            self.reads.one();
            self.inner.find_for_command(email).await
        }

        async fn execute_found(
            &self,
            user: FoundUser,
            command: UserCommand,
            metadata: &EventMetadata,
            secrets: &MailSecrets,
        ) -> Result<Committed, AppError> {
            self.reads.one();
            self.inner
                .execute_found(user, command, metadata, secrets)
                .await
        }

        async fn events(&self, id: UserId) -> Result<Vec<EventEnvelope<User>>, AppError> {
            self.reads.one();
            self.inner.events(id).await
        }

        async fn reseal_personal_data(&self, id: UserId) -> Result<PersonalResealed, AppError> {
            self.reads.one();
            self.inner.reseal_personal_data(id).await
        }
    }

    struct CountedThrottle {
        inner: MemUnknownAccountThrottle,
        reads: Arc<Reads>,
    }

    #[async_trait]
    impl UnknownAccountThrottle for CountedThrottle {
        async fn check(&self, email_digest: &str, now: OffsetDateTime) -> Result<(), AppError> {
            self.reads.one();
            self.inner.check(email_digest, now).await
        }

        async fn record_failure(
            &self,
            email_digest: &str,
            now: OffsetDateTime,
        ) -> Result<Option<OffsetDateTime>, AppError> {
            self.reads.one();
            self.inner.record_failure(email_digest, now).await
        }
    }

    /// No email is looked at here.
    struct NoMail;

    #[async_trait]
    impl MailQueue for NoMail {
        async fn enqueue(&self, _job: MailJob) -> Result<(), AppError> {
            Ok(())
        }

        async fn status(&self, _id: Uuid) -> Result<Option<(UserId, TaskState)>, AppError> {
            Ok(None)
        }
    }

    /// The use cases over an in-memory store whose calls are counted, with a real hash pool
    /// of one worker and one waiting place.
    struct Fixture {
        app: App,
        hasher: Arc<Argon2Hasher>,
        reads: Arc<Reads>,
    }

    fn fixture() -> Fixture {
        let at = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        let hasher =
            Arc::new(Argon2Hasher::start(Argon2Params::insecure_for_tests(), 1, 1, 0).unwrap());
        let services = UserServices {
            hasher: hasher.clone(),
            ..testing::services_at(at)
        };
        let mail = || MailFactory::new(MailSealer::new(MailKey::derive(&[7; 32])));
        let (outbox, _mail) = tokio::sync::mpsc::unbounded_channel();
        let events = MemEventRepository::new(outbox, Arc::new(testing::HexSealer));
        let log: Arc<dyn twofold_projections::log::EventLog> = Arc::new(events.clone());
        let reads = Arc::new(Reads::default());
        let gateway = CommandGateway::new(
            events,
            MailPolicy::new(mail()),
            Vec::new(),
            services.clone(),
        );
        let views = Arc::new(MemViewStore::default());
        let sessions = Arc::new(MemViewStore::default());
        let directory: Arc<dyn twofold_projections::UserDirectory> = Arc::new(
            MemUserDirectory::new(Arc::clone(&views), Arc::clone(&sessions)),
        );
        let parts = Parts {
            users: Arc::new(CountedUsers {
                inner: Arc::new(gateway),
                reads: Arc::clone(&reads),
            }),
            access: Arc::new(AccessCache::new(Arc::clone(&directory))),
            directory,
            unknown_accounts: Arc::new(CountedThrottle {
                inner: MemUnknownAccountThrottle::default(),
                reads: Arc::clone(&reads),
            }),
            mail: mail(),
            mail_queue: Arc::new(NoMail),
            services,
            hasher: Arc::clone(&hasher),
            metrics: Metrics::new(),
            views: ViewSet::Memory {
                log: Arc::clone(&log),
                users: views,
                sessions,
            },
            log,
            passkeys: crate::app::passkeys::Passkeys {
                webauthn: Arc::new(crate::config::Config::defaults().relying_party().unwrap()),
                ceremonies: crate::app::store::MemCeremonyStore::start(
                    crate::app::store::ceremonies::CEREMONY_SWEEP_PERIOD,
                ),
            },
        };
        let settings = Settings {
            totp_issuer: "Twofold".to_owned(),
            backup_codes: 8,
            signup_existing_email: ExistingEmail::Conceal,
            refresh_reuse_grace: time::Duration::seconds(10),
            reauth_window: time::Duration::minutes(5),
            admin_emails: Vec::new(),
            recent_users_ttl: std::time::Duration::ZERO,
        };
        Fixture {
            app: App::new(parts, settings),
            hasher,
            reads,
        }
    }

    fn account(email: &str) -> NewAccount {
        NewAccount {
            email: Email::parse(email).unwrap(),
            full_name: FullName::parse("Ada Lovelace").unwrap(),
            password: NewPassword::parse(SecretString::from(PASSWORD)).unwrap(),
            device: None,
        }
    }

    fn busy<T>(result: &Result<T, AppError>) -> bool {
        matches!(result, Err(AppError::Domain(UserError::HasherSaturated)))
    }

    #[tokio::test]
    async fn a_login_the_hash_pool_has_no_room_for_is_refused_before_any_read() {
        let Fixture { app, hasher, reads } = fixture();
        let metadata = EventMetadata::of(Actor::Anonymous);
        app.sign_up(account("ada@example.com"), &metadata)
            .await
            .unwrap();
        let before = reads.count();

        let held = hasher.hold_busy(1);
        assert!(!hasher.has_room());
        // A known address and an unknown one get the same refusal, and neither is looked up.
        for username in ["ada@example.com", "nobody@example.com", "not an address"] {
            let refused = app
                .log_in(username, SecretString::from(PASSWORD), &metadata)
                .await;
            assert!(busy(&refused), "{username}: {refused:?}");
            assert_eq!(reads.count(), before, "{username} was looked up");
        }

        // Once the pool drains, the same login reads and succeeds.
        drop(held);
        let mut outcome = None;
        for _ in 0..200 {
            let result = app
                .log_in("ada@example.com", SecretString::from(PASSWORD), &metadata)
                .await;
            if !busy(&result) {
                outcome = Some(result);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            matches!(outcome, Some(Ok(LoginOutcome::LoggedIn(_)))),
            "{outcome:?}"
        );
        assert!(reads.count() > before);
    }

    #[tokio::test]
    async fn a_sign_up_the_hash_pool_has_no_room_for_is_refused_before_any_read() {
        let Fixture { app, hasher, reads } = fixture();
        let metadata = EventMetadata::of(Actor::Anonymous);
        app.sign_up(account("ada@example.com"), &metadata)
            .await
            .unwrap();
        let before = reads.count();

        let _held = hasher.hold_busy(1);
        // A taken address (concealed) and a new one: the same refusal, nothing read.
        for email in ["ada@example.com", "grace@example.com"] {
            let refused = app.sign_up(account(email), &metadata).await;
            assert!(busy(&refused), "{email}: {:?}", refused.err());
            assert_eq!(reads.count(), before, "sign-up of {email} read the store");
        }
    }
}
