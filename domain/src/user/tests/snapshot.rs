//! The folded state's shape is what snapshots store: pinned here to `SNAPSHOT_VERSION`.

use cqrs_es::Aggregate;

use super::events::one_of_each;
use super::*;
use crate::user::{User, SNAPSHOT_VERSION};

/// One event of each type, then what leaves every part of the state filled: an open
/// session, an open challenge with an emailed code, a pending reset, a failure count.
fn history() -> Vec<UserEvent> {
    // Erasure empties the state: every other fact, so that every part of it is filled.
    let mut events: Vec<UserEvent> = one_of_each()
        .into_iter()
        .filter(|event| !matches!(event, UserEvent::UserErased { .. }))
        .collect();
    events.extend([
        session_started(9),
        second_factor_required(2),
        UserEvent::EmailCodeIssued {
            challenge_id: challenge(2),
            digest: digest_of("123456"),
            expires_at: at(600),
        },
        UserEvent::PasswordResetRequested {
            digest: digest_of("token"),
            expires_at: at(900),
            at: at(9),
        },
        UserEvent::LoginFailed {
            factor: crate::user::Factor::Password,
            challenge_id: None,
            at: at(10),
        },
        super::passkeys::passkey_registered(1, 4),
        UserEvent::PasskeyUsed {
            passkey_id: super::passkeys::passkey_id(1),
            counter: 5,
            backup_state: true,
            at: at(11),
        },
        UserEvent::LoginFailed {
            factor: crate::user::Factor::Passkey,
            challenge_id: None,
            at: at(12),
        },
    ]);
    events
}

/// The state after [`history`], as a snapshot stores it.
fn folded() -> serde_json::Value {
    let mut user = User::default();
    for event in history() {
        user.apply(event);
    }
    serde_json::to_value(&user).unwrap()
}

#[test]
fn the_snapshot_shape_is_the_one_its_version_names() {
    let pinned: serde_json::Value =
        serde_json::from_str(include_str!("snapshot-shape-v5.json")).unwrap();
    assert_eq!(
        (SNAPSHOT_VERSION, folded()),
        ("5", pinned),
        "the folded state's shape changed: give SNAPSHOT_VERSION a new value and pin the \
         new shape in a new snapshot-shape file, so that snapshots of the old shape are \
         ignored rather than misread"
    );
}

#[test]
fn a_snapshot_reads_back_as_the_state_it_was_taken_of() {
    let mut user = User::default();
    for event in history() {
        user.apply(event);
    }
    let read: User = serde_json::from_value(serde_json::to_value(&user).unwrap()).unwrap();
    assert_eq!(read, user);
}
