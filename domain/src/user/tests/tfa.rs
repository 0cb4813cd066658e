use super::*;
use crate::totp;
use crate::user::{Factor, UserCommand, UserError, VerifyTfaCode, EMAIL_CODE_TTL};

fn verify(n: u8, code: &str) -> UserCommand {
    UserCommand::VerifyTfaCode(VerifyTfaCode {
        challenge_id: challenge(n),
        code: secret(code),
    })
}

fn step0() -> u64 {
    totp::step_at(at(0))
}

fn code_at(step: u64) -> String {
    totp::code_at_step(&seed(), step)
}

fn verified_totp(n: u8, step: u64, offset: i64) -> UserEvent {
    UserEvent::TfaVerified {
        challenge_id: challenge(n),
        factor: Factor::Totp,
        totp_step: Some(step),
        at: at(offset),
    }
}

fn failed(factor: Factor, n: u8, offset: i64) -> UserEvent {
    UserEvent::LoginFailed {
        factor,
        challenge_id: Some(challenge(n)),
        at: at(offset),
    }
}

#[test]
fn a_current_totp_code_completes_the_challenge_and_records_its_step() {
    test_at(0)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            second_factor_required(1),
        ])
        .when(verify(1, &code_at(step0())))
        .then_expect_events(vec![verified_totp(1, step0(), 0), session_started(0)]);
}

#[test]
fn a_code_from_the_previous_step_is_accepted_for_clock_drift() {
    test_at(0)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            second_factor_required(1),
        ])
        .when(verify(1, &code_at(step0() - 1)))
        .then_expect_events(vec![verified_totp(1, step0() - 1, 0), session_started(0)]);
}

#[test]
fn a_code_two_steps_old_is_a_failed_attempt() {
    test_at(0)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            second_factor_required(1),
        ])
        .when(verify(1, &code_at(step0() - 2)))
        .then_expect_events(vec![failed(Factor::Totp, 1, 0)]);
}

#[test]
fn a_wrong_totp_code_is_recorded_against_the_challenge() {
    test_at(0)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            second_factor_required(1),
        ])
        .when(verify(1, "000000"))
        .then_expect_events(vec![failed(Factor::Totp, 1, 0)]);
}

#[test]
fn a_replayed_totp_code_is_refused_even_on_a_new_challenge() {
    test_at(10)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            second_factor_required(1),
            verified_totp(1, step0(), 0),
            second_factor_required(2),
        ])
        .when(verify(2, &code_at(step0())))
        .then_expect_error(UserError::TfaCodeReplayed);
}

#[test]
fn a_code_of_a_step_before_the_last_accepted_one_is_refused() {
    test_at(0)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            second_factor_required(1),
            verified_totp(1, step0(), 0),
            second_factor_required(2),
        ])
        .when(verify(2, &code_at(step0() - 1)))
        .then_expect_error(UserError::TfaCodeReplayed);
}

#[test]
fn the_next_steps_code_is_accepted_after_an_earlier_one() {
    test_at(30)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            second_factor_required(1),
            verified_totp(1, step0(), 0),
            second_factor_required(2),
        ])
        .when(verify(2, &code_at(step0() + 1)))
        .then_expect_events(vec![verified_totp(2, step0() + 1, 30), session_started(30)]);
}

#[test]
fn a_completed_challenge_cannot_be_used_again() {
    test_at(30)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            second_factor_required(1),
            verified_totp(1, step0(), 0),
        ])
        .when(verify(1, &code_at(step0() + 1)))
        .then_expect_error(UserError::ChallengeClosed);
}

#[test]
fn a_challenge_dies_after_five_wrong_codes() {
    let mut given = vec![
        signed_up(),
        code_generator_enabled(),
        second_factor_required(1),
    ];
    given.extend((0..5).map(|_| failed(Factor::Totp, 1, 0)));
    test_at(0)
        .given(given)
        .when(verify(1, &code_at(step0())))
        .then_expect_error(UserError::ChallengeClosed);
}

#[test]
fn four_wrong_codes_leave_the_challenge_open() {
    let mut given = vec![
        signed_up(),
        code_generator_enabled(),
        second_factor_required(1),
    ];
    given.extend((0..4).map(|_| failed(Factor::Totp, 1, 0)));
    test_at(0)
        .given(given)
        .when(verify(1, &code_at(step0())))
        .then_expect_events(vec![verified_totp(1, step0(), 0), session_started(0)]);
}

#[test]
fn a_challenge_that_was_never_opened_is_refused() {
    test_at(0)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            second_factor_required(1),
        ])
        .when(verify(2, &code_at(step0())))
        .then_expect_error(UserError::ChallengeClosed);
}

fn email_code_issued(n: u8) -> UserEvent {
    UserEvent::EmailCodeIssued {
        challenge_id: challenge(n),
        digest: digest_of("123456"),
        expires_at: at(0) + EMAIL_CODE_TTL,
    }
}

#[test]
fn the_emailed_code_completes_the_challenge() {
    test_at(60)
        .given(vec![
            signed_up(),
            email_device_enabled(),
            second_factor_required(1),
            email_code_issued(1),
        ])
        .when(verify(1, "123456"))
        .then_expect_events(vec![
            UserEvent::TfaVerified {
                challenge_id: challenge(1),
                factor: Factor::EmailCode,
                totp_step: None,
                at: at(60),
            },
            session_started(60),
        ]);
}

#[test]
fn a_wrong_emailed_code_is_recorded_against_the_challenge() {
    test_at(60)
        .given(vec![
            signed_up(),
            email_device_enabled(),
            second_factor_required(1),
            email_code_issued(1),
        ])
        .when(verify(1, "654321"))
        .then_expect_events(vec![failed(Factor::EmailCode, 1, 60)]);
}

#[test]
fn an_emailed_code_is_refused_once_it_expires() {
    test_at(600)
        .given(vec![
            signed_up(),
            email_device_enabled(),
            second_factor_required(1),
            email_code_issued(1),
        ])
        .when(verify(1, "123456"))
        .then_expect_error(UserError::EmailCodeExpired);
}

#[test]
fn an_emailed_code_works_only_once() {
    test_at(60)
        .given(vec![
            signed_up(),
            email_device_enabled(),
            second_factor_required(1),
            email_code_issued(1),
            UserEvent::TfaVerified {
                challenge_id: challenge(1),
                factor: Factor::EmailCode,
                totp_step: None,
                at: at(30),
            },
        ])
        .when(verify(1, "123456"))
        .then_expect_error(UserError::ChallengeClosed);
}
