use cqrs_es::DomainEvent;

use super::*;
use crate::user::{AuditScope, Factor, EVENT_VERSION};

/// One event of every type, each with the times it carries.
pub(super) fn one_of_each() -> Vec<UserEvent> {
    vec![
        signed_up(),
        code_generator_enabled(),
        UserEvent::LoggedIn { at: at(0) },
        second_factor_required(0),
        UserEvent::EmailCodeIssued {
            challenge_id: challenge(0),
            digest: digest_of("1"),
            expires_at: at(0),
        },
        UserEvent::LoginFailed {
            factor: Factor::Password,
            challenge_id: None,
            at: at(0),
        },
        UserEvent::TfaVerified {
            challenge_id: challenge(0),
            factor: Factor::Totp,
            totp_step: Some(1),
            at: at(0),
        },
        UserEvent::BackupCodeConsumed {
            challenge_id: challenge(0),
            index: 0,
            remaining: 1,
            at: at(0),
        },
        UserEvent::FactorLocked {
            factor: crate::user::ThrottledFactor::SecondFactor,
            until: at(60),
            at: at(0),
        },
        session_started(0),
        UserEvent::SessionRefreshed {
            session_id: crate::values::SessionId::from_uuid(nth_uuid(0)),
            refresh_id: crate::values::RefreshTokenId::from_uuid(nth_uuid(2)),
            at: at(1),
        },
        UserEvent::SessionEnded {
            session_id: crate::values::SessionId::from_uuid(nth_uuid(0)),
            reason: crate::user::SessionEndReason::LoggedOut,
            at: at(2),
        },
        UserEvent::PasswordChanged {
            password_hash: PasswordHash::from_phc("plain$x".to_owned()),
            at: at(3),
        },
        UserEvent::PasswordResetRequested {
            digest: digest_of("t"),
            expires_at: at(900),
            at: at(0),
        },
        UserEvent::PasswordReset {
            password_hash: PasswordHash::from_phc("plain$y".to_owned()),
            at: at(4),
        },
        UserEvent::SecondFactorConfirmed {
            factor: Factor::BackupCode,
            totp_step: None,
            backup_code_index: Some(0),
            at: at(0),
        },
        UserEvent::TfaDisabled { at: at(0) },
        UserEvent::BackupCodesRegenerated {
            backup_codes: backup_digests(),
            at: at(0),
        },
        UserEvent::AccountLocked { at: at(5) },
        UserEvent::AccountUnlocked { at: at(6) },
        UserEvent::AdminGranted { at: at(0) },
        UserEvent::TfaDeviceChanged {
            device: Device {
                id: DeviceId::from_uuid(nth_uuid(3)),
                secret: DeviceSecret::Email,
            },
            backup_codes: backup_digests(),
            at: at(7),
        },
        UserEvent::SignUpAttempted { at: at(8) },
        UserEvent::SeedResealed {
            seed: SealedSecret {
                key_id: "new".to_owned(),
                ciphertext: hex(SEED),
            },
            at: at(9),
        },
        UserEvent::AuditTrailRead {
            scope: AuditScope::Events,
            at: at(10),
        },
        UserEvent::ConfirmationCodeIssued {
            digest: digest_of("424242"),
            expires_at: at(610),
            at: at(10),
        },
        super::passkeys::passkey_registered(0, 1),
        UserEvent::PasskeyRenamed {
            passkey_id: super::passkeys::passkey_id(0),
            name: crate::values::PasskeyName::parse("phone").unwrap(),
            at: at(12),
        },
        UserEvent::PasskeyUsed {
            passkey_id: super::passkeys::passkey_id(0),
            counter: 2,
            backup_state: true,
            at: at(13),
        },
        UserEvent::PasskeyCounterRegressed {
            passkey_id: super::passkeys::passkey_id(0),
            counter: 2,
            stored_counter: 2,
            at: at(14),
        },
        UserEvent::PasskeyRemoved {
            passkey_id: super::passkeys::passkey_id(0),
            at: at(15),
        },
        UserEvent::UserErased { at: at(11) },
    ]
}

/// One event of each type that existed at version 1.0 (and so may be stored in that shape).
pub(super) fn one_of_each_stored_at_1_0() -> Vec<UserEvent> {
    one_of_each()
        .into_iter()
        .filter(|event| {
            crate::upcasters::TIME_FIELDS_V1_0
                .iter()
                .any(|(event_type, _)| *event_type == event.event_type())
        })
        .collect()
}

#[test]
fn every_event_is_stored_under_its_event_type_and_reads_back_unchanged() {
    let types: std::collections::BTreeSet<String> =
        one_of_each().iter().map(DomainEvent::event_type).collect();
    assert_eq!(types.len(), 32, "one of each type");
    let kinds: std::collections::BTreeSet<String> = crate::user::UserEventKind::all()
        .map(|kind| kind.name().to_owned())
        .collect();
    assert_eq!(kinds, types, "a kind for each type, named as it is stored");
    assert_eq!(
        one_of_each_stored_at_1_0().len(),
        24,
        "one of each 1.0 type"
    );
    for event in one_of_each() {
        let json = serde_json::to_value(&event).unwrap();
        let tag = json.as_object().unwrap().keys().next().unwrap().clone();
        assert_eq!(tag, event.event_type());
        assert_eq!(event.event_version(), EVENT_VERSION);
        let back: UserEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}

/// Every time in `value`, found by walking it: a string that parses as RFC 3339.
fn count_rfc3339_strings(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::String(text) => usize::from(
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok(),
        ),
        serde_json::Value::Array(items) => items.iter().map(count_rfc3339_strings).sum(),
        serde_json::Value::Object(fields) => fields.values().map(count_rfc3339_strings).sum(),
        _ => 0,
    }
}

#[test]
fn the_folded_state_writes_its_times_in_rfc_3339_and_reads_back_unchanged() {
    use cqrs_es::Aggregate;
    let mut user = User::default();
    for event in [
        signed_up(),
        email_device_enabled(),
        second_factor_required(0),
        UserEvent::EmailCodeIssued {
            challenge_id: challenge(0),
            digest: digest_of("123456"),
            expires_at: at(600),
        },
        session_started(0),
        UserEvent::SessionRefreshed {
            session_id: crate::values::SessionId::from_uuid(nth_uuid(0)),
            refresh_id: crate::values::RefreshTokenId::from_uuid(nth_uuid(2)),
            at: at(1),
        },
        UserEvent::PasswordResetRequested {
            digest: digest_of("t"),
            expires_at: at(900),
            at: at(0),
        },
        UserEvent::FactorLocked {
            factor: crate::user::ThrottledFactor::Password,
            until: at(60),
            at: at(0),
        },
        UserEvent::SignUpAttempted { at: at(2) },
    ] {
        user.apply(event);
    }
    let json = serde_json::to_value(&user).unwrap();
    // The email code's expiry, the session's end, sign-in and last rotation, the reset
    // token's expiry and its request, the lock and the sign-up notice.
    assert_eq!(count_rfc3339_strings(&json), 8, "{json}");
    let back: User = serde_json::from_value(json).unwrap();
    assert_eq!(back, user);
}
