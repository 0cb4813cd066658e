//! The `User` state and its `Aggregate` impl: `handle` dispatches, `apply` assigns.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::throttle::{Throttle, ThrottledFactor};
use super::{UserCommand, UserError, UserEvent, MAX_OPEN_CHALLENGES};
use crate::services::UserServices;
use crate::user::{Device, DeviceSecret};
use crate::values::{ChallengeId, Email, FullName, KeyedDigest, PasswordHash, UserId};

/// The shape of a folded [`User`] as snapshots store it. Change it whenever the state's
/// fields or the way an event folds into them change: snapshots of another version are
/// ignored and the user is folded from every event again. (A field merely added with a
/// default would read from an old snapshot without the facts that older events folded into
/// it.) A test pins the shape to this version.
pub const SNAPSHOT_VERSION: &str = "5";

/// One user, as folded from their events.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub(super) account: Option<Account>,
    pub(super) is_admin: bool,
    /// Locked by an admin: no login completes.
    pub(super) account_locked: bool,
    pub(super) tfa: Option<TfaSettings>,
    pub(super) challenges: Vec<Challenge>,
    /// The highest TOTP time step accepted so far; codes of this or earlier steps are refused.
    pub(super) last_totp_step: Option<u64>,
    /// The pending password reset token's digest and expiry.
    #[serde(with = "crate::rfc3339::option_pair")]
    pub(super) password_reset: Option<(KeyedDigest, OffsetDateTime)>,
    /// Live sessions, oldest first.
    pub(super) sessions: Vec<super::sessions::Session>,
    /// Failure counts and locks, per kind of factor.
    pub(super) throttles: super::throttle::Throttles,
    /// Erased: the stream is closed, no command applies any more.
    pub(super) erased: bool,
    /// When the owner was last told of a sign-up attempt with their address.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub(super) last_sign_up_notice: Option<OffsetDateTime>,
    /// When the latest reset emails were requested, oldest first: at most
    /// [`super::RESET_EMAILS_PER_DAY`], all a cooldown and the daily cap need.
    #[serde(default, with = "crate::rfc3339::vec")]
    pub(super) reset_requests: Vec<OffsetDateTime>,
    /// The pending confirmation code's digest and expiry (an email device's proof for a
    /// sensitive change); spent by its use.
    #[serde(default, with = "crate::rfc3339::option_pair")]
    pub(super) confirmation_code: Option<(KeyedDigest, OffsetDateTime)>,
    /// When the latest confirmation code was issued, for the cooldown between two.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub(super) confirmation_code_sent_at: Option<OffsetDateTime>,
    /// The registered passkeys, oldest first (at most [`super::MAX_PASSKEYS`]).
    #[serde(default)]
    pub(super) passkeys: Vec<super::RegisteredPasskey>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Account {
    pub(super) id: UserId,
    pub(super) email: Email,
    pub(super) full_name: FullName,
    pub(super) password_hash: PasswordHash,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct TfaSettings {
    pub(super) device: Device,
    /// Digests of the issued backup codes; a spent code's slot is `None`.
    pub(super) backup_codes: Vec<Option<KeyedDigest>>,
}

/// A password login waiting for its second factor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Challenge {
    pub(super) id: ChallengeId,
    pub(super) failures: u32,
    #[serde(with = "crate::rfc3339::option_pair")]
    pub(super) email_code: Option<(KeyedDigest, OffsetDateTime)>,
}

impl User {
    /// Whether the user was erased (their stream is closed).
    pub fn is_erased(&self) -> bool {
        self.erased
    }

    /// The user's id, once they have signed up (and until they are erased).
    pub fn id(&self) -> Option<UserId> {
        self.account.as_ref().map(|account| account.id)
    }

    /// The email address, once signed up.
    pub fn email(&self) -> Option<&Email> {
        self.account.as_ref().map(|account| &account.email)
    }

    /// The enrolled second-factor device, if two-factor authentication is on.
    pub fn tfa_device(&self) -> Option<&Device> {
        self.tfa.as_ref().map(|tfa| &tfa.device)
    }

    /// Whether the user has the admin role.
    pub fn is_admin(&self) -> bool {
        self.is_admin
    }

    /// How many backup codes are unused.
    pub fn backup_codes_remaining(&self) -> usize {
        self.tfa.as_ref().map_or(0, |tfa| {
            tfa.backup_codes
                .iter()
                .filter(|code| code.is_some())
                .count()
        })
    }

    pub(super) fn account(&self) -> Result<&Account, UserError> {
        self.account.as_ref().ok_or(UserError::UnknownUser)
    }

    /// A new password voids everything the old one opened: a pending reset token, open login
    /// challenges, and the password's failure count.
    fn set_new_password(&mut self, password_hash: PasswordHash) {
        if let Some(account) = self.account.as_mut() {
            account.password_hash = password_hash;
        }
        self.password_reset = None;
        self.confirmation_code = None;
        self.challenges.clear();
        *self.throttles.get_mut(ThrottledFactor::Password) = Throttle::default();
    }

    pub(super) fn challenge(&self, id: ChallengeId) -> Option<&Challenge> {
        self.challenges.iter().find(|challenge| challenge.id == id)
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = UserServices;

    async fn handle(
        &mut self,
        command: UserCommand,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        match command {
            UserCommand::SignUp(command) => self.sign_up(command, services, sink).await,
            UserCommand::EnableTfa(command) => self.enable_tfa(command, services, sink).await,
            UserCommand::LogIn(command) => self.log_in(command, services, sink).await,
            UserCommand::VerifyTfaCode(command) => {
                self.verify_tfa_code(command, services, sink).await
            }
            UserCommand::UseBackupCode(command) => {
                self.use_backup_code(command, services, sink).await
            }
            UserCommand::RefreshSession(command) => {
                self.refresh_session(command, services, sink).await
            }
            UserCommand::EndSession(command) => self.end_session(command, services, sink).await,
            UserCommand::EndOtherSessions(command) => {
                self.end_other_sessions(command, services, sink).await
            }
            UserCommand::ChangePassword(command) => {
                self.change_password(command, services, sink).await
            }
            UserCommand::RequestPasswordReset(command) => {
                self.request_password_reset(command, services, sink).await
            }
            UserCommand::ResetPassword(command) => {
                self.reset_password(command, services, sink).await
            }
            UserCommand::DisableTfa(command) => self.disable_tfa(command, services, sink).await,
            UserCommand::SwitchTfaDevice(command) => {
                self.switch_tfa_device(command, services, sink).await
            }
            UserCommand::RegenerateBackupCodes(command) => {
                self.regenerate_backup_codes(command, services, sink).await
            }
            UserCommand::GrantAdmin => self.grant_admin(services, sink).await,
            UserCommand::LockAccount => self.lock_account(services, sink).await,
            UserCommand::UnlockAccount => self.unlock_account(services, sink).await,
            UserCommand::EndAllSessions => self.end_all_sessions_by_admin(services, sink).await,
            UserCommand::ResealSecrets => self.reseal_secrets(services, sink).await,
            UserCommand::NoteSignUpAttempt => self.note_sign_up_attempt(services, sink).await,
            UserCommand::RecordAuditRead(scope) => {
                self.record_audit_read(scope, services, sink).await
            }
            UserCommand::EraseOwnAccount(command) => {
                self.erase_own_account(command, services, sink).await
            }
            UserCommand::EraseAccount => self.erase_account(services, sink).await,
            UserCommand::Reauthenticate(reauthentication) => self
                .reauthenticate_caller(&reauthentication, services, sink)
                .await
                .map(|_| ()),
            UserCommand::RequestConfirmationCode(command) => {
                self.request_confirmation_code(command, services, sink)
                    .await
            }
            UserCommand::RegisterPasskey(command) => {
                self.register_passkey(command, services, sink).await
            }
            UserCommand::RenamePasskey(command) => {
                self.rename_passkey(command, services, sink).await
            }
            UserCommand::RemovePasskey(command) => {
                self.remove_passkey(command, services, sink).await
            }
            UserCommand::UsePasskey(command) => self.use_passkey(command, services, sink).await,
        }
    }

    fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::SignedUp {
                user_id,
                email,
                full_name,
                password_hash,
                ..
            } => {
                self.account = Some(Account {
                    id: user_id,
                    email,
                    full_name,
                    password_hash,
                });
            }
            UserEvent::TfaEnabled {
                device,
                backup_codes,
                ..
            } => {
                self.tfa = Some(TfaSettings {
                    device,
                    backup_codes: backup_codes.into_iter().map(Some).collect(),
                });
            }
            UserEvent::LoggedIn { .. } => {
                *self.throttles.get_mut(ThrottledFactor::Password) = Throttle::default();
            }
            UserEvent::SecondFactorRequired { challenge_id, .. } => {
                *self.throttles.get_mut(ThrottledFactor::Password) = Throttle::default();
                if self.challenges.len() >= MAX_OPEN_CHALLENGES {
                    self.challenges.remove(0);
                }
                self.challenges.push(Challenge {
                    id: challenge_id,
                    failures: 0,
                    email_code: None,
                });
            }
            UserEvent::EmailCodeIssued {
                challenge_id,
                digest,
                expires_at,
            } => {
                if let Some(challenge) = self.challenges.iter_mut().find(|c| c.id == challenge_id) {
                    challenge.email_code = Some((digest, expires_at));
                }
            }
            UserEvent::LoginFailed {
                factor,
                challenge_id,
                ..
            } => {
                self.throttles.get_mut(factor.into()).failures += 1;
                if let Some(challenge) =
                    challenge_id.and_then(|id| self.challenges.iter_mut().find(|c| c.id == id))
                {
                    challenge.failures += 1;
                }
            }
            UserEvent::FactorLocked { factor, until, .. } => {
                self.throttles.get_mut(factor).locked_until = Some(until);
            }
            UserEvent::TfaVerified {
                challenge_id,
                totp_step,
                ..
            } => {
                *self.throttles.get_mut(ThrottledFactor::SecondFactor) = Throttle::default();
                self.challenges
                    .retain(|challenge| challenge.id != challenge_id);
                if totp_step.is_some() {
                    self.last_totp_step = totp_step;
                }
            }
            UserEvent::BackupCodeConsumed {
                challenge_id,
                index,
                ..
            } => {
                *self.throttles.get_mut(ThrottledFactor::BackupCode) = Throttle::default();
                self.challenges
                    .retain(|challenge| challenge.id != challenge_id);
                if let Some(slot) = self
                    .tfa
                    .as_mut()
                    .and_then(|tfa| tfa.backup_codes.get_mut(index))
                {
                    *slot = None;
                }
            }
            UserEvent::SessionStarted {
                session_id,
                refresh_id,
                expires_at,
                at,
            } => {
                self.sessions.push(super::sessions::Session {
                    id: session_id,
                    current: refresh_id,
                    previous: None,
                    expires_at,
                    signed_in_at: at,
                });
            }
            UserEvent::SessionRefreshed {
                session_id,
                refresh_id,
                at,
            } => {
                if let Some(session) = self.sessions.iter_mut().find(|s| s.id == session_id) {
                    session.previous = Some((session.current, at));
                    session.current = refresh_id;
                }
            }
            UserEvent::SessionEnded { session_id, .. } => {
                self.sessions.retain(|session| session.id != session_id);
            }
            UserEvent::PasswordChanged { password_hash, .. } => {
                self.set_new_password(password_hash);
            }
            UserEvent::PasswordResetRequested {
                digest,
                expires_at,
                at,
            } => {
                self.password_reset = Some((digest, expires_at));
                self.note_reset_request(at);
            }
            UserEvent::PasswordReset { password_hash, .. } => {
                self.set_new_password(password_hash);
            }
            UserEvent::SecondFactorConfirmed {
                factor,
                totp_step,
                backup_code_index,
                ..
            } => {
                *self.throttles.get_mut(factor.into()) = Throttle::default();
                if totp_step.is_some() {
                    self.last_totp_step = totp_step;
                }
                if let Some(slot) = backup_code_index
                    .and_then(|index| self.tfa.as_mut()?.backup_codes.get_mut(index))
                {
                    *slot = None;
                }
                if factor == super::Factor::EmailCode {
                    self.confirmation_code = None;
                }
            }
            UserEvent::TfaDisabled { .. } => {
                self.tfa = None;
                self.confirmation_code = None;
                self.challenges.clear();
            }
            UserEvent::TfaDeviceChanged {
                device,
                backup_codes,
                ..
            } => {
                self.confirmation_code = None;
                self.tfa = Some(TfaSettings {
                    device,
                    backup_codes: backup_codes.into_iter().map(Some).collect(),
                });
            }
            UserEvent::BackupCodesRegenerated { backup_codes, .. } => {
                if let Some(tfa) = self.tfa.as_mut() {
                    tfa.backup_codes = backup_codes.into_iter().map(Some).collect();
                }
            }
            UserEvent::AccountLocked { .. } => self.account_locked = true,
            UserEvent::AccountUnlocked { .. } => self.account_locked = false,
            UserEvent::AdminGranted { .. } => {
                self.is_admin = true;
            }
            UserEvent::SignUpAttempted { at } => self.last_sign_up_notice = Some(at),
            UserEvent::ConfirmationCodeIssued {
                digest,
                expires_at,
                at,
            } => {
                self.confirmation_code = Some((digest, expires_at));
                self.confirmation_code_sent_at = Some(at);
            }
            // A read changes nothing of the user; it is kept for the record.
            UserEvent::AuditTrailRead { .. } => {}
            // Nothing of the person is kept, and the stream stays closed.
            UserEvent::UserErased { .. } => {
                *self = Self {
                    erased: true,
                    ..Self::default()
                };
            }
            UserEvent::SeedResealed { seed, .. } => {
                if let Some(tfa) = self.tfa.as_mut() {
                    tfa.device.secret = DeviceSecret::CodeGenerator { seed };
                }
            }
            passkey @ (UserEvent::PasskeyRegistered { .. }
            | UserEvent::PasskeyRenamed { .. }
            | UserEvent::PasskeyRemoved { .. }
            | UserEvent::PasskeyUsed { .. }
            | UserEvent::PasskeyCounterRegressed { .. }) => self.apply_passkey(passkey),
        }
    }
}
