//! What admins and operators do: list users, lock and unlock accounts, end a user's sessions
//! (over HTTP, as an admin), grant the admin role and move secrets to a new sealing key (on
//! the command line, as `cli`). Every change is a command whose metadata names the actor.

use std::collections::BTreeMap;

use twofold_domain::values::{Email, UserId};
use twofold_domain::{Actor, EventMetadata, UserCommand, UserEvent};
use twofold_projections::UserView;

use super::mail_policy::MailSecrets;
use super::{App, AppError};

/// An admin action on a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// Lock the account: no login completes and every session ends until unlocked.
    Lock,
    /// Unlock it.
    Unlock,
    /// End every session of the user.
    EndSessions,
}

/// What `users grant-admin` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOutcome {
    /// The role was granted (an `AdminGranted` event was recorded).
    Granted,
    /// The user already had it; nothing was recorded.
    AlreadyAdmin,
}

/// What `keys reseal` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResealReport {
    /// Users checked.
    pub users: usize,
    /// TOTP seeds sealed again under the current key.
    pub resealed: usize,
    /// Users' data keys sealed again under the current key.
    pub data_keys_resealed: usize,
    /// Address reservations moved to the current key's digest.
    pub addresses_reindexed: usize,
    /// Retired key ids that still key some user's digests, with how many users.
    pub retired_keys_in_use: BTreeMap<String, usize>,
}

impl App {
    /// Up to `limit` users after the first `offset`, ordered by email.
    pub async fn list_users(&self, offset: u64, limit: u64) -> Result<Vec<UserView>, AppError> {
        Ok(self.directory.list(offset, limit).await?)
    }

    /// Applies `action` to `user_id`; `metadata` names the admin.
    pub async fn act_on_user(
        &self,
        user_id: UserId,
        action: AdminAction,
        metadata: &EventMetadata,
    ) -> Result<(), AppError> {
        let command = match action {
            AdminAction::Lock => UserCommand::LockAccount,
            AdminAction::Unlock => UserCommand::UnlockAccount,
            AdminAction::EndSessions => UserCommand::EndAllSessions,
        };
        self.users
            .execute(user_id, command, metadata, &MailSecrets::none())
            .await?;
        tracing::info!(target: "security", actor = %metadata.actor, %user_id, ?action, "admin action");
        Ok(())
    }

    /// Gives the user with `email` the admin role, recorded with `actor`.
    pub async fn grant_admin(
        &self,
        email: &Email,
        actor: Actor,
    ) -> Result<Option<GrantOutcome>, AppError> {
        let Some(user_id) = self.users.find_by_email(email).await? else {
            return Ok(None);
        };
        let committed = self
            .users
            .execute(
                user_id,
                UserCommand::GrantAdmin,
                &EventMetadata::of(actor),
                &MailSecrets::none(),
            )
            .await?;
        Ok(Some(if committed.events.is_empty() {
            GrantOutcome::AlreadyAdmin
        } else {
            tracing::info!(target: "security", %actor, %user_id, "admin role granted");
            GrantOutcome::Granted
        }))
    }

    /// Gives the admin role to every account of `TWOFOLD_ADMIN_EMAILS` that exists (at
    /// start-up; the others get it when they sign up), recorded with `config` as the actor.
    pub async fn grant_configured_admins(&self) -> Result<(), AppError> {
        for email in &self.settings.admin_emails {
            match self.grant_admin(email, Actor::Config).await? {
                Some(GrantOutcome::Granted) => {
                    tracing::info!(%email, "admin role granted (TWOFOLD_ADMIN_EMAILS)");
                }
                Some(GrantOutcome::AlreadyAdmin) => {}
                None => tracing::info!(
                    %email,
                    "TWOFOLD_ADMIN_EMAILS: no account yet; the role is granted at sign-up"
                ),
            }
        }
        Ok(())
    }

    /// Whether `email` is one of `TWOFOLD_ADMIN_EMAILS` (in any letter case).
    pub(super) fn is_configured_admin(&self, email: &Email) -> bool {
        self.settings
            .admin_emails
            .iter()
            .any(|admin| admin.key() == email.key())
    }

    /// Seals every TOTP seed of `users` that a retired key sealed again under the current one
    /// (a `SeedResealed` event each, with `cli` as the actor), and reports which retired keys
    /// digests still need. Safe to run again, and while the service runs: a user changed
    /// meanwhile is retried.
    pub async fn reseal(&self, users: Vec<UserId>) -> Result<ResealReport, AppError> {
        let current = self.services.sealer.current_key_id().to_owned();
        let metadata = EventMetadata::of(Actor::Cli);
        let mut report = ResealReport::default();
        for id in users {
            // An erased user has nothing left to reseal: their key is gone.
            if self.users.load(id).await?.is_erased() {
                continue;
            }
            let committed = self
                .users
                .execute(
                    id,
                    UserCommand::ResealSecrets,
                    &metadata,
                    &MailSecrets::none(),
                )
                .await?;
            report.users += 1;
            let personal = self.users.reseal_personal_data(id).await?;
            report.data_keys_resealed += usize::from(personal.key);
            report.addresses_reindexed += usize::from(personal.address);
            report.resealed += committed
                .events
                .iter()
                .filter(|event| matches!(event, UserEvent::SeedResealed { .. }))
                .count();
            for key_id in committed.user.sealing_key_ids() {
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
}
