use super::*;
use crate::user::{AuditScope, UserCommand, UserError};

#[test]
fn granting_admin_records_the_role() {
    test_at(5)
        .given(vec![signed_up()])
        .when(UserCommand::GrantAdmin)
        .then_expect_events(vec![UserEvent::AdminGranted { at: at(5) }]);
}

#[test]
fn granting_admin_to_an_admin_records_nothing() {
    test_at(5)
        .given(vec![signed_up(), UserEvent::AdminGranted { at: at(1) }])
        .when(UserCommand::GrantAdmin)
        .then_expect_events(vec![]);
}

#[test]
fn granting_admin_to_a_user_who_never_signed_up_is_refused() {
    test_at(5)
        .given_no_previous_events()
        .when(UserCommand::GrantAdmin)
        .then_expect_error(UserError::UnknownUser);
}

mod account_lock {
    use super::super::*;
    use crate::user::{LogIn, SessionEndReason, UserCommand, UserError, SESSION_MAX_AGE};
    use crate::values::{RefreshTokenId, SessionId};

    fn started() -> UserEvent {
        UserEvent::SessionStarted {
            session_id: SessionId::from_uuid(nth_uuid(3)),
            refresh_id: RefreshTokenId::from_uuid(nth_uuid(4)),
            expires_at: at(0) + SESSION_MAX_AGE,
            at: at(0),
        }
    }

    fn log_in(password: &str) -> UserCommand {
        UserCommand::LogIn(LogIn {
            password: secret(password),
            email_code: secret("123456"),
        })
    }

    #[test]
    fn locking_an_account_ends_its_sessions() {
        test_at(5)
            .given(vec![signed_up(), started()])
            .when(UserCommand::LockAccount)
            .then_expect_events(vec![
                UserEvent::AccountLocked { at: at(5) },
                UserEvent::SessionEnded {
                    session_id: SessionId::from_uuid(nth_uuid(3)),
                    reason: SessionEndReason::EndedByAdmin,
                    at: at(5),
                },
            ]);
    }

    #[test]
    fn a_locked_account_refuses_the_right_password_and_says_so_only_then() {
        test_at(5)
            .given(vec![signed_up(), UserEvent::AccountLocked { at: at(1) }])
            .when(log_in(PASSWORD))
            .then_expect_error(UserError::AccountLocked);
        test_at(5)
            .given(vec![signed_up(), UserEvent::AccountLocked { at: at(1) }])
            .when(log_in("a wrong password"))
            .then_expect_events(vec![UserEvent::LoginFailed {
                factor: crate::user::Factor::Password,
                challenge_id: None,
                at: at(5),
            }]);
    }

    #[test]
    fn unlocking_lets_the_user_in_again_and_is_idempotent() {
        test_at(5)
            .given(vec![signed_up(), UserEvent::AccountLocked { at: at(1) }])
            .when(UserCommand::UnlockAccount)
            .then_expect_events(vec![UserEvent::AccountUnlocked { at: at(5) }]);
        test_at(5)
            .given(vec![signed_up()])
            .when(UserCommand::UnlockAccount)
            .then_expect_events(vec![]);
        test_at(5)
            .given(vec![signed_up(), UserEvent::AccountLocked { at: at(1) }])
            .when(UserCommand::LockAccount)
            .then_expect_events(vec![]);
    }
}

#[test]
fn a_read_of_the_audit_trail_is_recorded() {
    test_at(30)
        .given(vec![signed_up()])
        .when(UserCommand::RecordAuditRead(AuditScope::StateAsOf))
        .then_expect_events(vec![UserEvent::AuditTrailRead {
            scope: AuditScope::StateAsOf,
            at: at(30),
        }]);
}

#[test]
fn the_audit_trail_of_nobody_cannot_be_read() {
    test_at(0)
        .given_no_previous_events()
        .when(UserCommand::RecordAuditRead(AuditScope::Events))
        .then_expect_error(UserError::UnknownUser);
}
