use super::*;
use crate::testing::RETIRED_TEST_KEY;
use crate::user::{UserCommand, UserError, VerifyTfaCode};

fn sealed_under(key_id: &str) -> SealedSecret {
    SealedSecret {
        key_id: key_id.to_owned(),
        ciphertext: hex(SEED),
    }
}

/// Two-factor authentication on with the seed sealed under the retired key.
fn enabled_before_rotation() -> UserEvent {
    let UserEvent::TfaEnabled {
        device,
        backup_codes,
        at,
    } = code_generator_enabled()
    else {
        unreachable!("the fixture is a TfaEnabled event")
    };
    UserEvent::TfaEnabled {
        device: Device {
            secret: DeviceSecret::CodeGenerator {
                seed: sealed_under(RETIRED_TEST_KEY),
            },
            ..device
        },
        backup_codes,
        at,
    }
}

#[test]
fn a_seed_under_a_retired_key_is_sealed_again_under_the_current_one() {
    test_at(5)
        .given(vec![signed_up(), enabled_before_rotation()])
        .when(UserCommand::ResealSecrets)
        .then_expect_events(vec![UserEvent::SeedResealed {
            seed: sealed_under("test"),
            at: at(5),
        }]);
}

#[test]
fn the_key_ids_in_use_name_the_seed_and_the_digests() {
    let mut user = User::default();
    for event in [signed_up(), enabled_before_rotation()] {
        cqrs_es::Aggregate::apply(&mut user, event);
    }
    assert_eq!(
        user.sealing_key_ids().into_iter().collect::<Vec<_>>(),
        vec![RETIRED_TEST_KEY, "test"]
    );
    cqrs_es::Aggregate::apply(
        &mut user,
        UserEvent::SeedResealed {
            seed: sealed_under("test"),
            at: at(1),
        },
    );
    assert_eq!(
        user.sealing_key_ids().into_iter().collect::<Vec<_>>(),
        vec!["test"]
    );
}

#[test]
fn a_seed_under_the_current_key_records_nothing() {
    test_at(5)
        .given(vec![signed_up(), code_generator_enabled()])
        .when(UserCommand::ResealSecrets)
        .then_expect_events(vec![]);
}

#[test]
fn a_user_without_a_seed_records_nothing() {
    test_at(5)
        .given(vec![signed_up(), email_device_enabled()])
        .when(UserCommand::ResealSecrets)
        .then_expect_events(vec![]);
    test_at(5)
        .given(vec![signed_up()])
        .when(UserCommand::ResealSecrets)
        .then_expect_events(vec![]);
}

#[test]
fn a_seed_no_configured_key_opens_is_reported_not_lost() {
    test_at(5)
        .given(vec![signed_up(), {
            let mut event = enabled_before_rotation();
            if let UserEvent::TfaEnabled { device, .. } = &mut event {
                device.secret = DeviceSecret::CodeGenerator {
                    seed: sealed_under("forgotten"),
                };
            }
            event
        }])
        .when(UserCommand::ResealSecrets)
        .then_expect_error(UserError::SecretUnreadable);
}

/// A login's second step with the current TOTP code, after `history`.
fn totp_login_after(history: Vec<UserEvent>) -> cqrs_es::test::AggregateResultValidator<User> {
    let step = crate::totp::step_at(at(5));
    let code = crate::totp::code_at_step(&seed(), step);
    let mut given = history;
    given.push(second_factor_required(2));
    test_at(5)
        .given(given)
        .when(UserCommand::VerifyTfaCode(VerifyTfaCode {
            challenge_id: challenge(2),
            code: secret(&code),
        }))
}

fn totp_verified() -> Vec<UserEvent> {
    vec![
        UserEvent::TfaVerified {
            challenge_id: challenge(2),
            factor: crate::user::Factor::Totp,
            totp_step: Some(crate::totp::step_at(at(5))),
            at: at(5),
        },
        session_started(5),
    ]
}

#[test]
fn a_seed_under_a_retired_key_still_verifies_codes_before_the_reseal() {
    totp_login_after(vec![signed_up(), enabled_before_rotation()])
        .then_expect_events(totp_verified());
}

#[test]
fn the_resealed_seed_verifies_codes() {
    totp_login_after(vec![
        signed_up(),
        enabled_before_rotation(),
        UserEvent::SeedResealed {
            seed: sealed_under("test"),
            at: at(1),
        },
    ])
    .then_expect_events(totp_verified());
}
