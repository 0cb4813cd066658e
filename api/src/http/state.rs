//! What every handler can reach.

use std::sync::Arc;

use twofold_domain::UserServices;
use twofold_projections::UserDirectory;

use crate::adapters::Argon2Hasher;
use crate::app::gateway::Users;
use crate::app::mail::{MailFactory, MailQueue};
use crate::app::unknown_accounts::UnknownAccountThrottle;
use crate::http::jwt::TokenService;
use crate::http::routes::Readiness;
use crate::metrics::Metrics;

/// Shared application state.
#[derive(Clone)]
pub struct AppState {
    /// The command side.
    pub users: Arc<dyn Users>,
    /// The user views.
    pub directory: Arc<dyn UserDirectory>,
    /// Failed logins to addresses without an account, throttled like a password.
    pub unknown_accounts: Arc<dyn UnknownAccountThrottle>,
    /// Issues and verifies tokens.
    pub tokens: Arc<TokenService>,
    /// Builds mail jobs with their codes sealed.
    pub mail: Arc<MailFactory>,
    /// Queues mail jobs no command causes; reports task states.
    pub mail_queue: Arc<dyn MailQueue>,
    /// The domain's ports, for generating secrets before a command.
    pub services: UserServices,
    /// The hasher, for the dummy verification on unknown emails.
    pub hasher: Arc<Argon2Hasher>,
    /// Issuer shown by authenticator apps.
    pub totp_issuer: Arc<str>,
    /// Backup codes per enrolment.
    pub backup_codes: usize,
    /// How sign-up answers an address that already has an account.
    pub signup_existing_email: crate::config::ExistingEmail,
    /// How long a rotated refresh token stays acceptable.
    pub refresh_reuse_grace: time::Duration,
    /// This service's Prometheus metrics.
    pub metrics: Metrics,
    /// What `/health/ready` checks.
    pub readiness: Readiness,
    /// The views and the log they are rebuilt from.
    pub views: crate::startup::ViewSet,
}
