//! Sign-up, optionally with a second factor, and the answer to a taken address.

use twofold_domain::user::SignUp;
use twofold_domain::values::{DeviceType, Email, FullName, NewPassword, UserId};
use twofold_domain::{Actor, EventMetadata, UserCommand, UserError};

use super::mail_policy::MailSecrets;
use super::{App, AppError, ScanCode};

/// A new account, parsed.
pub struct NewAccount {
    /// The login name.
    pub email: Email,
    /// The display name.
    pub full_name: FullName,
    /// A password that passed the policy.
    pub password: NewPassword,
    /// The second-factor device, when the user turns 2FA on at once.
    pub device: Option<DeviceType>,
}

/// How sign-up answers an email that already has an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExistingEmail {
    /// 409 with `user.email_taken`: clear for clients, but it tells anyone that the address
    /// has an account.
    Conflict,
    /// The same status and body as a new account; the owner gets an email saying someone
    /// tried to sign up with their address.
    Conceal,
}

impl App {
    /// Creates the account. With an authenticator app the answer is the code to scan. When
    /// sign-up conceals existing accounts, a taken address gets the very same answer (the code
    /// of a seed never stored) and its owner an email; otherwise it is `user.email_taken`.
    /// While the hash pool has no room it is `service.busy` before anything is read.
    pub async fn sign_up(
        &self,
        account: NewAccount,
        metadata: &EventMetadata,
    ) -> Result<Option<ScanCode>, AppError> {
        self.ensure_hash_room()?;
        let user_id = UserId::from_uuid(self.services.rng.uuid());
        let enrolment = account.device.map(|device| self.new_enrolment(device));
        let (tfa, seed, secrets) = match enrolment {
            Some(new) => (Some(new.enrolment), new.seed, new.mail),
            None => (None, None, MailSecrets::none()),
        };
        let enrolled = tfa.is_some();
        let command = UserCommand::SignUp(SignUp {
            user_id,
            email: account.email.clone(),
            full_name: account.full_name,
            password: account.password,
            tfa,
        });
        match self
            .users
            .execute(user_id, command, metadata, &secrets)
            .await
        {
            Ok(_) => {
                tracing::info!(target: "security", %user_id, "signed up");
                if enrolled {
                    tracing::info!(target: "security", %user_id, "two-factor authentication enabled");
                }
                if self.is_configured_admin(&account.email) {
                    self.grant_configured_admin(user_id).await;
                }
            }
            Err(AppError::Domain(UserError::EmailTaken))
                if self.settings.signup_existing_email == ExistingEmail::Conceal =>
            {
                self.tell_owner_of_sign_up_attempt(&account.email, metadata)
                    .await?;
            }
            Err(error) => return Err(error),
        }
        Ok(self.scan_code(&account.email, seed.as_ref()))
    }

    /// Gives the new account of a `TWOFOLD_ADMIN_EMAILS` address the admin role, recorded
    /// with `config` as the actor. The account exists already, so a failure here does not fail
    /// the sign-up: it is logged, and the next start-up grants the role.
    async fn grant_configured_admin(&self, user_id: UserId) {
        let granted = self
            .users
            .execute(
                user_id,
                UserCommand::GrantAdmin,
                &EventMetadata::of(Actor::Config),
                &MailSecrets::none(),
            )
            .await;
        match granted {
            Ok(_) => {
                tracing::info!(target: "security", actor = %Actor::Config, %user_id, "admin role granted");
            }
            Err(error) => tracing::error!(
                %user_id,
                error.cause_chain = ?error,
                "granting the admin role of TWOFOLD_ADMIN_EMAILS failed; the next start grants it"
            ),
        }
    }

    /// A sign-up with a taken address, when sign-up conceals existing accounts: the owner is
    /// told by email (at most once per `SIGN_UP_NOTICE_INTERVAL`), and nothing else changes.
    async fn tell_owner_of_sign_up_attempt(
        &self,
        email: &Email,
        metadata: &EventMetadata,
    ) -> Result<(), AppError> {
        let Some(owner) = self.users.find_by_email(email).await? else {
            // Addresses are never released, so this cannot happen; the answer stays the same.
            return Ok(());
        };
        self.users
            .execute(
                owner,
                UserCommand::NoteSignUpAttempt,
                metadata,
                &MailSecrets::none(),
            )
            .await?;
        tracing::info!(target: "security", user_id = %owner, "sign-up with a taken address concealed");
        Ok(())
    }
}
