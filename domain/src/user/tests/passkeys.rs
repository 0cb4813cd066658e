//! Passkeys: registering, renaming, removing, and their assertions at login.

use super::sessions::{recent_sign_in, started};
use super::*;
use crate::user::{
    Factor, LogIn, PasskeyAssertion, PasskeyStep, Reauthentication, RegisterPasskey, RemovePasskey,
    RenamePasskey, ThrottledFactor, UsePasskey, UserCommand, UserError, LOCK_AFTER_FAILURES,
    MAX_PASSKEYS,
};
use crate::values::{PasskeyCredential, PasskeyId, PasskeyName};

/// Passkey n's id.
pub(super) fn passkey_id(n: u8) -> PasskeyId {
    PasskeyId::from_uuid(Uuid::from_u128(0x9a55_0000 + u128::from(n)))
}

fn credential_id(n: u8) -> String {
    format!("credential-{n}")
}

fn credential(n: u8) -> PasskeyCredential {
    PasskeyCredential::new(serde_json::json!({ "cred": { "cred_id": credential_id(n) } }))
}

fn name(text: &str) -> PasskeyName {
    PasskeyName::parse(text).unwrap()
}

/// Passkey n, registered at T0 as "key n" with counter `counter`.
pub(super) fn passkey_registered(n: u8, counter: u32) -> UserEvent {
    UserEvent::PasskeyRegistered {
        passkey_id: passkey_id(n),
        credential_id: credential_id(n),
        credential: credential(n),
        counter,
        name: name(&format!("key {n}")),
        at: at(0),
    }
}

fn register(n: u8, text: &str) -> UserCommand {
    UserCommand::RegisterPasskey(RegisterPasskey {
        credential_id: credential_id(n),
        credential: credential(n),
        counter: 0,
        name: name(text),
    })
}

fn used(n: u8, counter: u32, offset: i64) -> UserEvent {
    UserEvent::PasskeyUsed {
        passkey_id: passkey_id(n),
        counter,
        backup_state: false,
        at: at(offset),
    }
}

fn assertion(step: PasskeyStep, n: u8, counter: u32) -> UserCommand {
    UserCommand::UsePasskey(UsePasskey {
        step,
        credential_id: credential_id(n),
        assertion: PasskeyAssertion::Verified {
            counter,
            backup_state: false,
        },
    })
}

fn second_factor(n: u8) -> PasskeyStep {
    PasskeyStep::SecondFactor {
        challenge_id: challenge(n),
    }
}

fn failed(challenge_id: Option<ChallengeId>, offset: i64) -> UserEvent {
    UserEvent::LoginFailed {
        factor: Factor::Passkey,
        challenge_id,
        at: at(offset),
    }
}

#[test]
fn a_finished_registration_records_the_passkey_under_a_new_id() {
    test_at(0)
        .given(vec![signed_up()])
        .when(register(1, "  laptop "))
        .then_expect_events(vec![UserEvent::PasskeyRegistered {
            passkey_id: PasskeyId::from_uuid(nth_uuid(0)),
            credential_id: credential_id(1),
            credential: credential(1),
            counter: 0,
            name: name("laptop"),
            at: at(0),
        }]);
}

#[test]
fn no_more_than_ten_passkeys_are_registered() {
    let mut given = vec![signed_up()];
    given.extend((0..MAX_PASSKEYS as u8).map(|n| passkey_registered(n, 0)));
    test_at(0)
        .given(given)
        .when(register(11, "one too many"))
        .then_expect_error(UserError::PasskeyLimitReached);
}

#[test]
fn a_name_another_passkey_has_in_any_case_is_refused() {
    test_at(0)
        .given(vec![signed_up(), passkey_registered(0, 0)])
        .when(register(1, "KEY 0"))
        .then_expect_error(UserError::PasskeyNameTaken);
}

#[test]
fn the_same_credential_is_not_registered_twice() {
    test_at(0)
        .given(vec![signed_up(), passkey_registered(0, 0)])
        .when(register(0, "again"))
        .then_expect_error(UserError::PasskeyAlreadyRegistered);
}

#[test]
fn an_admin_locked_account_registers_no_passkey() {
    test_at(0)
        .given(vec![signed_up(), UserEvent::AccountLocked { at: at(0) }])
        .when(register(1, "laptop"))
        .then_expect_error(UserError::AccountLocked);
}

#[test]
fn a_passkey_is_renamed_and_may_keep_its_own_name_in_another_case() {
    test_at(5)
        .given(vec![signed_up(), passkey_registered(0, 0)])
        .when(UserCommand::RenamePasskey(RenamePasskey {
            passkey_id: passkey_id(0),
            name: name("Key 0"),
        }))
        .then_expect_events(vec![UserEvent::PasskeyRenamed {
            passkey_id: passkey_id(0),
            name: name("Key 0"),
            at: at(5),
        }]);
}

#[test]
fn renaming_to_another_passkeys_name_is_refused() {
    test_at(5)
        .given(vec![
            signed_up(),
            passkey_registered(0, 0),
            passkey_registered(1, 0),
        ])
        .when(UserCommand::RenamePasskey(RenamePasskey {
            passkey_id: passkey_id(0),
            name: name("key 1"),
        }))
        .then_expect_error(UserError::PasskeyNameTaken);
}

#[test]
fn renaming_or_removing_an_unknown_passkey_is_refused() {
    test_at(5)
        .given(vec![signed_up(), passkey_registered(0, 0)])
        .when(UserCommand::RenamePasskey(RenamePasskey {
            passkey_id: passkey_id(9),
            name: name("x"),
        }))
        .then_expect_error(UserError::UnknownPasskey);
    test_at(5)
        .given(vec![signed_up(), passkey_registered(0, 0), started(0)])
        .when(UserCommand::RemovePasskey(RemovePasskey {
            passkey_id: passkey_id(9),
            reauthentication: recent_sign_in(0),
        }))
        .then_expect_error(UserError::UnknownPasskey);
}

#[test]
fn a_passkey_is_removed_within_the_window_after_a_sign_in() {
    test_at(60)
        .given(vec![signed_up(), passkey_registered(0, 0), started(0)])
        .when(UserCommand::RemovePasskey(RemovePasskey {
            passkey_id: passkey_id(0),
            reauthentication: recent_sign_in(0),
        }))
        .then_expect_events(vec![UserEvent::PasskeyRemoved {
            passkey_id: passkey_id(0),
            at: at(60),
        }]);
}

#[test]
fn after_the_window_removing_a_passkey_needs_a_re_authentication() {
    test_at(301)
        .given(vec![signed_up(), passkey_registered(0, 0), started(0)])
        .when(UserCommand::RemovePasskey(RemovePasskey {
            passkey_id: passkey_id(0),
            reauthentication: recent_sign_in(0),
        }))
        .then_expect_error(UserError::ReauthenticationRequired);
}

#[test]
fn a_wrong_password_removes_no_passkey_and_is_recorded() {
    test_at(301)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            passkey_registered(0, 0),
        ])
        .when(UserCommand::RemovePasskey(RemovePasskey {
            passkey_id: passkey_id(0),
            reauthentication: Reauthentication::Proofs {
                password: secret("not the password"),
                code: Some(secret("123456")),
            },
        }))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::Password,
            challenge_id: None,
            at: at(301),
        }]);
}

/// The password of a user whose only second factor is a passkey.
fn password_alone() -> Reauthentication {
    Reauthentication::Proofs {
        password: secret(PASSWORD),
        code: None,
    }
}

#[test]
fn the_password_alone_does_not_re_authenticate_a_user_whose_second_factor_is_a_passkey() {
    // Whoever holds the password and an access token would otherwise add their own passkey.
    test_at(301)
        .given(vec![signed_up(), passkey_registered(0, 0), started(0)])
        .when(UserCommand::Reauthenticate(password_alone()))
        .then_expect_error(UserError::PasskeySignInRequired);
}

#[test]
fn the_password_alone_removes_no_passkey_of_a_user_whose_second_factor_is_a_passkey() {
    test_at(301)
        .given(vec![signed_up(), passkey_registered(0, 0), started(0)])
        .when(UserCommand::RemovePasskey(RemovePasskey {
            passkey_id: passkey_id(0),
            reauthentication: password_alone(),
        }))
        .then_expect_error(UserError::PasskeySignInRequired);
}

#[test]
fn a_user_whose_second_factor_is_a_passkey_re_authenticates_by_signing_in_with_it() {
    test_at(60)
        .given(vec![signed_up(), passkey_registered(0, 0), started(0)])
        .when(UserCommand::Reauthenticate(recent_sign_in(0)))
        .then_expect_events(vec![]);
}

#[test]
fn the_password_alone_still_re_authenticates_a_user_without_a_second_factor() {
    test_at(301)
        .given(vec![signed_up(), started(0)])
        .when(UserCommand::Reauthenticate(password_alone()))
        .then_expect_events(vec![]);
}

#[test]
fn a_user_with_a_passkey_is_asked_for_a_second_factor_after_the_password() {
    test_at(0)
        .given(vec![signed_up(), passkey_registered(0, 0)])
        .when(UserCommand::LogIn(LogIn {
            password: secret(PASSWORD),
            email_code: secret("111111"),
        }))
        .then_expect_events(vec![second_factor_required(0)]);
}

#[test]
fn a_verified_assertion_completes_the_second_step() {
    test_at(0)
        .given(vec![
            signed_up(),
            passkey_registered(0, 0),
            second_factor_required(5),
        ])
        .when(assertion(second_factor(5), 0, 1))
        .then_expect_events(vec![
            used(0, 1, 0),
            UserEvent::TfaVerified {
                challenge_id: challenge(5),
                factor: Factor::Passkey,
                totp_step: None,
                at: at(0),
            },
            session_started(0),
        ]);
}

#[test]
fn a_verified_assertion_alone_signs_in_passwordless() {
    test_at(0)
        .given(vec![signed_up(), passkey_registered(0, 0)])
        .when(assertion(PasskeyStep::Passwordless, 0, 0))
        .then_expect_events(vec![used(0, 0, 0), session_started(0)]);
}

#[test]
fn an_admin_locked_account_is_named_only_to_a_verified_passkey() {
    let locked = || {
        test_at(0).given(vec![
            signed_up(),
            passkey_registered(0, 0),
            UserEvent::AccountLocked { at: at(0) },
        ])
    };
    locked()
        .when(assertion(PasskeyStep::Passwordless, 7, 1))
        .then_expect_events(vec![failed(None, 0)]);
    locked()
        .when(assertion(PasskeyStep::Passwordless, 0, 1))
        .then_expect_error(UserError::AccountLocked);
}

#[test]
fn an_assertion_for_a_closed_challenge_is_refused() {
    test_at(0)
        .given(vec![signed_up(), passkey_registered(0, 0)])
        .when(assertion(second_factor(5), 0, 1))
        .then_expect_error(UserError::ChallengeClosed);
}

#[test]
fn a_refused_assertion_and_an_unknown_credential_are_the_same_recorded_failure() {
    test_at(0)
        .given(vec![signed_up(), passkey_registered(0, 0)])
        .when(UserCommand::UsePasskey(UsePasskey {
            step: PasskeyStep::Passwordless,
            credential_id: credential_id(0),
            assertion: PasskeyAssertion::Refused,
        }))
        .then_expect_events(vec![failed(None, 0)]);
    test_at(0)
        .given(vec![signed_up(), passkey_registered(0, 0)])
        .when(assertion(PasskeyStep::Passwordless, 7, 3))
        .then_expect_events(vec![failed(None, 0)]);
}

#[test]
fn a_counter_that_does_not_advance_is_refused_and_recorded() {
    test_at(9)
        .given(vec![
            signed_up(),
            passkey_registered(0, 0),
            used(0, 5, 1),
            second_factor_required(5),
        ])
        .when(assertion(second_factor(5), 0, 5))
        .then_expect_events(vec![
            UserEvent::PasskeyCounterRegressed {
                passkey_id: passkey_id(0),
                counter: 5,
                stored_counter: 5,
                at: at(9),
            },
            failed(Some(challenge(5)), 9),
        ]);
}

#[test]
fn authenticators_that_do_not_count_stay_at_zero() {
    test_at(9)
        .given(vec![signed_up(), passkey_registered(0, 0), used(0, 0, 1)])
        .when(assertion(PasskeyStep::Passwordless, 0, 0))
        .then_expect_events(vec![used(0, 0, 9), session_started(9)]);
}

#[test]
fn failed_assertions_lock_the_passkey_factor_like_the_others() {
    let mut given = vec![signed_up(), passkey_registered(0, 0)];
    given.extend((0..LOCK_AFTER_FAILURES).map(|_| failed(None, 0)));
    given.push(UserEvent::FactorLocked {
        factor: ThrottledFactor::Passkey,
        until: at(60),
        at: at(0),
    });
    test_at(30)
        .given(given)
        .when(assertion(PasskeyStep::Passwordless, 0, 1))
        .then_expect_error(UserError::Locked {
            retry_after_secs: 30,
        });
}

#[test]
fn the_fifth_failure_locks_the_passkey_factor() {
    let mut given = vec![signed_up(), passkey_registered(0, 0)];
    given.extend((1..LOCK_AFTER_FAILURES).map(|_| failed(None, 0)));
    test_at(0)
        .given(given)
        .when(assertion(PasskeyStep::Passwordless, 7, 1))
        .then_expect_events(vec![
            failed(None, 0),
            UserEvent::FactorLocked {
                factor: ThrottledFactor::Passkey,
                until: at(60),
                at: at(0),
            },
        ]);
}

#[test]
fn a_renamed_and_a_removed_passkey_fold_into_the_state() {
    use cqrs_es::Aggregate;
    let mut user = User::default();
    for event in [
        signed_up(),
        passkey_registered(0, 0),
        passkey_registered(1, 0),
        UserEvent::PasskeyRenamed {
            passkey_id: passkey_id(1),
            name: name("phone"),
            at: at(1),
        },
        used(1, 3, 2),
        UserEvent::PasskeyRemoved {
            passkey_id: passkey_id(0),
            at: at(3),
        },
    ] {
        user.apply(event);
    }
    let [only] = user.passkeys() else {
        panic!("one passkey left: {:?}", user.passkeys());
    };
    assert_eq!(only.id(), passkey_id(1));
    assert_eq!(only.name().as_str(), "phone");
    assert_eq!(only.counter(), 3);
    assert_eq!(only.last_used_at(), Some(at(2)));
}
