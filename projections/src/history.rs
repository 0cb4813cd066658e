//! A user's security history, read from their events: what happened to the account, when, and
//! from where. It is what the user may see of their own log, so it leaves out every secret,
//! digest, sealed seed, challenge and token id, and every other person's request details (an
//! admin's address is the admin's, not the user's).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use twofold_domain::user::{AuditScope, Factor, SessionEndReason, ThrottledFactor};
use twofold_domain::values::{DeviceType, PasskeyId, SessionId, UserId};
use twofold_domain::{Actor, EventMetadata, UserEvent};

/// What happened, as a stable name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HistoryType {
    /// The account was created.
    SignedUp,
    /// A login completed (with the password alone, or with a second factor).
    LoginSucceeded,
    /// The password was right; the login waited for the second factor.
    PasswordAccepted,
    /// A login step failed; `factor` says which.
    LoginFailed,
    /// Repeated failures locked a factor until `locked_until`.
    LockedOut,
    /// Two-factor authentication was turned on.
    TfaEnabled,
    /// Two-factor authentication was turned off.
    TfaDisabled,
    /// The second-factor device was replaced.
    TfaDeviceSwitched,
    /// A backup code was used (to log in, or to confirm a change) and is spent.
    BackupCodeUsed,
    /// A current second factor was proven for a sensitive change or a re-authentication.
    SecondFactorConfirmed,
    /// A confirmation code was emailed at the user's request, to prove an email device's
    /// second factor for a sensitive change or a re-authentication.
    ConfirmationCodeSent,
    /// The backup codes were replaced.
    BackupCodesRegenerated,
    /// A session started.
    SessionStarted,
    /// A session ended; `reason` says why.
    SessionEnded,
    /// The password was changed.
    PasswordChanged,
    /// A password reset was requested (a token was emailed).
    PasswordResetRequested,
    /// The password was reset with an emailed token.
    PasswordReset,
    /// An admin locked the account.
    AccountLocked,
    /// An admin unlocked the account.
    AccountUnlocked,
    /// The account was given the admin role.
    AdminGranted,
    /// Someone tried to sign up with the account's address.
    SignUpAttempted,
    /// Someone else (an admin or an operator) read the account's audit trail.
    AuditTrailRead,
    /// The account was erased.
    AccountErased,
    /// A passkey was registered; `passkey_name` says which.
    PasskeyAdded,
    /// A passkey was renamed; `passkey_name` is its new name.
    PasskeyRenamed,
    /// A passkey was removed.
    PasskeyRemoved,
    /// A passkey signed in (alone, or as the second factor).
    PasskeyUsed,
    /// A passkey's assertion was refused because its sign counter did not advance: the
    /// authenticator may have been copied.
    PasskeyCounterRegressed,
}

/// Who caused an entry, as the user may know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Initiator {
    /// The user, signed in.
    #[serde(rename = "self")]
    User,
    /// Someone not signed in: a login, a sign-up or a password reset (maybe the user).
    Anonymous,
    /// An admin.
    Admin,
    /// An operator on the command line, or the service's configuration.
    Operator,
}

/// The factor an entry concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HistoryFactor {
    /// The password.
    Password,
    /// A code from an authenticator app.
    Totp,
    /// A code sent by email.
    EmailCode,
    /// A backup code.
    BackupCode,
    /// The second factor, whichever device (a lock covers TOTP and emailed codes alike).
    SecondFactor,
    /// A passkey.
    Passkey,
}

impl From<Factor> for HistoryFactor {
    fn from(factor: Factor) -> Self {
        match factor {
            Factor::Password => Self::Password,
            Factor::Totp => Self::Totp,
            Factor::EmailCode => Self::EmailCode,
            Factor::BackupCode => Self::BackupCode,
            Factor::Passkey => Self::Passkey,
        }
    }
}

impl From<ThrottledFactor> for HistoryFactor {
    fn from(factor: ThrottledFactor) -> Self {
        match factor {
            ThrottledFactor::Password => Self::Password,
            ThrottledFactor::SecondFactor => Self::SecondFactor,
            ThrottledFactor::BackupCode => Self::BackupCode,
            ThrottledFactor::Passkey => Self::Passkey,
        }
    }
}

/// One entry of a user's security history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "login_failed",
    "at": "2026-11-28T21:04:05Z",
    "by": "anonymous",
    "ip_address": "203.0.113.7",
    "user_agent": "curl/8.5.0",
    "factor": "password"
}))]
pub struct HistoryEntry {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: HistoryType,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who caused it.
    pub by: Initiator,
    /// The client's address, when the user or someone not signed in caused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// The client's `User-Agent`, likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The factor of a login step, a lock or a confirmation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<HistoryFactor>,
    /// Until when a factor is locked.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub locked_until: Option<OffsetDateTime>,
    /// The device turned on or switched to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_type: Option<DeviceType>,
    /// The session started or ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// Why a session ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<SessionEndReason>,
    /// What part of the audit trail was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<AuditScope>,
    /// The passkey concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey_id: Option<PasskeyId>,
    /// The passkey's name (as given, or `[erased]` once the user is erased).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey_name: Option<String>,
}

/// The history entry of `event`, recorded for `user` with `metadata`, if the user's history
/// shows it. Refreshes, issued email codes and key maintenance are left out: they are
/// routine and say nothing new about the account's security.
pub fn history_entry(
    user: UserId,
    event: &UserEvent,
    metadata: &EventMetadata,
) -> Option<HistoryEntry> {
    let entry = |kind, at| HistoryEntry::new(kind, at, user, metadata);
    Some(match event {
        UserEvent::SignedUp { at, .. } => entry(HistoryType::SignedUp, *at),
        UserEvent::LoggedIn { at } => {
            entry(HistoryType::LoginSucceeded, *at).with_factor(Factor::Password)
        }
        UserEvent::TfaVerified { factor, at, .. } => {
            entry(HistoryType::LoginSucceeded, *at).with_factor(*factor)
        }
        UserEvent::SecondFactorRequired { at, .. } => {
            entry(HistoryType::PasswordAccepted, *at).with_factor(Factor::Password)
        }
        UserEvent::LoginFailed { factor, at, .. } => {
            entry(HistoryType::LoginFailed, *at).with_factor(*factor)
        }
        UserEvent::FactorLocked { factor, until, at } => HistoryEntry {
            locked_until: Some(*until),
            ..entry(HistoryType::LockedOut, *at).with_factor(*factor)
        },
        UserEvent::TfaEnabled { device, at, .. } => HistoryEntry {
            device_type: Some(device.device_type()),
            ..entry(HistoryType::TfaEnabled, *at)
        },
        UserEvent::TfaDisabled { at } => entry(HistoryType::TfaDisabled, *at),
        UserEvent::TfaDeviceChanged { device, at, .. } => HistoryEntry {
            device_type: Some(device.device_type()),
            ..entry(HistoryType::TfaDeviceSwitched, *at)
        },
        UserEvent::BackupCodeConsumed { at, .. } => {
            entry(HistoryType::BackupCodeUsed, *at).with_factor(Factor::BackupCode)
        }
        UserEvent::SecondFactorConfirmed { factor, at, .. } => match factor {
            Factor::BackupCode => entry(HistoryType::BackupCodeUsed, *at),
            _ => entry(HistoryType::SecondFactorConfirmed, *at),
        }
        .with_factor(*factor),
        UserEvent::BackupCodesRegenerated { at, .. } => {
            entry(HistoryType::BackupCodesRegenerated, *at)
        }
        UserEvent::SessionStarted { session_id, at, .. } => HistoryEntry {
            session_id: Some(*session_id),
            ..entry(HistoryType::SessionStarted, *at)
        },
        UserEvent::SessionEnded {
            session_id,
            reason,
            at,
        } => HistoryEntry {
            session_id: Some(*session_id),
            reason: Some(*reason),
            ..entry(HistoryType::SessionEnded, *at)
        },
        UserEvent::PasswordChanged { at, .. } => entry(HistoryType::PasswordChanged, *at),
        UserEvent::PasswordResetRequested { at, .. } => {
            entry(HistoryType::PasswordResetRequested, *at)
        }
        UserEvent::PasswordReset { at, .. } => entry(HistoryType::PasswordReset, *at),
        UserEvent::AccountLocked { at } => entry(HistoryType::AccountLocked, *at),
        UserEvent::AccountUnlocked { at } => entry(HistoryType::AccountUnlocked, *at),
        UserEvent::AdminGranted { at } => entry(HistoryType::AdminGranted, *at),
        UserEvent::SignUpAttempted { at } => entry(HistoryType::SignUpAttempted, *at),
        UserEvent::UserErased { at } => entry(HistoryType::AccountErased, *at),
        UserEvent::ConfirmationCodeIssued { at, .. } => {
            entry(HistoryType::ConfirmationCodeSent, *at).with_factor(Factor::EmailCode)
        }
        UserEvent::AuditTrailRead { scope, at } => HistoryEntry {
            scope: Some(*scope),
            ..entry(HistoryType::AuditTrailRead, *at)
        },
        UserEvent::PasskeyRegistered {
            passkey_id,
            name,
            at,
            ..
        } => entry(HistoryType::PasskeyAdded, *at).with_passkey(*passkey_id, Some(name)),
        UserEvent::PasskeyRenamed {
            passkey_id,
            name,
            at,
        } => entry(HistoryType::PasskeyRenamed, *at).with_passkey(*passkey_id, Some(name)),
        UserEvent::PasskeyRemoved { passkey_id, at } => {
            entry(HistoryType::PasskeyRemoved, *at).with_passkey(*passkey_id, None)
        }
        UserEvent::PasskeyUsed { passkey_id, at, .. } => entry(HistoryType::PasskeyUsed, *at)
            .with_factor(Factor::Passkey)
            .with_passkey(*passkey_id, None),
        UserEvent::PasskeyCounterRegressed { passkey_id, at, .. } => {
            entry(HistoryType::PasskeyCounterRegressed, *at)
                .with_factor(Factor::Passkey)
                .with_passkey(*passkey_id, None)
        }
        UserEvent::EmailCodeIssued { .. }
        | UserEvent::SessionRefreshed { .. }
        | UserEvent::SeedResealed { .. } => return None,
    })
}

impl HistoryEntry {
    fn new(kind: HistoryType, at: OffsetDateTime, user: UserId, metadata: &EventMetadata) -> Self {
        let by = match metadata.actor {
            Actor::User(actor) if actor == user => Initiator::User,
            // A user acting on another user's account is not a path the API has; were it to
            // appear, the request details are that other person's.
            Actor::User(_) | Actor::Admin(_) => Initiator::Admin,
            Actor::Anonymous => Initiator::Anonymous,
            Actor::Cli | Actor::Config => Initiator::Operator,
        };
        let own_request = matches!(by, Initiator::User | Initiator::Anonymous);
        Self {
            kind,
            at,
            by,
            ip_address: metadata.ip.clone().filter(|_| own_request),
            user_agent: metadata.user_agent.clone().filter(|_| own_request),
            factor: None,
            locked_until: None,
            device_type: None,
            session_id: None,
            reason: None,
            scope: None,
            passkey_id: None,
            passkey_name: None,
        }
    }

    fn with_passkey(
        self,
        passkey_id: PasskeyId,
        name: Option<&twofold_domain::values::PasskeyName>,
    ) -> Self {
        Self {
            passkey_id: Some(passkey_id),
            passkey_name: name.map(|name| name.as_str().to_owned()),
            ..self
        }
    }

    fn with_factor(self, factor: impl Into<HistoryFactor>) -> Self {
        Self {
            factor: Some(factor.into()),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use twofold_domain::user::{Device, DeviceSecret};
    use twofold_domain::values::{
        ChallengeId, DeviceId, KeyedDigest, RefreshTokenId, SealedSecret,
    };

    use super::*;

    fn user() -> UserId {
        UserId::from_uuid(uuid::Uuid::from_u128(1))
    }

    fn at() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH
    }

    fn request(actor: Actor) -> EventMetadata {
        EventMetadata {
            actor,
            request_id: Some("req-1".to_owned()),
            ip: Some("203.0.113.7".to_owned()),
            user_agent: Some("curl/8.5.0".to_owned()),
            reason: None,
        }
    }

    #[test]
    fn a_failed_login_shows_the_factor_and_where_the_attempt_came_from() {
        let failed = UserEvent::LoginFailed {
            factor: Factor::Totp,
            challenge_id: Some(ChallengeId::from_uuid(uuid::Uuid::from_u128(9))),
            at: at(),
        };
        let entry = history_entry(user(), &failed, &request(Actor::Anonymous)).unwrap();
        assert_eq!(entry.kind, HistoryType::LoginFailed);
        assert_eq!(entry.by, Initiator::Anonymous);
        assert_eq!(entry.factor, Some(HistoryFactor::Totp));
        assert_eq!(entry.ip_address.as_deref(), Some("203.0.113.7"));
        assert_eq!(entry.user_agent.as_deref(), Some("curl/8.5.0"));
        let json = serde_json::to_string(&entry).unwrap();
        assert!(
            !json.contains("00000000-0000-0000-0000-000000000009"),
            "{json}"
        );
    }

    #[test]
    fn an_admins_action_shows_that_an_admin_did_it_and_nothing_of_the_admins_request() {
        let admin = UserId::from_uuid(uuid::Uuid::from_u128(2));
        for event in [
            UserEvent::AccountLocked { at: at() },
            UserEvent::AuditTrailRead {
                scope: AuditScope::Events,
                at: at(),
            },
        ] {
            let entry = history_entry(user(), &event, &request(Actor::Admin(admin))).unwrap();
            assert_eq!(entry.by, Initiator::Admin);
            assert_eq!((&entry.ip_address, &entry.user_agent), (&None, &None));
            let json = serde_json::to_string(&entry).unwrap();
            assert!(!json.contains(&admin.to_string()), "{json}");
        }
        let by_cli = history_entry(
            user(),
            &UserEvent::AdminGranted { at: at() },
            &EventMetadata::of(Actor::Cli),
        )
        .unwrap();
        assert_eq!(by_cli.by, Initiator::Operator);
    }

    #[test]
    fn the_users_own_changes_are_theirs_with_their_request() {
        let changed = UserEvent::TfaDeviceChanged {
            device: Device {
                id: DeviceId::from_uuid(uuid::Uuid::from_u128(3)),
                secret: DeviceSecret::CodeGenerator {
                    seed: SealedSecret {
                        key_id: "key-id".to_owned(),
                        ciphertext: "sealed-seed".to_owned(),
                    },
                },
            },
            backup_codes: vec![KeyedDigest {
                key_id: "key-id".to_owned(),
                digest: "backup-digest".to_owned(),
            }],
            at: at(),
        };
        let entry = history_entry(user(), &changed, &request(Actor::User(user()))).unwrap();
        assert_eq!(entry.kind, HistoryType::TfaDeviceSwitched);
        assert_eq!(entry.by, Initiator::User);
        assert_eq!(entry.device_type, Some(DeviceType::CodeGenerator));
        assert!(entry.ip_address.is_some());
        let json = serde_json::to_string(&entry).unwrap();
        for secret in ["sealed-seed", "backup-digest", "key-id"] {
            assert!(!json.contains(secret), "{json}");
        }
    }

    #[test]
    fn a_confirmation_code_the_user_asked_for_shows_without_its_digest() {
        let issued = UserEvent::ConfirmationCodeIssued {
            digest: KeyedDigest {
                key_id: "key-id".to_owned(),
                digest: "code-digest".to_owned(),
            },
            expires_at: at(),
            at: at(),
        };
        let entry = history_entry(user(), &issued, &request(Actor::User(user()))).unwrap();
        assert_eq!(entry.kind, HistoryType::ConfirmationCodeSent);
        assert_eq!(entry.factor, Some(HistoryFactor::EmailCode));
        assert_eq!(entry.by, Initiator::User);
        let json = serde_json::to_string(&entry).unwrap();
        assert!(
            json.contains("\"type\":\"confirmation_code_sent\""),
            "{json}"
        );
        for secret in ["code-digest", "key-id"] {
            assert!(!json.contains(secret), "{json}");
        }
    }

    #[test]
    fn a_registered_passkey_shows_its_name_and_never_its_public_key() {
        let passkey_id = PasskeyId::from_uuid(uuid::Uuid::from_u128(5));
        let registered = UserEvent::PasskeyRegistered {
            passkey_id,
            credential_id: "credential-id".to_owned(),
            credential: twofold_domain::values::PasskeyCredential::new(
                serde_json::json!({"cred": {"cred_id": "credential-id", "cred": "public-key"}}),
            ),
            counter: 0,
            name: twofold_domain::values::PasskeyName::parse("phone").unwrap(),
            at: at(),
        };
        let entry = history_entry(user(), &registered, &request(Actor::User(user()))).unwrap();
        assert_eq!(entry.kind, HistoryType::PasskeyAdded);
        assert_eq!(entry.passkey_id, Some(passkey_id));
        assert_eq!(entry.passkey_name.as_deref(), Some("phone"));
        let json = serde_json::to_string(&entry).unwrap();
        for blob in ["public-key", "credential-id"] {
            assert!(!json.contains(blob), "{json}");
        }
        let regressed = UserEvent::PasskeyCounterRegressed {
            passkey_id,
            counter: 3,
            stored_counter: 4,
            at: at(),
        };
        let entry = history_entry(user(), &regressed, &request(Actor::Anonymous)).unwrap();
        assert_eq!(entry.kind, HistoryType::PasskeyCounterRegressed);
        assert_eq!(entry.factor, Some(HistoryFactor::Passkey));
    }

    #[test]
    fn routine_facts_leave_no_entry() {
        let session_id = SessionId::from_uuid(uuid::Uuid::from_u128(4));
        let routine = [
            UserEvent::SessionRefreshed {
                session_id,
                refresh_id: RefreshTokenId::from_uuid(uuid::Uuid::from_u128(5)),
                at: at(),
            },
            UserEvent::EmailCodeIssued {
                challenge_id: ChallengeId::from_uuid(uuid::Uuid::from_u128(6)),
                digest: KeyedDigest {
                    key_id: "k".to_owned(),
                    digest: "d".to_owned(),
                },
                expires_at: at(),
            },
        ];
        for event in routine {
            assert_eq!(
                history_entry(user(), &event, &request(Actor::Anonymous)),
                None
            );
        }
    }

    #[test]
    fn an_entry_serialises_its_type_and_time_as_clients_read_them() {
        let ended = UserEvent::SessionEnded {
            session_id: SessionId::from_uuid(uuid::Uuid::from_u128(4)),
            reason: SessionEndReason::RefreshTokenReused,
            at: at(),
        };
        let entry = history_entry(user(), &ended, &request(Actor::User(user()))).unwrap();
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["type"], "session_ended");
        assert_eq!(json["by"], "self");
        assert_eq!(json["at"], "1970-01-01T00:00:00Z");
        assert_eq!(json["reason"], "refresh_token_reused");
        assert!(json.get("scope").is_none());
    }
}
