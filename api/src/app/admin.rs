//! Operator actions run from the command line against the configured database.

use std::collections::BTreeMap;

use twofold_domain::values::{Email, UserId};
use twofold_domain::{UserCommand, UserEvent};

use crate::app::gateway::{no_mail, CommandMetadata};
use crate::config::Config;
use crate::startup;

/// What `users grant-admin` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOutcome {
    /// The role was granted (an `AdminGranted` event was recorded).
    Granted,
    /// The user already had it; nothing was recorded.
    AlreadyAdmin,
}

/// The configured database's command side, for a subcommand named `what`.
async fn backend(
    config: &Config,
    what: &str,
) -> anyhow::Result<(startup::Backend, sqlx::PgPool, twofold_domain::UserServices)> {
    let keys = config.keys().map_err(anyhow::Error::msg)?;
    let (services, _) = startup::services(config, &keys)?;
    let Some(database_url) = &config.database_url else {
        anyhow::bail!(
            "{what} needs DATABASE_URL: the embedded store lives only inside a running \
             `twofold serve`"
        );
    };
    let pool = startup::connect(database_url, 2).await?;
    let backend = startup::backend(&startup::Store::Postgres(pool.clone()), services.clone());
    Ok((backend, pool, services))
}

fn cli_metadata() -> CommandMetadata {
    CommandMetadata {
        actor: "cli".to_owned(),
        ..CommandMetadata::default()
    }
}

/// Gives the user with `email` the admin role, recorded with `cli` as the actor.
pub async fn grant_admin(config: &Config, email: &str) -> anyhow::Result<GrantOutcome> {
    let (backend, _, _) = backend(config, "users grant-admin").await?;
    let email = Email::parse(email).map_err(|error| anyhow::anyhow!("{email}: {error}"))?;
    let user_id = backend
        .users
        .find_by_email(&email)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user has the email address {email}"))?;
    let events = backend
        .users
        .execute(user_id, UserCommand::GrantAdmin, cli_metadata(), &no_mail)
        .await?;
    Ok(if events.is_empty() {
        GrantOutcome::AlreadyAdmin
    } else {
        GrantOutcome::Granted
    })
}

/// What `keys reseal` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResealReport {
    /// Users checked.
    pub users: usize,
    /// TOTP seeds sealed again under the current key.
    pub resealed: usize,
    /// Retired key ids that still key some user's digests, with how many users.
    pub retired_keys_in_use: BTreeMap<String, usize>,
}

/// Seals every TOTP seed under a retired key again under the current one (a `SeedResealed`
/// event each, with `cli` as the actor), and reports which retired keys digests still need.
/// Safe to run again, and while the service runs: a user changed meanwhile is retried.
pub async fn reseal(config: &Config) -> anyhow::Result<ResealReport> {
    let (backend, pool, services) = backend(config, "keys reseal").await?;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT aggregate_id::uuid FROM events WHERE aggregate_type = 'User'",
    )
    .fetch_all(&pool)
    .await?;
    let current = services.sealer.current_key_id().to_owned();
    let mut report = ResealReport::default();
    for id in ids.into_iter().map(UserId::from_uuid) {
        let events = backend
            .users
            .execute(id, UserCommand::ResealSecrets, cli_metadata(), &no_mail)
            .await?;
        report.users += 1;
        report.resealed += events
            .iter()
            .filter(|event| matches!(event, UserEvent::SeedResealed { .. }))
            .count();
        let user = backend.users.load(id).await?;
        for key_id in user.sealing_key_ids() {
            if key_id != current {
                *report
                    .retired_keys_in_use
                    .entry(key_id.to_owned())
                    .or_default() += 1;
            }
        }
    }
    Ok(report)
}

/// Replays the log into fresh views, compares them with the live ones and, with `apply`,
/// swaps them in (see `twofold_projections::rebuild`).
pub async fn rebuild_views(
    config: &Config,
    apply: bool,
) -> anyhow::Result<twofold_projections::rebuild::RebuildReport> {
    let Some(database_url) = &config.database_url else {
        anyhow::bail!(
            "views rebuild needs DATABASE_URL: the embedded store lives only inside a running \
             `twofold serve`"
        );
    };
    let pool = startup::connect(database_url, 4).await?;
    let views = startup::ViewSet::Postgres(pool);
    Ok(crate::app::views::rebuild(&views, apply).await?)
}
