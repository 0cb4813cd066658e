//! Operator actions run from the command line against the configured database.

use twofold_domain::values::Email;
use twofold_domain::UserCommand;

use crate::config::Config;
use crate::gateway::{no_mail, CommandMetadata};
use crate::startup;

/// What `users grant-admin` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOutcome {
    /// The role was granted (an `AdminGranted` event was recorded).
    Granted,
    /// The user already had it; nothing was recorded.
    AlreadyAdmin,
}

/// Gives the user with `email` the admin role, recorded with `cli` as the actor.
pub async fn grant_admin(config: &Config, email: &str) -> anyhow::Result<GrantOutcome> {
    let keys = config.keys().map_err(anyhow::Error::msg)?;
    let (services, _) = startup::services(config, &keys)?;
    let Some(database_url) = &config.database_url else {
        anyhow::bail!(
            "users grant-admin needs DATABASE_URL: the embedded store lives only inside a running \
             `twofold serve`"
        );
    };
    let pool = startup::connect(database_url, 2).await?;
    let backend = startup::backend(&startup::Store::Postgres(pool), services);
    let email = Email::parse(email).map_err(|error| anyhow::anyhow!("{email}: {error}"))?;
    let user_id = backend
        .users
        .find_by_email(&email)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user has the email address {email}"))?;
    let metadata = CommandMetadata {
        actor: "cli".to_owned(),
        ..CommandMetadata::default()
    };
    let events = backend
        .users
        .execute(user_id, UserCommand::GrantAdmin, metadata, &no_mail)
        .await?;
    Ok(if events.is_empty() {
        GrantOutcome::AlreadyAdmin
    } else {
        GrantOutcome::Granted
    })
}
