use super::*;
use crate::user::{Factor, UseBackupCode, UserCommand, UserError};

fn use_code(n: u8, code: &str) -> UserCommand {
    UserCommand::UseBackupCode(UseBackupCode {
        challenge_id: challenge(n),
        code: secret(code),
    })
}

fn consumed(n: u8, index: usize, remaining: usize) -> UserEvent {
    UserEvent::BackupCodeConsumed {
        challenge_id: challenge(n),
        index,
        remaining,
        at: at(0),
    }
}

#[test]
fn a_backup_code_completes_the_challenge_and_is_spent() {
    test_at(0)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            second_factor_required(1),
        ])
        .when(use_code(1, BACKUP_CODES[1]))
        .then_expect_events(vec![consumed(1, 1, 1), session_started(0)]);
}

#[test]
fn a_backup_code_is_read_back_whatever_its_case_and_separators() {
    test_at(0)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            second_factor_required(1),
        ])
        .when(use_code(1, "aaaabbbb ccccdddd eeeeffff"))
        .then_expect_events(vec![consumed(1, 0, 1), session_started(0)]);
}

#[test]
fn a_spent_backup_code_is_a_failed_attempt() {
    test_at(0)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            second_factor_required(1),
            consumed(1, 0, 1),
            second_factor_required(2),
        ])
        .when(use_code(2, BACKUP_CODES[0]))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::BackupCode,
            challenge_id: Some(challenge(2)),
            at: at(0),
        }]);
}

#[test]
fn with_every_backup_code_spent_the_request_is_refused() {
    test_at(0)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            second_factor_required(1),
            consumed(1, 0, 1),
            second_factor_required(2),
            consumed(2, 1, 0),
            second_factor_required(3),
        ])
        .when(use_code(3, BACKUP_CODES[0]))
        .then_expect_error(UserError::NoBackupCodesLeft);
}

#[test]
fn a_backup_code_needs_an_open_challenge() {
    test_at(0)
        .given(vec![signed_up(), code_generator_enabled()])
        .when(use_code(1, BACKUP_CODES[0]))
        .then_expect_error(UserError::ChallengeClosed);
}
