use time::Duration;

use super::*;
use crate::totp;
use crate::user::{
    Factor, LogIn, ThrottledFactor, UseBackupCode, UserCommand, UserError, VerifyTfaCode,
};

fn log_in(password: &str) -> UserCommand {
    UserCommand::LogIn(LogIn {
        password: secret(password),
        email_code: secret("123456"),
    })
}

fn wrong_password(offset: i64) -> UserEvent {
    UserEvent::LoginFailed {
        factor: Factor::Password,
        challenge_id: None,
        at: at(offset),
    }
}

fn locked(factor: ThrottledFactor, offset: i64, minutes: i64) -> UserEvent {
    UserEvent::FactorLocked {
        factor,
        until: at(offset) + Duration::minutes(minutes),
        at: at(offset),
    }
}

fn history_with_wrong_passwords(count: usize) -> Vec<UserEvent> {
    let mut events = vec![signed_up()];
    events.extend((0..count).map(|_| wrong_password(0)));
    events
}

#[test]
fn the_fifth_wrong_password_in_a_row_locks_the_password_for_a_minute() {
    test_at(10)
        .given(history_with_wrong_passwords(4))
        .when(log_in("wrong guess"))
        .then_expect_events(vec![
            wrong_password(10),
            locked(ThrottledFactor::Password, 10, 1),
        ]);
}

#[test]
fn a_locked_password_is_refused_before_it_is_checked() {
    let mut given = history_with_wrong_passwords(5);
    given.push(locked(ThrottledFactor::Password, 0, 1));
    test_at(20)
        .given(given)
        .when(log_in(PASSWORD))
        .then_expect_error(UserError::Locked {
            retry_after_secs: 40,
        });
}

#[test]
fn the_lock_expires_by_itself() {
    let mut given = history_with_wrong_passwords(5);
    given.push(locked(ThrottledFactor::Password, 0, 1));
    test_at(61)
        .given(given)
        .when(log_in(PASSWORD))
        .then_expect_events(vec![
            UserEvent::LoggedIn { at: at(61) },
            session_started(61),
        ]);
}

#[test]
fn each_failure_after_a_lock_doubles_the_next_lock() {
    let mut given = history_with_wrong_passwords(5);
    given.push(locked(ThrottledFactor::Password, 0, 1));
    test_at(61)
        .given(given)
        .when(log_in("still wrong"))
        .then_expect_events(vec![
            wrong_password(61),
            locked(ThrottledFactor::Password, 61, 2),
        ]);
}

#[test]
fn locks_stop_growing_at_an_hour() {
    test_at(0)
        .given(history_with_wrong_passwords(20))
        .when(log_in("still wrong"))
        .then_expect_events(vec![
            wrong_password(0),
            locked(ThrottledFactor::Password, 0, 60),
        ]);
}

#[test]
fn a_right_password_resets_the_count() {
    let mut given = history_with_wrong_passwords(4);
    given.push(UserEvent::LoggedIn { at: at(0) });
    test_at(0)
        .given(given)
        .when(log_in("wrong again"))
        .then_expect_events(vec![wrong_password(0)]);
}

fn wrong_codes(count: usize, challenge_number: u8) -> Vec<UserEvent> {
    (0..count)
        .map(|_| UserEvent::LoginFailed {
            factor: Factor::Totp,
            challenge_id: Some(challenge(challenge_number)),
            at: at(0),
        })
        .collect()
}

fn second_factor_locked_history() -> Vec<UserEvent> {
    let mut given = vec![
        signed_up(),
        code_generator_enabled(),
        second_factor_required(1),
    ];
    given.extend(wrong_codes(5, 1));
    given.push(locked(ThrottledFactor::SecondFactor, 0, 1));
    given
}

#[test]
fn failing_the_second_factor_does_not_lock_the_password() {
    test_at(5)
        .given(second_factor_locked_history())
        .when(log_in(PASSWORD))
        .then_expect_events(vec![UserEvent::SecondFactorRequired {
            challenge_id: challenge(0),
            at: at(5),
        }]);
}

#[test]
fn a_locked_second_factor_refuses_even_the_right_code() {
    let mut given = second_factor_locked_history();
    given.push(second_factor_required(2));
    test_at(5)
        .given(given)
        .when(UserCommand::VerifyTfaCode(VerifyTfaCode {
            challenge_id: challenge(2),
            code: secret(&totp::code_at_step(&seed(), totp::step_at(at(5)))),
        }))
        .then_expect_error(UserError::Locked {
            retry_after_secs: 55,
        });
}

#[test]
fn a_locked_second_factor_leaves_backup_codes_usable() {
    let mut given = second_factor_locked_history();
    given.push(second_factor_required(2));
    test_at(5)
        .given(given)
        .when(UserCommand::UseBackupCode(UseBackupCode {
            challenge_id: challenge(2),
            code: secret(BACKUP_CODES[0]),
        }))
        .then_expect_events(vec![
            UserEvent::BackupCodeConsumed {
                challenge_id: challenge(2),
                index: 0,
                remaining: 1,
                at: at(5),
            },
            session_started(5),
        ]);
}

#[test]
fn wrong_codes_across_challenges_add_up_to_a_lock() {
    let mut given = vec![
        signed_up(),
        code_generator_enabled(),
        second_factor_required(1),
    ];
    given.extend(wrong_codes(3, 1));
    given.push(second_factor_required(2));
    given.extend(wrong_codes(1, 2));
    test_at(0)
        .given(given)
        .when(UserCommand::VerifyTfaCode(VerifyTfaCode {
            challenge_id: challenge(2),
            code: secret("000000"),
        }))
        .then_expect_events(vec![
            UserEvent::LoginFailed {
                factor: Factor::Totp,
                challenge_id: Some(challenge(2)),
                at: at(0),
            },
            locked(ThrottledFactor::SecondFactor, 0, 1),
        ]);
}

#[test]
fn a_right_code_resets_the_second_factor_count() {
    let mut given = vec![
        signed_up(),
        code_generator_enabled(),
        second_factor_required(1),
    ];
    given.extend(wrong_codes(4, 1));
    given.push(UserEvent::TfaVerified {
        challenge_id: challenge(1),
        factor: Factor::Totp,
        totp_step: Some(totp::step_at(at(0))),
        at: at(0),
    });
    given.push(second_factor_required(2));
    test_at(0)
        .given(given)
        .when(UserCommand::VerifyTfaCode(VerifyTfaCode {
            challenge_id: challenge(2),
            code: secret("000000"),
        }))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::Totp,
            challenge_id: Some(challenge(2)),
            at: at(0),
        }]);
}

#[test]
fn a_used_backup_code_resets_the_backup_code_count() {
    let mut given = vec![
        signed_up(),
        code_generator_enabled(),
        second_factor_required(1),
    ];
    given.extend((0..4).map(|_| UserEvent::LoginFailed {
        factor: Factor::BackupCode,
        challenge_id: Some(challenge(1)),
        at: at(0),
    }));
    given.push(UserEvent::BackupCodeConsumed {
        challenge_id: challenge(1),
        index: 0,
        remaining: 1,
        at: at(0),
    });
    given.push(second_factor_required(2));
    test_at(0)
        .given(given)
        .when(UserCommand::UseBackupCode(UseBackupCode {
            challenge_id: challenge(2),
            code: secret("NOT0-A0CO-DE00"),
        }))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::BackupCode,
            challenge_id: Some(challenge(2)),
            at: at(0),
        }]);
}
