//! Given-when-then tests of the `User` aggregate, one file per capability, with canonical
//! events from the fixtures below.

mod admin;
mod backup_codes;
mod erasure;
mod events;
mod keys;
mod login;
mod manage;
mod outcome;
mod passkeys;
mod password;
mod proofs;
mod reauth;
mod sessions;
mod signup;
mod snapshot;
mod tfa;
mod throttle;
mod upcasters;

use cqrs_es::test::TestFramework;
use secrecy::{SecretSlice, SecretString};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::services::Randomness;
use crate::testing::{self, SeqRandomness};
use crate::user::{Device, DeviceSecret, User, UserEvent};
use crate::values::{
    ChallengeId, DeviceId, Email, FullName, KeyedDigest, PasswordHash, SealedSecret, UserId,
};

type UserTest = TestFramework<User>;

/// 2026-01-01T00:00:00Z, the start of TOTP step 58 907 520.
const T0: i64 = 1_767_225_600;
const PASSWORD: &str = "correct horse battery";
const SEED: &[u8; 20] = b"12345678901234567890";
const BACKUP_CODES: [&str; 2] = [
    "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF",
    "GGGG-HHHH-JJJJ-KKKK-MMMM-NNNN",
];

fn at(offset_seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(T0 + offset_seconds).unwrap()
}

fn test_at(offset_seconds: i64) -> UserTest {
    UserTest::with(testing::services_at(at(offset_seconds)))
}

/// The n-th UUID the test randomness yields (each UUID takes 16 counted bytes).
fn nth_uuid(n: u8) -> Uuid {
    let rng: &dyn Randomness = &SeqRandomness::starting_at(n * 16);
    rng.uuid()
}

fn user_id() -> UserId {
    UserId::from_uuid(Uuid::from_u128(0xada))
}

fn challenge(n: u8) -> ChallengeId {
    ChallengeId::from_uuid(nth_uuid(n))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest_of(text: &str) -> KeyedDigest {
    KeyedDigest {
        key_id: "test".to_owned(),
        digest: hex(text.as_bytes()),
    }
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text)
}

fn seed() -> SecretSlice<u8> {
    SEED.to_vec().into()
}

fn signed_up() -> UserEvent {
    UserEvent::SignedUp {
        user_id: user_id(),
        email: Email::parse("ada@example.com").unwrap(),
        full_name: FullName::parse("Ada Lovelace").unwrap(),
        password_hash: PasswordHash::from_phc(format!("plain${PASSWORD}")),
        at: at(0),
    }
}

fn backup_digests() -> Vec<KeyedDigest> {
    BACKUP_CODES
        .iter()
        .map(|code| digest_of(&code.replace('-', "")))
        .collect()
}

fn code_generator_enabled() -> UserEvent {
    UserEvent::TfaEnabled {
        device: Device {
            id: DeviceId::from_uuid(nth_uuid(0)),
            secret: DeviceSecret::CodeGenerator {
                seed: SealedSecret {
                    key_id: "test".to_owned(),
                    ciphertext: hex(SEED),
                },
            },
        },
        backup_codes: backup_digests(),
        at: at(0),
    }
}

fn email_device_enabled() -> UserEvent {
    UserEvent::TfaEnabled {
        device: Device {
            id: DeviceId::from_uuid(nth_uuid(0)),
            secret: DeviceSecret::Email,
        },
        backup_codes: backup_digests(),
        at: at(0),
    }
}

fn second_factor_required(n: u8) -> UserEvent {
    UserEvent::SecondFactorRequired {
        challenge_id: challenge(n),
        at: at(0),
    }
}

/// The session a completed login at `offset` starts, with the first two UUIDs of the command.
fn session_started(offset: i64) -> UserEvent {
    UserEvent::SessionStarted {
        session_id: crate::values::SessionId::from_uuid(nth_uuid(0)),
        refresh_id: crate::values::RefreshTokenId::from_uuid(nth_uuid(1)),
        expires_at: at(offset) + crate::user::SESSION_MAX_AGE,
        at: at(offset),
    }
}
