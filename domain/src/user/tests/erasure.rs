use super::passkeys::passkey_registered;
use super::sessions::{recent_sign_in, session, started};
use super::*;
use crate::totp;
use crate::user::{
    AuditScope, EraseOwnAccount, Factor, LogIn, SessionEndReason, UserCommand, UserError,
};

fn erase_own(password: &str, code: Option<&str>) -> UserCommand {
    UserCommand::EraseOwnAccount(EraseOwnAccount {
        password: secret(password),
        code: code.map(secret),
        sign_in: recent_sign_in(0),
    })
}

fn ended_by_erasure(offset: i64) -> UserEvent {
    UserEvent::SessionEnded {
        session_id: crate::values::SessionId::from_uuid(nth_uuid(0)),
        reason: SessionEndReason::AccountErased,
        at: at(offset),
    }
}

fn erased(offset: i64) -> UserEvent {
    UserEvent::UserErased { at: at(offset) }
}

#[test]
fn the_user_erases_their_account_with_the_password_and_every_session_ends_first() {
    test_at(60)
        .given(vec![signed_up(), session_started(0)])
        .when(erase_own(PASSWORD, None))
        .then_expect_events(vec![ended_by_erasure(60), erased(60)]);
}

#[test]
fn a_user_whose_second_factor_is_a_passkey_erases_their_account_after_signing_in_with_it() {
    let passkey_user = || vec![signed_up(), passkey_registered(0, 0), started(0)];
    test_at(60)
        .given(passkey_user())
        .when(erase_own(PASSWORD, None))
        .then_expect_events(vec![
            UserEvent::SessionEnded {
                session_id: session(0),
                reason: SessionEndReason::AccountErased,
                at: at(60),
            },
            erased(60),
        ]);
    // Later, the password alone is not enough: no code can be typed for a passkey.
    test_at(301)
        .given(passkey_user())
        .when(erase_own(PASSWORD, None))
        .then_expect_error(UserError::PasskeySignInRequired);
}

#[test]
fn a_wrong_password_erases_nothing_and_counts_as_a_failure() {
    test_at(60)
        .given(vec![signed_up()])
        .when(erase_own("not the password", None))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::Password,
            challenge_id: None,
            at: at(60),
        }]);
}

#[test]
fn with_two_factor_authentication_on_a_current_second_factor_is_required_too() {
    test_at(0)
        .given(vec![signed_up(), code_generator_enabled()])
        .when(erase_own(PASSWORD, None))
        .then_expect_error(UserError::SecondFactorRequired);
    let code = totp::code_at_step(&seed(), totp::step_at(at(0)));
    test_at(0)
        .given(vec![signed_up(), code_generator_enabled()])
        .when(erase_own(PASSWORD, Some(&code)))
        .then_expect_events(vec![
            UserEvent::SecondFactorConfirmed {
                factor: Factor::Totp,
                totp_step: Some(totp::step_at(at(0))),
                backup_code_index: None,
                at: at(0),
            },
            erased(0),
        ]);
    test_at(0)
        .given(vec![signed_up(), code_generator_enabled()])
        .when(erase_own(PASSWORD, Some("000000")))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::Totp,
            challenge_id: None,
            at: at(0),
        }]);
}

#[test]
fn an_admin_erases_an_account_without_its_proofs() {
    test_at(90)
        .given(vec![signed_up(), session_started(0)])
        .when(UserCommand::EraseAccount)
        .then_expect_events(vec![ended_by_erasure(90), erased(90)]);
}

#[test]
fn an_erased_user_is_unknown_to_every_command_but_the_record_of_an_audit_read() {
    let history = vec![signed_up(), erased(10)];
    for command in [
        UserCommand::LogIn(LogIn {
            password: secret(PASSWORD),
            email_code: secret("123456"),
        }),
        UserCommand::GrantAdmin,
        UserCommand::EraseAccount,
        erase_own(PASSWORD, None),
    ] {
        test_at(20)
            .given(history.clone())
            .when(command)
            .then_expect_error(UserError::UnknownUser);
    }
    // The log of an erased user stays readable to auditors, and who read it is recorded.
    test_at(20)
        .given(history)
        .when(UserCommand::RecordAuditRead(AuditScope::Events))
        .then_expect_events(vec![UserEvent::AuditTrailRead {
            scope: AuditScope::Events,
            at: at(20),
        }]);
    test_at(20)
        .given(vec![])
        .when(UserCommand::RecordAuditRead(AuditScope::Events))
        .then_expect_error(UserError::UnknownUser);
}

#[test]
fn an_erased_stream_cannot_sign_up_again() {
    let sign_up = match signed_up() {
        UserEvent::SignedUp {
            user_id,
            email,
            full_name,
            ..
        } => crate::user::SignUp {
            user_id,
            email,
            full_name,
            password: crate::values::NewPassword::parse(secret(PASSWORD)).unwrap(),
            tfa: None,
        },
        _ => unreachable!("a sign-up fixture"),
    };
    test_at(20)
        .given(vec![signed_up(), erased(10)])
        .when(UserCommand::SignUp(sign_up))
        .then_expect_error(UserError::AlreadyRegistered);
}
