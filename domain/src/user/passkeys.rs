//! Passkeys (WebAuthn credentials): registering, renaming and removing them, and accepting
//! their assertions as a login's second factor or as a login on their own.
//!
//! The WebAuthn cryptography (the challenge, the origin, the signature, user verification)
//! is checked by the caller with the relying-party library before a command reaches here:
//! this crate performs no I/O and holds each credential as the library serialised it. What is
//! decided here is what the account's state decides: how many passkeys and under which
//! names, which credential belongs to the user, the factor's throttle, the open login
//! challenge, and the sign counter.
//!
//! The sign counter (WebAuthn §6.1.1) is compared with the highest one this aggregate
//! accepted, not the one the ceremony started from: an assertion whose counter does not
//! advance (when either side counts, that is when either is above zero) may come from a
//! cloned authenticator, so it is refused and recorded as `PasskeyCounterRegressed`. It
//! counts as a failure of the passkey factor, like any refused assertion.
//!
//! Registering a passkey needs the proofs of a sensitive change; the caller asks for them
//! before it starts the ceremony (`Reauthenticate`), so the finished ceremony is recorded
//! here as it is. Removing one needs a re-authentication, checked here: a passkey may be the
//! account's only second factor, and losing it must not be one stolen access token away.

use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::aggregate::User;
use super::{
    Factor, PasskeyAssertion, PasskeyStep, RegisterPasskey, RemovePasskey, RenamePasskey,
    ThrottledFactor, UsePasskey, UserError, UserEvent,
};
use crate::services::UserServices;
use crate::values::{PasskeyCredential, PasskeyId, PasskeyName};

/// The most passkeys one account holds.
pub const MAX_PASSKEYS: usize = 10;

/// One of the user's passkeys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredPasskey {
    pub(super) id: PasskeyId,
    pub(super) credential_id: String,
    pub(super) credential: PasskeyCredential,
    pub(super) name: PasskeyName,
    /// The highest sign counter accepted.
    pub(super) counter: u32,
    pub(super) backup_state: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub(super) created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub(super) last_used_at: Option<OffsetDateTime>,
}

impl RegisteredPasskey {
    /// Twofold's id for it.
    pub fn id(&self) -> PasskeyId {
        self.id
    }

    /// The WebAuthn credential id, base64url.
    pub fn credential_id(&self) -> &str {
        &self.credential_id
    }

    /// The public credential, as the WebAuthn library serialised it at registration.
    pub fn credential(&self) -> &PasskeyCredential {
        &self.credential
    }

    /// The owner's name for it.
    pub fn name(&self) -> &PasskeyName {
        &self.name
    }

    /// The highest sign counter accepted.
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// Whether the credential was backed up (synced) when last seen.
    pub fn backup_state(&self) -> bool {
        self.backup_state
    }

    /// When it was registered.
    pub fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }

    /// When it last signed in.
    pub fn last_used_at(&self) -> Option<OffsetDateTime> {
        self.last_used_at
    }
}

impl User {
    /// The user's passkeys, oldest first.
    pub fn passkeys(&self) -> &[RegisteredPasskey] {
        &self.passkeys
    }

    pub(super) fn passkey(&self, id: PasskeyId) -> Result<&RegisteredPasskey, UserError> {
        self.passkeys
            .iter()
            .find(|passkey| passkey.id == id)
            .ok_or(UserError::UnknownPasskey)
    }

    pub(super) async fn register_passkey(
        &mut self,
        command: RegisterPasskey,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        self.ensure_account_open()?;
        if self.passkeys.len() >= MAX_PASSKEYS {
            return Err(UserError::PasskeyLimitReached);
        }
        if self
            .passkeys
            .iter()
            .any(|passkey| passkey.credential_id == command.credential_id)
        {
            return Err(UserError::PasskeyAlreadyRegistered);
        }
        self.ensure_name_free(&command.name, None)?;
        let registered = UserEvent::PasskeyRegistered {
            passkey_id: PasskeyId::from_uuid(services.rng.uuid()),
            credential_id: command.credential_id,
            credential: command.credential,
            counter: command.counter,
            name: command.name,
            at: services.clock.now(),
        };
        sink.write(registered, self).await;
        Ok(())
    }

    pub(super) async fn rename_passkey(
        &mut self,
        command: RenamePasskey,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        self.passkey(command.passkey_id)?;
        self.ensure_name_free(&command.name, Some(command.passkey_id))?;
        let renamed = UserEvent::PasskeyRenamed {
            passkey_id: command.passkey_id,
            name: command.name,
            at: services.clock.now(),
        };
        sink.write(renamed, self).await;
        Ok(())
    }

    /// Removes a passkey once the caller re-authenticated; a wrong proof is recorded instead.
    /// An unknown passkey is refused before any proof is spent.
    pub(super) async fn remove_passkey(
        &mut self,
        command: RemovePasskey,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        self.passkey(command.passkey_id)?;
        if !self
            .reauthenticate_caller(&command.reauthentication, services, sink)
            .await?
        {
            return Ok(());
        }
        let removed = UserEvent::PasskeyRemoved {
            passkey_id: command.passkey_id,
            at: services.clock.now(),
        };
        sink.write(removed, self).await;
        Ok(())
    }

    /// A login step with a passkey. A refused assertion, one of a credential the user does
    /// not have, and one whose counter did not advance are all the same recorded, throttled
    /// failure to the caller; an accepted one completes the login and starts a session.
    pub(super) async fn use_passkey(
        &mut self,
        command: UsePasskey,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        let at = services.clock.now();
        self.account()?;
        self.ensure_unlocked(ThrottledFactor::Passkey, at)?;
        let challenge_id = match command.step {
            PasskeyStep::SecondFactor { challenge_id } => {
                Some(self.open_challenge(challenge_id)?.id)
            }
            PasskeyStep::Passwordless => None,
        };
        let passkey = self
            .passkeys
            .iter()
            .find(|passkey| passkey.credential_id == command.credential_id)
            .map(|passkey| (passkey.id, passkey.counter));
        let (
            Some((passkey_id, stored_counter)),
            PasskeyAssertion::Verified {
                counter,
                backup_state,
            },
        ) = (passkey, command.assertion)
        else {
            self.record_failure(Factor::Passkey, challenge_id, at, sink)
                .await;
            return Ok(());
        };
        if (counter > 0 || stored_counter > 0) && counter <= stored_counter {
            let regressed = UserEvent::PasskeyCounterRegressed {
                passkey_id,
                counter,
                stored_counter,
                at,
            };
            sink.write(regressed, self).await;
            self.record_failure(Factor::Passkey, challenge_id, at, sink)
                .await;
            return Ok(());
        }
        // Checked once the passkey proved itself, so that only its holder learns of the lock
        // (a passwordless login names its user by a handle anyone may send).
        self.ensure_account_open()?;
        let used = UserEvent::PasskeyUsed {
            passkey_id,
            counter,
            backup_state,
            at,
        };
        sink.write(used, self).await;
        if let Some(challenge_id) = challenge_id {
            let verified = UserEvent::TfaVerified {
                challenge_id,
                factor: Factor::Passkey,
                totp_step: None,
                at,
            };
            sink.write(verified, self).await;
        }
        self.start_session(services, at, sink).await;
        Ok(())
    }

    /// Refuses `name` when another passkey than `except` has it, in any letter case.
    fn ensure_name_free(
        &self,
        name: &PasskeyName,
        except: Option<PasskeyId>,
    ) -> Result<(), UserError> {
        let taken = self
            .passkeys
            .iter()
            .any(|passkey| Some(passkey.id) != except && passkey.name.same_as(name));
        if taken {
            Err(UserError::PasskeyNameTaken)
        } else {
            Ok(())
        }
    }

    /// Folds the passkey events.
    pub(super) fn apply_passkey(&mut self, event: UserEvent) {
        match event {
            UserEvent::PasskeyRegistered {
                passkey_id,
                credential_id,
                credential,
                counter,
                name,
                at,
            } => self.passkeys.push(RegisteredPasskey {
                id: passkey_id,
                credential_id,
                credential,
                name,
                counter,
                backup_state: false,
                created_at: at,
                last_used_at: None,
            }),
            UserEvent::PasskeyRenamed {
                passkey_id, name, ..
            } => {
                if let Some(passkey) = self.passkeys.iter_mut().find(|p| p.id == passkey_id) {
                    passkey.name = name;
                }
            }
            UserEvent::PasskeyRemoved { passkey_id, .. } => {
                self.passkeys.retain(|passkey| passkey.id != passkey_id);
            }
            UserEvent::PasskeyUsed {
                passkey_id,
                counter,
                backup_state,
                at,
            } => {
                *self.throttles.get_mut(ThrottledFactor::Passkey) = Default::default();
                if let Some(passkey) = self.passkeys.iter_mut().find(|p| p.id == passkey_id) {
                    passkey.counter = counter;
                    passkey.backup_state = backup_state;
                    passkey.last_used_at = Some(at);
                }
            }
            // Kept for the record: the refusal is the `LoginFailed` recorded with it.
            _ => {}
        }
    }
}
