//! What an operator runs from the command line against the configured database. Each action
//! composes the use cases from the configuration, as `twofold serve` does, and calls the same
//! use case an HTTP request would, with `cli` as the actor.

use secrecy::ExposeSecret;
use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;
use time::OffsetDateTime;
use twofold_domain::values::{Email, UserId};
use twofold_domain::{Actor, EventMetadata};

use twofold_projections::chain::{self, Head, Verification};
use twofold_projections::log::Checkpoint;
use twofold_projections::AuditedEvent;

use crate::app::admin::{GrantOutcome, ResealReport};
use crate::app::mail::OutboxMailQueue;
use crate::app::{App, AppError};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::startup::{self, Adapters, Store};

/// The use cases over the configured database, for the subcommand named `what`: what every
/// subcommand on the database starts with (connecting, migrating, bringing older data up to
/// date).
pub async fn app(config: &Config, what: &str) -> anyhow::Result<(Arc<App>, PgPool)> {
    let keys = config.keys().map_err(anyhow::Error::msg)?;
    let Some(database_url) = &config.database.url else {
        anyhow::bail!(
            "{what} needs DATABASE_URL: the embedded store lives only inside a running \
             `twofold serve`"
        );
    };
    let (services, hasher) = startup::services(config, &keys)?;
    // A views rebuild holds a lock, a snapshot scan and a read of the data keys at once.
    let pool = startup::connect(database_url.expose_secret(), 4).await?;
    startup::chain_older_events(&pool, &keys).await?;
    startup::seal_older_personal_data(&pool, &keys).await?;
    startup::index_addresses_by_digest(&pool, &keys).await?;
    let adapters = Adapters {
        services,
        hasher,
        mail_sealer: keys.sealing.mail_sealer(),
        chain_key: Arc::new(keys.sealing.chain_key()),
        mail_queue: Arc::new(OutboxMailQueue::queue_only(pool.clone())),
        webauthn: Arc::new(config.relying_party().map_err(anyhow::Error::msg)?),
    };
    let store = Store::Postgres(pool.clone());
    let app = startup::app(&store, adapters, startup::settings(config), &Metrics::new());
    Ok((app, pool))
}

/// Gives the user with `email` the admin role, recorded with `cli` as the actor.
pub async fn grant_admin(config: &Config, email: &str) -> anyhow::Result<GrantOutcome> {
    let (app, _) = app(config, "users grant-admin").await?;
    let email = Email::parse(email).map_err(|error| anyhow::anyhow!("{email}: {error}"))?;
    app.grant_admin(&email, Actor::Cli)
        .await?
        .with_context(|| format!("no user has the email address {email}"))
}

/// Erases the user `who` (an id or an email address), with `cli` as the actor and `reason`
/// recorded; returns their id.
pub async fn erase_user(
    config: &Config,
    who: &str,
    reason: Option<&str>,
) -> anyhow::Result<UserId> {
    let reason = crate::app::erasure::reason(reason)?;
    let (app, _) = app(config, "users erase").await?;
    let user_id = resolve(&app, who).await?;
    let metadata = EventMetadata {
        reason,
        ..EventMetadata::of(Actor::Cli)
    };
    app.erase_account(user_id, &metadata).await?;
    Ok(user_id)
}

/// Seals every TOTP seed under a retired key again under the current one, and reports which
/// retired keys digests still need (see [`App::reseal`]).
pub async fn reseal(config: &Config) -> anyhow::Result<ResealReport> {
    let (app, pool) = app(config, "keys reseal").await?;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT aggregate_id::uuid FROM events WHERE aggregate_type = 'User'",
    )
    .fetch_all(&pool)
    .await?;
    Ok(app
        .reseal(ids.into_iter().map(UserId::from_uuid).collect())
        .await?)
}

/// Replays the log into fresh views, compares them with the live ones and, with `apply`,
/// swaps them in (see `twofold_projections::rebuild`). Needs only the database.
pub async fn rebuild_views(
    config: &Config,
    apply: bool,
) -> anyhow::Result<twofold_projections::rebuild::RebuildReport> {
    if config.database.url.is_none() {
        anyhow::bail!(
            "views rebuild needs DATABASE_URL: the embedded mode's views are rebuilt inside the \
             running service, with POST /api/v1/admin/views/rebuild"
        );
    }
    // The use cases' view set: it opens the events' personal data with the users' keys.
    let (app, _pool) = app(config, "views rebuild").await?;
    Ok(app.rebuild_views(apply).await?)
}

/// Walks every user's chain of events with the chain keys of the current and retired sealing
/// keys, and, with `saved_head`, checks that no user lost newer events since it was taken.
pub async fn audit_verify(
    config: &Config,
    saved_head: Option<&Head>,
) -> anyhow::Result<Verification> {
    let keys = config.keys().map_err(anyhow::Error::msg)?;
    let Some(database_url) = &config.database.url else {
        anyhow::bail!("audit verify needs DATABASE_URL: only the Postgres store is chained");
    };
    let pool = startup::connect(database_url.expose_secret(), 2).await?;
    let chain_keys: Vec<_> = std::iter::once(&keys.sealing)
        .chain(&keys.retired_sealing)
        .map(|key| key.chain_key())
        .collect();
    Ok(chain::verify(&pool, &chain_keys, saved_head).await?)
}

/// The user `who` names: an id, or an email address.
async fn resolve(app: &App, who: &str) -> anyhow::Result<UserId> {
    if let Ok(id) = who.parse::<UserId>() {
        return Ok(id);
    }
    let email = Email::parse(who)
        .map_err(|_| anyhow::anyhow!("`{who}` is neither a user id nor an email address"))?;
    app.user_id_of(&email)
        .await?
        .with_context(|| format!("no user has the email address {email}"))
}

/// The events of the user `who` (an id or an email address) committed up to `as_of`, as
/// auditors read them; the read is recorded in the user's stream with `cli` as the actor.
pub async fn audit_history(
    config: &Config,
    who: &str,
    as_of: Option<OffsetDateTime>,
) -> anyhow::Result<Vec<AuditedEvent>> {
    let (app, _) = app(config, "audit history").await?;
    let user_id = resolve(&app, who).await?;
    Ok(app
        .audit_timeline(user_id, as_of, &EventMetadata::of(Actor::Cli))
        .await?)
}

/// Hands every event after `after` committed up to `until` to `each`, in log order; returns
/// how many.
pub async fn audit_export(
    config: &Config,
    after: Checkpoint,
    until: Option<OffsetDateTime>,
    each: impl FnMut(AuditedEvent) -> Result<(), AppError>,
) -> anyhow::Result<u64> {
    let (app, _) = app(config, "audit export").await?;
    tracing::info!(target: "security", after = %after, ?until, "audit export started");
    Ok(app.export_events(after, until, each).await?)
}
