//! Passkeys (WebAuthn): registering one, and signing in with one as the second factor or
//! alone. The relying-party library (`webauthn-rs`) runs the ceremonies and checks their
//! cryptography; the `User` aggregate decides what the account's state decides (the limit,
//! the names, whose credential it is, the throttle, the sign counter) and records it.
//!
//! A ceremony's state is kept server-side between its start and its finish, under a random
//! `challenge_id` the client sends back, in a [`CeremonyStore`]: in Postgres it is shared by
//! every instance, so a ceremony started on one finishes on another. It lives at most
//! [`CEREMONY_TTL`] and is taken once, so a replayed response, or fifty concurrent copies of
//! one, finish one ceremony at most.
//!
//! Failures a client may learn from are few and uniform: any assertion that does not sign a
//! user in answers the same refusal (`passkey.refused`), whether its credential is unknown,
//! its signature wrong or its counter behind. Only an origin this service does not accept is
//! named (`passkey.wrong_origin`): it says nothing about any account, and tells an operator
//! or a developer what is wrong.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;
use twofold_domain::user::{
    ChangeOutcome, LoginOutcome, PasskeyAssertion, PasskeyStep, Refusal, RegisterPasskey,
    RemovePasskey, RenamePasskey, UsePasskey, MAX_PASSKEYS,
};
use twofold_domain::values::{
    ChallengeId, PasskeyCredential, PasskeyId, PasskeyName, SessionId, UserId,
};
use twofold_domain::{EventMetadata, User, UserCommand, UserError, UserEvent};
use url::Url;
use uuid::Uuid;
use webauthn_rs::prelude::{
    Credential, DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Webauthn,
    WebauthnBuilder, WebauthnError,
};
use webauthn_rs_proto::ResidentKeyRequirement;

use super::mail_policy::MailSecrets;
use super::store::{Ceremony, CeremonyKind, CeremonyStore, CEREMONY_TTL};
use super::{App, AppError, Proofs};

/// Why a ceremony could not go on. None of them is recorded: no account is known, or none
/// was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasskeyFailure {
    /// The `challenge_id` names no ceremony of this kind for this caller: unknown, expired,
    /// or already finished.
    #[error("the passkey ceremony is unknown, expired or already finished; start again")]
    CeremonyClosed,
    /// The authenticator's response came from an origin this service does not accept.
    #[error("the passkey response comes from an origin this service does not accept")]
    WrongOrigin,
    /// The registration response did not verify (a wrong challenge, no user verification,
    /// a malformed attestation).
    #[error("the authenticator's registration response could not be verified")]
    RegistrationRefused,
    /// The user has no passkey to sign in with.
    #[error("the account has no passkey")]
    NoPasskey,
}

impl PasskeyFailure {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::CeremonyClosed => "passkey.ceremony_closed",
            Self::WrongOrigin => "passkey.wrong_origin",
            Self::RegistrationRefused => "passkey.registration_refused",
            Self::NoPasskey => "passkey.none",
        }
    }
}

/// The relying party for `rp_id`, accepting responses from `origins` (the first is the
/// main one). Each origin's host must be the RP id or a subdomain of it.
pub fn relying_party(rp_id: &str, origins: &[Url]) -> Result<Webauthn, String> {
    let Some((first, others)) = origins.split_first() else {
        return Err("TWOFOLD_WEBAUTHN_ORIGINS: at least one origin is needed".to_owned());
    };
    let builder = WebauthnBuilder::new(rp_id, first).map_err(|_| {
        format!("TWOFOLD_WEBAUTHN_ORIGINS: `{first}` is not on TWOFOLD_WEBAUTHN_RP_ID `{rp_id}`")
    })?;
    others
        .iter()
        .fold(builder, |builder, origin| {
            builder.append_allowed_origin(origin)
        })
        .rp_name("Twofold")
        .build()
        .map_err(|error| format!("TWOFOLD_WEBAUTHN_*: {error}"))
}

/// A started ceremony: the id to finish it with, and the options for the authenticator
/// (WebAuthn's `publicKey` member, in its JSON form).
#[derive(Debug)]
pub struct CeremonyStart {
    /// What the finish names.
    pub challenge_id: Uuid,
    /// `PublicKeyCredentialCreationOptions` or `PublicKeyCredentialRequestOptions`.
    pub public_key: serde_json::Value,
}

/// What starting a registration decided.
#[derive(Debug)]
pub enum RegistrationStart {
    /// The proofs held: the ceremony is on.
    Started(CeremonyStart),
    /// A proof was wrong (recorded).
    Refused(Refusal),
}

/// A passkey as its owner sees it.
#[derive(Debug, Clone)]
pub struct PasskeySummary {
    /// Its id.
    pub id: PasskeyId,
    /// Its name.
    pub name: String,
    /// When it was registered.
    pub created_at: OffsetDateTime,
    /// When it last signed in.
    pub last_used_at: Option<OffsetDateTime>,
    /// Whether the authenticator says it is backed up (synced).
    pub backed_up: bool,
}

impl PasskeySummary {
    fn of(passkey: &twofold_domain::user::RegisteredPasskey) -> Self {
        Self {
            id: passkey.id(),
            name: passkey.name().as_str().to_owned(),
            created_at: passkey.created_at(),
            last_used_at: passkey.last_used_at(),
            backed_up: passkey.backup_state(),
        }
    }
}

/// The WebAuthn relying party and where its ceremonies wait.
pub struct Passkeys {
    /// The relying party.
    pub webauthn: Arc<Webauthn>,
    /// Ceremonies between start and finish.
    pub ceremonies: Arc<dyn CeremonyStore>,
}

/// A serialised value back, or an internal error: what we stored ourselves must read back.
fn from_json<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, AppError> {
    serde_json::from_value(value).map_err(|error| AppError::Internal(Box::new(error)))
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, AppError> {
    serde_json::to_value(value).map_err(|error| AppError::Internal(Box::new(error)))
}

/// A credential id as the aggregate keeps it: base64url without padding.
fn credential_id(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The `publicKey` member of a challenge response.
fn public_key(response: serde_json::Value) -> Result<serde_json::Value, AppError> {
    match response {
        serde_json::Value::Object(mut fields) => fields
            .remove("publicKey")
            .ok_or_else(|| AppError::Internal("a challenge without `publicKey`".into())),
        _ => Err(AppError::Internal(
            "a challenge that is not an object".into(),
        )),
    }
}

/// The sign counter and backup state an assertion's authenticator data carries (WebAuthn
/// §6.1: the RP id hash, 32 bytes, then the flags, then the counter, 4 bytes big-endian).
/// Read only where the library verified the signature and refused the counter.
fn signed_counter(credential: &PublicKeyCredential) -> Option<(u32, bool)> {
    let data = credential.response.authenticator_data.as_slice();
    let flags = *data.get(32)?;
    let counter = u32::from_be_bytes(data.get(33..37)?.try_into().ok()?);
    Some((counter, flags & 0x10 != 0))
}

/// What the library's verification of an assertion found, for the aggregate.
fn assertion_of(
    credential: &PublicKeyCredential,
    verified: Result<webauthn_rs::prelude::AuthenticationResult, WebauthnError>,
) -> Result<(String, PasskeyAssertion), PasskeyFailure> {
    match verified {
        Ok(result) => Ok((
            credential_id(result.cred_id().as_slice()),
            PasskeyAssertion::Verified {
                counter: result.counter(),
                backup_state: result.backup_state(),
            },
        )),
        Err(WebauthnError::InvalidRPOrigin) => Err(PasskeyFailure::WrongOrigin),
        // The signature held and the counter did not advance past the one the ceremony
        // started from: the aggregate compares it with the highest one it accepted, and
        // records the regression.
        Err(WebauthnError::CredentialPossibleCompromise) => Ok((
            credential_id(credential.get_credential_id()),
            signed_counter(credential).map_or(PasskeyAssertion::Refused, |(counter, backup)| {
                PasskeyAssertion::Verified {
                    counter,
                    backup_state: backup,
                }
            }),
        )),
        Err(error) => {
            tracing::info!(target: "security", %error, "passkey assertion did not verify");
            Ok((
                credential_id(credential.get_credential_id()),
                PasskeyAssertion::Refused,
            ))
        }
    }
}

/// The library's form of a stored credential.
fn stored_passkey(passkey: &twofold_domain::user::RegisteredPasskey) -> Result<Passkey, AppError> {
    from_json(passkey.credential().as_json().clone())
}

impl App {
    /// The caller's passkeys, oldest first.
    pub async fn passkeys(&self, user_id: UserId) -> Result<Vec<PasskeySummary>, AppError> {
        let user = self.existing(user_id).await?;
        Ok(user.passkeys().iter().map(PasskeySummary::of).collect())
    }

    /// Starts registering a passkey, once the caller re-authenticated as for any sensitive
    /// change: `proofs` (the password and, with two-factor authentication on, a current
    /// second factor), or a sign-in of the caller's session `caller` within the
    /// re-authentication window. A user whose only second factor is a passkey has only the
    /// second: the password alone must not add a passkey beside theirs.
    pub async fn start_passkey_registration(
        &self,
        user_id: UserId,
        caller: SessionId,
        proofs: Option<Proofs>,
        metadata: &EventMetadata,
    ) -> Result<RegistrationStart, AppError> {
        let user = self.existing(user_id).await?;
        if user.passkeys().len() >= MAX_PASSKEYS {
            return Err(UserError::PasskeyLimitReached.into());
        }
        if proofs.is_some() {
            self.ensure_hash_room()?;
        }
        let command = UserCommand::Reauthenticate(self.reauthentication(caller, proofs));
        let (outcome, user) = self
            .change(user_id, command, metadata, &MailSecrets::none())
            .await?;
        if let ChangeOutcome::Refused(refusal) = outcome {
            return Ok(RegistrationStart::Refused(refusal));
        }
        let email = user
            .email()
            .ok_or(UserError::UnknownUser)?
            .as_str()
            .to_owned();
        let excluded = user
            .passkeys()
            .iter()
            .map(|passkey| stored_passkey(passkey).map(|stored| stored.cred_id().clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut challenge, state) = self
            .passkeys
            .webauthn
            .start_passkey_registration(user_id.as_uuid(), &email, &email, Some(excluded))
            .map_err(|error| AppError::Internal(Box::new(error)))?;
        // webauthn-rs asks for a server-side credential (`residentKey: "discouraged"`), which a
        // security key then makes, and which the passwordless login (a discoverable
        // credential's user handle names the user) cannot find. Asking for a discoverable one
        // where the authenticator can keep it makes every passkey a passwordless one it can
        // be; one that cannot still registers and serves as a second factor. The ceremony's
        // state needs no change: it checks no resident-key requirement.
        if let Some(selection) = challenge.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(ResidentKeyRequirement::Preferred);
        }
        let start = self
            .keep_ceremony(
                CeremonyKind::Registration,
                Some(user_id),
                to_json(&state)?,
                to_json(&challenge)?,
            )
            .await?;
        tracing::info!(target: "security", %user_id, "passkey registration started");
        Ok(RegistrationStart::Started(start))
    }

    /// Finishes a registration the caller started: the passkey is recorded (and a notice
    /// emailed).
    pub async fn finish_passkey_registration(
        &self,
        user_id: UserId,
        challenge_id: Uuid,
        name: PasskeyName,
        response: serde_json::Value,
        metadata: &EventMetadata,
    ) -> Result<PasskeySummary, AppError> {
        let state: PasskeyRegistration = self
            .take_ceremony(challenge_id, CeremonyKind::Registration, Some(user_id))
            .await?;
        // A response that is no WebAuthn credential at all is refused like one that does not
        // verify: the client learns nothing more from the one than from the other.
        let response: RegisterPublicKeyCredential =
            serde_json::from_value(response).map_err(|_| PasskeyFailure::RegistrationRefused)?;
        let passkey = self
            .passkeys
            .webauthn
            .finish_passkey_registration(&response, &state)
            .map_err(|error| match error {
                WebauthnError::InvalidRPOrigin => PasskeyFailure::WrongOrigin,
                error => {
                    tracing::info!(target: "security", %user_id, %error,
                        "passkey registration did not verify");
                    PasskeyFailure::RegistrationRefused
                }
            })?;
        let counter = Credential::from(passkey.clone()).counter;
        let command = UserCommand::RegisterPasskey(RegisterPasskey {
            credential_id: credential_id(passkey.cred_id().as_slice()),
            credential: PasskeyCredential::new(to_json(&passkey)?),
            counter,
            name,
        });
        let committed = self
            .users
            .execute(user_id, command, metadata, &MailSecrets::none())
            .await?;
        let registered = committed
            .events
            .iter()
            .find_map(|event| match event {
                UserEvent::PasskeyRegistered { passkey_id, .. } => Some(*passkey_id),
                _ => None,
            })
            .and_then(|id| committed.user.passkeys().iter().find(|p| p.id() == id))
            .ok_or_else(|| AppError::Internal("a registration recorded no passkey".into()))?;
        tracing::info!(target: "security", %user_id, passkey_id = %registered.id(), "passkey registered");
        Ok(PasskeySummary::of(registered))
    }

    /// Renames one of the caller's passkeys.
    pub async fn rename_passkey(
        &self,
        user_id: UserId,
        passkey_id: PasskeyId,
        name: PasskeyName,
        metadata: &EventMetadata,
    ) -> Result<PasskeySummary, AppError> {
        let command = UserCommand::RenamePasskey(RenamePasskey { passkey_id, name });
        let committed = self
            .users
            .execute(user_id, command, metadata, &MailSecrets::none())
            .await?;
        let renamed = committed
            .user
            .passkeys()
            .iter()
            .find(|passkey| passkey.id() == passkey_id)
            .ok_or(UserError::UnknownPasskey)?;
        Ok(PasskeySummary::of(renamed))
    }

    /// Removes one of the caller's passkeys, after a re-authentication: `proofs`, or a sign-in
    /// of the caller's session `caller` within the re-authentication window. A notice is
    /// emailed.
    pub async fn remove_passkey(
        &self,
        user_id: UserId,
        caller: SessionId,
        passkey_id: PasskeyId,
        proofs: Option<Proofs>,
        metadata: &EventMetadata,
    ) -> Result<ChangeOutcome, AppError> {
        let command = UserCommand::RemovePasskey(RemovePasskey {
            passkey_id,
            reauthentication: self.reauthentication(caller, proofs),
        });
        let (outcome, _) = self
            .change(user_id, command, metadata, &MailSecrets::none())
            .await?;
        if outcome == ChangeOutcome::Changed {
            tracing::info!(target: "security", %user_id, %passkey_id, "passkey removed");
        }
        Ok(outcome)
    }

    /// Starts the second login step with a passkey, for the open challenge of a pre-2FA token.
    pub async fn start_passkey_second_factor(
        &self,
        user_id: UserId,
    ) -> Result<CeremonyStart, AppError> {
        let user = self.existing(user_id).await?;
        let passkeys = user
            .passkeys()
            .iter()
            .map(stored_passkey)
            .collect::<Result<Vec<_>, _>>()?;
        if passkeys.is_empty() {
            return Err(PasskeyFailure::NoPasskey.into());
        }
        let (challenge, state) = self
            .passkeys
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|error| AppError::Internal(Box::new(error)))?;
        self.keep_ceremony(
            CeremonyKind::Authentication,
            Some(user_id),
            to_json(&state)?,
            to_json(&challenge)?,
        )
        .await
    }

    /// Finishes the second login step with a passkey assertion.
    pub async fn finish_passkey_second_factor(
        &self,
        user_id: UserId,
        challenge: ChallengeId,
        challenge_id: Uuid,
        response: serde_json::Value,
        metadata: &EventMetadata,
    ) -> Result<LoginOutcome, AppError> {
        let state: PasskeyAuthentication = self
            .take_ceremony(challenge_id, CeremonyKind::Authentication, Some(user_id))
            .await?;
        let step = PasskeyStep::SecondFactor {
            challenge_id: challenge,
        };
        // No WebAuthn credential at all: a refused assertion of no credential of the user's.
        let Ok(response) = serde_json::from_value::<PublicKeyCredential>(response) else {
            return self
                .use_passkey(
                    user_id,
                    step,
                    String::new(),
                    PasskeyAssertion::Refused,
                    metadata,
                )
                .await;
        };
        let verified = self
            .passkeys
            .webauthn
            .finish_passkey_authentication(&response, &state);
        let (credential_id, assertion) = assertion_of(&response, verified)?;
        self.use_passkey(user_id, step, credential_id, assertion, metadata)
            .await
    }

    /// Starts a passwordless login: any discoverable passkey of any user may answer it.
    pub async fn start_passkey_login(&self) -> Result<CeremonyStart, AppError> {
        let (challenge, state) = self
            .passkeys
            .webauthn
            .start_discoverable_authentication()
            .map_err(|error| AppError::Internal(Box::new(error)))?;
        self.keep_ceremony(
            CeremonyKind::Discoverable,
            None,
            to_json(&state)?,
            to_json(&challenge)?,
        )
        .await
    }

    /// Finishes a passwordless login: the assertion names its user (the user handle is the
    /// user id) and its credential. An unknown user or credential is refused like a wrong
    /// signature; a known user's failure is recorded and throttled.
    pub async fn finish_passkey_login(
        &self,
        challenge_id: Uuid,
        response: serde_json::Value,
        metadata: &EventMetadata,
    ) -> Result<LoginOutcome, AppError> {
        let state: DiscoverableAuthentication = self
            .take_ceremony(challenge_id, CeremonyKind::Discoverable, None)
            .await?;
        let refused = Ok(LoginOutcome::Refused(Refusal::WrongPasskey));
        let Ok(response) = serde_json::from_value::<PublicKeyCredential>(response) else {
            tracing::info!(target: "security", "passwordless login with no WebAuthn credential refused");
            return refused;
        };
        let Ok((user, _)) = self
            .passkeys
            .webauthn
            .identify_discoverable_authentication(&response)
        else {
            tracing::info!(target: "security", "passwordless login without a user handle refused");
            return refused;
        };
        let user_id = UserId::from_uuid(user);
        let user = self.users.load(user_id).await?;
        if user.id() != Some(user_id) {
            tracing::info!(target: "security", "passwordless login for no known user refused");
            return refused;
        }
        let keys = discoverable_keys(&user)?;
        let verified = self
            .passkeys
            .webauthn
            .finish_discoverable_authentication(&response, state, &keys);
        let (credential_id, assertion) = assertion_of(&response, verified)?;
        self.use_passkey(
            user_id,
            PasskeyStep::Passwordless,
            credential_id,
            assertion,
            metadata,
        )
        .await
    }

    /// Records a passkey login step and reads its decision.
    async fn use_passkey(
        &self,
        user_id: UserId,
        step: PasskeyStep,
        credential_id: String,
        assertion: PasskeyAssertion,
        metadata: &EventMetadata,
    ) -> Result<LoginOutcome, AppError> {
        let command = UserCommand::UsePasskey(UsePasskey {
            step,
            credential_id,
            assertion,
        });
        let step_label = match step {
            PasskeyStep::SecondFactor { .. } => "passkey",
            PasskeyStep::Passwordless => "passkey_passwordless",
        };
        let committed = self
            .users
            .execute(user_id, command, metadata, &MailSecrets::none())
            .await
            .inspect_err(|error| self.metrics.login(step_label, error.code()))?;
        let outcome = LoginOutcome::read(user_id, &committed.events)?;
        let regressed = committed
            .events
            .iter()
            .any(|event| matches!(event, UserEvent::PasskeyCounterRegressed { .. }));
        let label = match outcome {
            LoginOutcome::LoggedIn(_) => {
                tracing::info!(target: "security", %user_id, ?step, "passkey accepted");
                "ok"
            }
            _ if regressed => {
                tracing::warn!(target: "security", %user_id, "passkey counter went back: refused");
                "counter_regressed"
            }
            _ => {
                tracing::info!(target: "security", %user_id, ?step, "passkey refused");
                "wrong_passkey"
            }
        };
        self.metrics.login(step_label, label);
        Ok(outcome)
    }

    /// Keeps a ceremony's `state` for [`CEREMONY_TTL`] under a fresh id, and answers its
    /// options from `challenge`.
    async fn keep_ceremony(
        &self,
        kind: CeremonyKind,
        user_id: Option<UserId>,
        state: serde_json::Value,
        challenge: serde_json::Value,
    ) -> Result<CeremonyStart, AppError> {
        let challenge_id = self.services.rng.uuid();
        let ceremony = Ceremony {
            kind,
            user_id,
            state,
        };
        let expires_at = self.services.clock.now() + CEREMONY_TTL;
        self.passkeys
            .ceremonies
            .put(challenge_id, ceremony, expires_at)
            .await?;
        Ok(CeremonyStart {
            challenge_id,
            public_key: public_key(challenge)?,
        })
    }

    /// Takes the ceremony `challenge_id` of `kind`, which must be `user_id`'s.
    async fn take_ceremony<T: DeserializeOwned>(
        &self,
        challenge_id: Uuid,
        kind: CeremonyKind,
        user_id: Option<UserId>,
    ) -> Result<T, AppError> {
        let ceremony = self
            .passkeys
            .ceremonies
            .take(challenge_id, kind)
            .await?
            .filter(|ceremony| ceremony.user_id == user_id)
            .ok_or(PasskeyFailure::CeremonyClosed)?;
        from_json(ceremony.state)
    }
}

/// The user's passkeys as the library's discoverable keys.
fn discoverable_keys(user: &User) -> Result<Vec<DiscoverableKey>, AppError> {
    user.passkeys()
        .iter()
        .map(|passkey| stored_passkey(passkey).map(|stored| DiscoverableKey::from(&stored)))
        .collect()
}
