//! Events as an auditor may read them: every secret an event holds — a password hash, a
//! sealed TOTP seed, the keyed digests of backup codes, emailed codes and reset tokens — is
//! replaced by [`REDACTED`], keeping the key id beside it (which key sealed or keyed it is
//! useful to an auditor and secret to nobody). Everything else is kept as it was stored.

use twofold_domain::user::{Device, DeviceSecret};
use twofold_domain::values::{KeyedDigest, PasskeyCredential, PasswordHash, SealedSecret};
use twofold_domain::UserEvent;

/// What a redacted secret reads as.
pub const REDACTED: &str = "[redacted]";

fn digest(digest: &KeyedDigest) -> KeyedDigest {
    KeyedDigest {
        key_id: digest.key_id.clone(),
        digest: REDACTED.to_owned(),
    }
}

fn digests(digests: &[KeyedDigest]) -> Vec<KeyedDigest> {
    digests.iter().map(digest).collect()
}

fn sealed(sealed: &SealedSecret) -> SealedSecret {
    SealedSecret {
        key_id: sealed.key_id.clone(),
        ciphertext: REDACTED.to_owned(),
    }
}

fn hash() -> PasswordHash {
    PasswordHash::from_phc(REDACTED.to_owned())
}

fn device(device: &Device) -> Device {
    Device {
        id: device.id,
        secret: match &device.secret {
            DeviceSecret::Email => DeviceSecret::Email,
            DeviceSecret::CodeGenerator { seed } => {
                DeviceSecret::CodeGenerator { seed: sealed(seed) }
            }
        },
    }
}

/// `event` with its secrets redacted. The match names every event, so a new one cannot leak
/// by being forgotten.
pub fn redacted(event: &UserEvent) -> UserEvent {
    match event {
        UserEvent::SignedUp {
            user_id,
            email,
            full_name,
            at,
            ..
        } => UserEvent::SignedUp {
            user_id: *user_id,
            email: email.clone(),
            full_name: full_name.clone(),
            password_hash: hash(),
            at: *at,
        },
        UserEvent::TfaEnabled {
            device: enrolled,
            backup_codes,
            at,
        } => UserEvent::TfaEnabled {
            device: device(enrolled),
            backup_codes: digests(backup_codes),
            at: *at,
        },
        UserEvent::TfaDeviceChanged {
            device: enrolled,
            backup_codes,
            at,
        } => UserEvent::TfaDeviceChanged {
            device: device(enrolled),
            backup_codes: digests(backup_codes),
            at: *at,
        },
        UserEvent::BackupCodesRegenerated { backup_codes, at } => {
            UserEvent::BackupCodesRegenerated {
                backup_codes: digests(backup_codes),
                at: *at,
            }
        }
        UserEvent::EmailCodeIssued {
            challenge_id,
            digest: issued,
            expires_at,
        } => UserEvent::EmailCodeIssued {
            challenge_id: *challenge_id,
            digest: digest(issued),
            expires_at: *expires_at,
        },
        UserEvent::ConfirmationCodeIssued {
            digest: issued,
            expires_at,
            at,
        } => UserEvent::ConfirmationCodeIssued {
            digest: digest(issued),
            expires_at: *expires_at,
            at: *at,
        },
        UserEvent::PasswordChanged { at, .. } => UserEvent::PasswordChanged {
            password_hash: hash(),
            at: *at,
        },
        UserEvent::PasswordReset { at, .. } => UserEvent::PasswordReset {
            password_hash: hash(),
            at: *at,
        },
        UserEvent::PasswordResetRequested {
            digest: token,
            expires_at,
            at,
        } => UserEvent::PasswordResetRequested {
            digest: digest(token),
            expires_at: *expires_at,
            at: *at,
        },
        UserEvent::SeedResealed { seed, at } => UserEvent::SeedResealed {
            seed: sealed(seed),
            at: *at,
        },
        // The public credential is no secret, but an auditor needs nothing of it that the
        // credential id does not say; the blob stays out of every view of the log.
        UserEvent::PasskeyRegistered {
            passkey_id,
            credential_id,
            counter,
            name,
            at,
            ..
        } => UserEvent::PasskeyRegistered {
            passkey_id: *passkey_id,
            credential_id: credential_id.clone(),
            credential: PasskeyCredential::new(serde_json::Value::String(REDACTED.to_owned())),
            counter: *counter,
            name: name.clone(),
            at: *at,
        },
        UserEvent::LoggedIn { .. }
        | UserEvent::SecondFactorRequired { .. }
        | UserEvent::LoginFailed { .. }
        | UserEvent::TfaVerified { .. }
        | UserEvent::BackupCodeConsumed { .. }
        | UserEvent::FactorLocked { .. }
        | UserEvent::SessionStarted { .. }
        | UserEvent::SessionRefreshed { .. }
        | UserEvent::SessionEnded { .. }
        | UserEvent::SecondFactorConfirmed { .. }
        | UserEvent::TfaDisabled { .. }
        | UserEvent::AccountLocked { .. }
        | UserEvent::AccountUnlocked { .. }
        | UserEvent::AdminGranted { .. }
        | UserEvent::SignUpAttempted { .. }
        | UserEvent::AuditTrailRead { .. }
        | UserEvent::UserErased { .. }
        | UserEvent::PasskeyRenamed { .. }
        | UserEvent::PasskeyRemoved { .. }
        | UserEvent::PasskeyUsed { .. }
        | UserEvent::PasskeyCounterRegressed { .. } => event.clone(),
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use twofold_domain::values::{ChallengeId, DeviceId, Email, FullName, UserId};

    use super::*;

    const SECRETS: [&str; 6] = [
        "$argon2id$secret-hash",
        "sealed-seed",
        "backup-digest",
        "code-digest",
        "reset-digest",
        "resealed-seed",
    ];

    fn keyed(text: &str) -> KeyedDigest {
        KeyedDigest {
            key_id: "key-1".to_owned(),
            digest: text.to_owned(),
        }
    }

    fn seed(text: &str) -> SealedSecret {
        SealedSecret {
            key_id: "key-1".to_owned(),
            ciphertext: text.to_owned(),
        }
    }

    fn with_secrets() -> Vec<UserEvent> {
        let at = OffsetDateTime::UNIX_EPOCH;
        let app = Device {
            id: DeviceId::from_uuid(uuid::Uuid::from_u128(1)),
            secret: DeviceSecret::CodeGenerator {
                seed: seed("sealed-seed"),
            },
        };
        vec![
            UserEvent::SignedUp {
                user_id: UserId::from_uuid(uuid::Uuid::from_u128(2)),
                email: Email::parse("ada@example.com").unwrap(),
                full_name: FullName::parse("Ada Lovelace").unwrap(),
                password_hash: PasswordHash::from_phc("$argon2id$secret-hash".to_owned()),
                at,
            },
            UserEvent::TfaEnabled {
                device: app.clone(),
                backup_codes: vec![keyed("backup-digest")],
                at,
            },
            UserEvent::TfaDeviceChanged {
                device: app,
                backup_codes: vec![keyed("backup-digest")],
                at,
            },
            UserEvent::BackupCodesRegenerated {
                backup_codes: vec![keyed("backup-digest")],
                at,
            },
            UserEvent::EmailCodeIssued {
                challenge_id: ChallengeId::from_uuid(uuid::Uuid::from_u128(3)),
                digest: keyed("code-digest"),
                expires_at: at,
            },
            UserEvent::ConfirmationCodeIssued {
                digest: keyed("code-digest"),
                expires_at: at,
                at,
            },
            UserEvent::PasswordChanged {
                password_hash: PasswordHash::from_phc("$argon2id$secret-hash".to_owned()),
                at,
            },
            UserEvent::PasswordReset {
                password_hash: PasswordHash::from_phc("$argon2id$secret-hash".to_owned()),
                at,
            },
            UserEvent::PasswordResetRequested {
                digest: keyed("reset-digest"),
                expires_at: at,
                at,
            },
            UserEvent::SeedResealed {
                seed: seed("resealed-seed"),
                at,
            },
        ]
    }

    #[test]
    fn no_secret_survives_redaction_and_the_key_ids_do() {
        for event in with_secrets() {
            let before = serde_json::to_string(&event).unwrap();
            assert!(
                SECRETS.iter().any(|secret| before.contains(secret)),
                "{before}"
            );
            let after = serde_json::to_string(&redacted(&event)).unwrap();
            for secret in SECRETS {
                assert!(!after.contains(secret), "{after}");
            }
            assert!(after.contains(REDACTED), "{after}");
            if !matches!(
                event,
                UserEvent::SignedUp { .. }
                    | UserEvent::PasswordChanged { .. }
                    | UserEvent::PasswordReset { .. }
            ) {
                assert!(after.contains("key-1"), "{after}");
            }
        }
    }

    #[test]
    fn a_registered_passkey_keeps_its_id_counter_and_name_and_loses_its_public_key() {
        let registered = UserEvent::PasskeyRegistered {
            passkey_id: twofold_domain::values::PasskeyId::from_uuid(uuid::Uuid::from_u128(3)),
            credential_id: "credential-id".to_owned(),
            credential: PasskeyCredential::new(
                serde_json::json!({"cred": {"cred": {"EC_EC2": {"x": "public-key-blob"}}}}),
            ),
            counter: 4,
            name: twofold_domain::values::PasskeyName::parse("phone").unwrap(),
            at: OffsetDateTime::UNIX_EPOCH,
        };
        let after = serde_json::to_string(&redacted(&registered)).unwrap();
        assert!(!after.contains("public-key-blob"), "{after}");
        for kept in ["credential-id", "\"counter\":4", "phone", REDACTED] {
            assert!(after.contains(kept), "{kept}: {after}");
        }
    }

    #[test]
    fn events_without_secrets_are_kept_as_they_are() {
        let locked = UserEvent::AccountLocked {
            at: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(redacted(&locked), locked);
        let signed_up = &with_secrets()[0];
        let UserEvent::SignedUp { email, .. } = redacted(signed_up) else {
            panic!("a sign-up stays a sign-up");
        };
        assert_eq!(email.as_str(), "ada@example.com");
    }
}
