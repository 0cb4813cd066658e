use super::*;
use crate::user::{Factor, LogIn, UserCommand, UserError, EMAIL_CODE_TTL};

fn log_in(password: &str) -> UserCommand {
    UserCommand::LogIn(LogIn {
        password: secret(password),
        email_code: secret("123456"),
    })
}

#[test]
fn the_right_password_without_tfa_completes_the_login() {
    test_at(60)
        .given(vec![signed_up()])
        .when(log_in(PASSWORD))
        .then_expect_events(vec![
            UserEvent::LoggedIn { at: at(60) },
            session_started(60),
        ]);
}

#[test]
fn a_wrong_password_is_recorded_as_a_failed_login() {
    test_at(60)
        .given(vec![signed_up()])
        .when(log_in("not the password"))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::Password,
            challenge_id: None,
            at: at(60),
        }]);
}

#[test]
fn the_right_password_with_a_code_generator_opens_a_challenge_and_mails_nothing() {
    test_at(0)
        .given(vec![signed_up(), code_generator_enabled()])
        .when(log_in(PASSWORD))
        .then_expect_events(vec![second_factor_required(0)]);
}

#[test]
fn the_right_password_with_an_email_device_issues_a_digested_code_that_expires() {
    test_at(0)
        .given(vec![signed_up(), email_device_enabled()])
        .when(log_in(PASSWORD))
        .then_expect_events(vec![
            second_factor_required(0),
            UserEvent::EmailCodeIssued {
                challenge_id: challenge(0),
                digest: digest_of("123456"),
                expires_at: at(0) + EMAIL_CODE_TTL,
            },
        ]);
}

#[test]
fn a_wrong_password_with_tfa_on_opens_no_challenge() {
    test_at(0)
        .given(vec![signed_up(), email_device_enabled()])
        .when(log_in("not the password"))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::Password,
            challenge_id: None,
            at: at(0),
        }]);
}

#[test]
fn logging_in_to_a_user_who_never_signed_up_is_refused() {
    test_at(0)
        .given_no_previous_events()
        .when(log_in(PASSWORD))
        .then_expect_error(UserError::UnknownUser);
}
