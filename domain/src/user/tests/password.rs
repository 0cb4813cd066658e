use super::*;
use crate::user::{
    ChangePassword, Factor, LogIn, RequestPasswordReset, ResetPassword, SessionEndReason,
    UserCommand, UserError, RESET_EMAILS_PER_DAY, RESET_EMAIL_INTERVAL, RESET_TOKEN_TTL,
    SESSION_MAX_AGE,
};
use crate::values::{NewPassword, RefreshTokenId, SessionId};

const NEW_PASSWORD: &str = "a brand new passphrase";
const TOKEN: &str = "reset-token-with-plenty-of-entropy";

fn session(n: u8) -> SessionId {
    SessionId::from_uuid(nth_uuid(3 + n))
}

fn started(n: u8) -> UserEvent {
    UserEvent::SessionStarted {
        session_id: session(n),
        refresh_id: RefreshTokenId::from_uuid(nth_uuid(6 + n)),
        expires_at: at(0) + SESSION_MAX_AGE,
        at: at(0),
    }
}

fn ended(n: u8, offset: i64) -> UserEvent {
    UserEvent::SessionEnded {
        session_id: session(n),
        reason: SessionEndReason::PasswordChanged,
        at: at(offset),
    }
}

fn new_password() -> NewPassword {
    NewPassword::parse(secret(NEW_PASSWORD)).unwrap()
}

fn new_hash() -> PasswordHash {
    PasswordHash::from_phc(format!("plain${NEW_PASSWORD}"))
}

fn reset_requested() -> UserEvent {
    UserEvent::PasswordResetRequested {
        digest: digest_of(TOKEN),
        expires_at: at(0) + RESET_TOKEN_TTL,
        at: at(0),
    }
}

fn reset(token: &str) -> UserCommand {
    UserCommand::ResetPassword(ResetPassword {
        token: secret(token),
        new: new_password(),
    })
}

#[test]
fn a_change_with_the_right_current_password_ends_every_other_session() {
    test_at(9)
        .given(vec![signed_up(), started(0), started(1)])
        .when(UserCommand::ChangePassword(ChangePassword {
            current: secret(PASSWORD),
            new: new_password(),
            keep_session: Some(session(1)),
        }))
        .then_expect_events(vec![
            UserEvent::PasswordChanged {
                password_hash: new_hash(),
                at: at(9),
            },
            ended(0, 9),
        ]);
}

#[test]
fn an_admin_locked_account_cannot_change_its_password_even_with_the_right_one() {
    let locked = || {
        vec![
            signed_up(),
            started(0),
            UserEvent::AccountLocked { at: at(1) },
        ]
    };
    let change = |current: &str| {
        UserCommand::ChangePassword(ChangePassword {
            current: secret(current),
            new: new_password(),
            keep_session: Some(session(0)),
        })
    };
    test_at(9)
        .given(locked())
        .when(change(PASSWORD))
        .then_expect_error(UserError::AccountLocked);
    // A wrong password still counts, and says nothing about the lock.
    test_at(9)
        .given(locked())
        .when(change("not the password"))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::Password,
            challenge_id: None,
            at: at(9),
        }]);
}

#[test]
fn a_wrong_current_password_is_a_failed_password_attempt() {
    test_at(9)
        .given(vec![signed_up()])
        .when(UserCommand::ChangePassword(ChangePassword {
            current: secret("not the password"),
            new: new_password(),
            keep_session: None,
        }))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::Password,
            challenge_id: None,
            at: at(9),
        }]);
}

#[test]
fn a_reset_is_recorded_as_a_digest_that_expires_in_fifteen_minutes() {
    test_at(0)
        .given(vec![signed_up()])
        .when(UserCommand::RequestPasswordReset(RequestPasswordReset {
            token: secret(TOKEN),
        }))
        .then_expect_events(vec![reset_requested()]);
}

#[test]
fn the_reset_token_sets_the_password_and_ends_every_session() {
    test_at(60)
        .given(vec![signed_up(), started(0), reset_requested()])
        .when(reset(TOKEN))
        .then_expect_events(vec![
            UserEvent::PasswordReset {
                password_hash: new_hash(),
                at: at(60),
            },
            ended(0, 60),
        ]);
}

#[test]
fn a_reset_token_works_once() {
    test_at(60)
        .given(vec![
            signed_up(),
            reset_requested(),
            UserEvent::PasswordReset {
                password_hash: new_hash(),
                at: at(30),
            },
        ])
        .when(reset(TOKEN))
        .then_expect_error(UserError::ResetTokenInvalid);
}

#[test]
fn an_expired_or_wrong_reset_token_is_refused() {
    test_at(15 * 60)
        .given(vec![signed_up(), reset_requested()])
        .when(reset(TOKEN))
        .then_expect_error(UserError::ResetTokenInvalid);
    test_at(60)
        .given(vec![signed_up(), reset_requested()])
        .when(reset("another-token"))
        .then_expect_error(UserError::ResetTokenInvalid);
}

#[test]
fn after_a_reset_the_old_password_fails() {
    test_at(90)
        .given(vec![
            signed_up(),
            reset_requested(),
            UserEvent::PasswordReset {
                password_hash: new_hash(),
                at: at(30),
            },
        ])
        .when(UserCommand::LogIn(LogIn {
            password: secret(PASSWORD),
            email_code: secret("123456"),
        }))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::Password,
            challenge_id: None,
            at: at(90),
        }]);
}

fn changed() -> UserEvent {
    UserEvent::PasswordChanged {
        password_hash: new_hash(),
        at: at(20),
    }
}

#[test]
fn a_password_change_voids_a_pending_reset_token() {
    test_at(60)
        .given(vec![signed_up(), reset_requested(), changed()])
        .when(reset(TOKEN))
        .then_expect_error(UserError::ResetTokenInvalid);
}

#[test]
fn a_password_change_closes_open_login_challenges() {
    test_at(60)
        .given(vec![
            signed_up(),
            email_device_enabled(),
            second_factor_required(1),
            changed(),
        ])
        .when(UserCommand::VerifyTfaCode(crate::user::VerifyTfaCode {
            challenge_id: challenge(1),
            code: secret("123456"),
        }))
        .then_expect_error(UserError::ChallengeClosed);
}

#[test]
fn a_password_reset_clears_the_password_failure_count() {
    let mut given = vec![signed_up(), reset_requested()];
    given.extend((0..4).map(|_| UserEvent::LoginFailed {
        factor: Factor::Password,
        challenge_id: None,
        at: at(0),
    }));
    given.push(UserEvent::PasswordReset {
        password_hash: new_hash(),
        at: at(30),
    });
    test_at(60)
        .given(given)
        .when(UserCommand::LogIn(LogIn {
            password: secret("a wrong guess"),
            email_code: secret("123456"),
        }))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::Password,
            challenge_id: None,
            at: at(60),
        }]);
}

fn reset_requested_at(offset: i64) -> UserEvent {
    UserEvent::PasswordResetRequested {
        digest: digest_of(TOKEN),
        expires_at: at(offset) + RESET_TOKEN_TTL,
        at: at(offset),
    }
}

const ANOTHER_TOKEN: &str = "another-reset-token-with-plenty-of-entropy";

fn request_reset() -> UserCommand {
    UserCommand::RequestPasswordReset(RequestPasswordReset {
        token: secret(ANOTHER_TOKEN),
    })
}

fn another_reset_requested_at(offset: i64) -> UserEvent {
    UserEvent::PasswordResetRequested {
        digest: digest_of(ANOTHER_TOKEN),
        expires_at: at(offset) + RESET_TOKEN_TTL,
        at: at(offset),
    }
}

#[test]
fn a_reset_request_within_the_cooldown_records_nothing_and_the_pending_token_stands() {
    let just_before = RESET_EMAIL_INTERVAL.whole_seconds() - 1;
    test_at(just_before)
        .given(vec![signed_up(), reset_requested_at(0)])
        .when(request_reset())
        .then_expect_events(vec![]);
    test_at(just_before)
        .given(vec![signed_up(), reset_requested_at(0)])
        .when(reset(TOKEN))
        .then_expect_events(vec![UserEvent::PasswordReset {
            password_hash: new_hash(),
            at: at(just_before),
        }]);
}

#[test]
fn a_reset_request_after_the_cooldown_issues_a_new_token() {
    let after = RESET_EMAIL_INTERVAL.whole_seconds();
    test_at(after)
        .given(vec![signed_up(), reset_requested_at(0)])
        .when(request_reset())
        .then_expect_events(vec![another_reset_requested_at(after)]);
}

#[test]
fn no_more_than_the_daily_cap_of_reset_emails_go_in_a_day() {
    let interval = RESET_EMAIL_INTERVAL.whole_seconds();
    let cap = i64::try_from(RESET_EMAILS_PER_DAY).unwrap();
    let mut history = vec![signed_up()];
    history.extend((0..cap).map(|n| reset_requested_at(n * interval)));
    let last = (cap - 1) * interval;
    test_at(last + interval)
        .given(history.clone())
        .when(request_reset())
        .then_expect_events(vec![]);
    // A day after the first, one more may go.
    let a_day_later = time::Duration::DAY.whole_seconds();
    test_at(a_day_later)
        .given(history)
        .when(request_reset())
        .then_expect_events(vec![another_reset_requested_at(a_day_later)]);
}
