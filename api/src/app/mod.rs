//! The use cases HTTP and the command line share: sign-up, login, sessions, the second factor,
//! passwords, admin actions and mail, over the command gateway and the views. Nothing here
//! knows HTTP (no axum, no `crate::http`): a handler extracts, calls one use case, and maps
//! its one outcome to one response.

pub mod access;
pub mod admin;
pub mod audit;
pub mod client_limit;
pub mod erasure;
mod error;
pub mod gateway;
mod login;
pub mod mail;
pub mod mail_policy;
pub mod passkeys;
mod password;
mod secrets;
mod sessions;
mod signup;
pub mod store;
mod tasks;
mod tfa;
pub mod unknown_accounts;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;
use twofold_domain::values::{Email, UserId};
use twofold_domain::UserServices;
use twofold_projections::log::EventLog;
use twofold_projections::{UserDirectory, UserView};

use crate::adapters::Argon2Hasher;
use crate::metrics::Metrics;
use access::{AccessCache, UserAccess};
use gateway::Users;
use mail::{MailFactory, MailQueue};
use unknown_accounts::UnknownAccountThrottle;

pub use error::AppError;
pub use secrets::ScanCode;
pub use sessions::Proofs;
pub use signup::{ExistingEmail, NewAccount};
pub use tfa::{AuthenticatorCode, DeviceSwitch};

/// The settings the use cases follow.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The issuer authenticator apps show.
    pub totp_issuer: String,
    /// Backup codes per enrolment.
    pub backup_codes: usize,
    /// How sign-up answers an address that already has an account.
    pub signup_existing_email: ExistingEmail,
    /// How long a rotated refresh token stays acceptable.
    pub refresh_reuse_grace: time::Duration,
    /// How long after a full sign-in a session counts as re-authenticated.
    pub reauth_window: time::Duration,
    /// Addresses that get the admin role from the configuration (`TWOFOLD_ADMIN_EMAILS`).
    pub admin_emails: Vec<twofold_domain::values::Email>,
    /// How long a user stays in memory after a command on them (`TWOFOLD_RECENT_USERS_TTL`).
    pub recent_users_ttl: std::time::Duration,
}

/// Twofold's use cases, over the stores and adapters the composition root chose.
pub struct App {
    users: Arc<dyn Users>,
    directory: Arc<dyn UserDirectory>,
    access: Arc<AccessCache>,
    unknown_accounts: Arc<dyn UnknownAccountThrottle>,
    mail: MailFactory,
    mail_queue: Arc<dyn MailQueue>,
    services: UserServices,
    hasher: Arc<Argon2Hasher>,
    settings: Settings,
    metrics: Metrics,
    /// Work a request starts and does not wait for (a password reset's email): shutdown
    /// waits for it.
    background: TaskTracker,
    /// Rations that work for password resets (see [`password::ResetQueue`]).
    resets: password::ResetQueue,
    /// The views and the log they are rebuilt from.
    views: views::ViewSet,
    /// The event log, read back for audits.
    log: Arc<dyn EventLog>,
    /// The WebAuthn relying party and its ceremonies.
    passkeys: passkeys::Passkeys,
}

/// What the use cases run on.
pub struct Parts {
    /// The command side.
    pub users: Arc<dyn Users>,
    /// The user views.
    pub directory: Arc<dyn UserDirectory>,
    /// What access tokens may still do, cached over the views.
    pub access: Arc<AccessCache>,
    /// Failed logins to addresses without an account.
    pub unknown_accounts: Arc<dyn UnknownAccountThrottle>,
    /// Builds the emails no command causes (the test email).
    pub mail: MailFactory,
    /// Queues those emails and reports task states.
    pub mail_queue: Arc<dyn MailQueue>,
    /// The domain's ports.
    pub services: UserServices,
    /// The password hasher, for the dummy verification of unknown accounts.
    pub hasher: Arc<Argon2Hasher>,
    /// Login, lockout and command counters.
    pub metrics: Metrics,
    /// The views and the log they are rebuilt from.
    pub views: views::ViewSet,
    /// The event log, read back for audits.
    pub log: Arc<dyn EventLog>,
    /// The WebAuthn relying party and its ceremonies.
    pub passkeys: passkeys::Passkeys,
}

impl App {
    /// The use cases over `parts`, following `settings`.
    pub fn new(parts: Parts, settings: Settings) -> Self {
        Self {
            users: parts.users,
            directory: parts.directory,
            access: parts.access,
            unknown_accounts: parts.unknown_accounts,
            mail: parts.mail,
            mail_queue: parts.mail_queue,
            services: parts.services,
            hasher: parts.hasher,
            settings,
            metrics: parts.metrics,
            background: TaskTracker::new(),
            resets: password::ResetQueue::default(),
            views: parts.views,
            log: parts.log,
            passkeys: parts.passkeys,
        }
    }

    /// The user as clients see them (from the user view).
    pub async fn user_view(&self, user: UserId) -> Result<Option<UserView>, AppError> {
        Ok(self.directory.find(user).await?)
    }

    /// The user who owns `email`, in any letter case.
    pub async fn user_id_of(&self, email: &Email) -> Result<Option<UserId>, AppError> {
        self.users.find_by_email(email).await
    }

    /// `user` as their access tokens see them (their view and live sessions), from memory
    /// when a recent copy is there (see [`access`]); `None` if they do not exist.
    pub async fn access(&self, user: UserId) -> Result<Option<Arc<UserAccess>>, AppError> {
        self.access.access(user).await
    }

    /// Whether `user` exists and has the admin role (from the user view).
    pub async fn is_admin(&self, user: UserId) -> Result<Option<bool>, AppError> {
        Ok(self.access(user).await?.map(|access| access.view.is_admin))
    }

    /// Waits at most `timeout` for the work requests started in the background.
    pub async fn finish_background_work(&self, timeout: Duration) {
        self.background.close();
        if tokio::time::timeout(timeout, self.background.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.background.len(),
                "background work still running at shutdown is cut off"
            );
        }
    }
}
