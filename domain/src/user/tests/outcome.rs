//! Each flow's decision, read from the events its command really records.

use time::Duration;

use super::*;
use crate::totp;
use crate::user::{
    ChangeOutcome, DisableTfa, LogIn, LoginOutcome, NoDecision, RefreshOutcome, RefreshSession,
    Refusal, SessionEndReason, SessionGrant, UseBackupCode, UserCommand, VerifyTfaCode,
    SESSION_MAX_AGE,
};
use crate::values::{RefreshTokenId, SessionId};

/// The events `command` records at `offset`, given `history`.
fn recorded(offset: i64, history: Vec<UserEvent>, command: UserCommand) -> Vec<UserEvent> {
    test_at(offset)
        .given(history)
        .when(command)
        .inspect_result()
        .expect("the command succeeds (a refusal is recorded, not returned)")
}

fn log_in(password: &str) -> UserCommand {
    UserCommand::LogIn(LogIn {
        password: secret(password),
        email_code: secret("123456"),
    })
}

/// The session the first two UUIDs of a command name.
fn first_grant() -> SessionGrant {
    SessionGrant {
        user_id: user_id(),
        session_id: SessionId::from_uuid(nth_uuid(0)),
        refresh_id: RefreshTokenId::from_uuid(nth_uuid(1)),
    }
}

fn decided_login(events: &[UserEvent]) -> LoginOutcome {
    LoginOutcome::read(user_id(), events).expect("a login decision")
}

#[test]
fn the_right_password_without_tfa_is_a_login_with_its_session() {
    let events = recorded(60, vec![signed_up()], log_in(PASSWORD));
    assert_eq!(
        decided_login(&events),
        LoginOutcome::LoggedIn(first_grant())
    );
}

#[test]
fn the_right_password_with_tfa_names_the_challenge_to_answer() {
    let events = recorded(
        0,
        vec![signed_up(), code_generator_enabled()],
        log_in(PASSWORD),
    );
    assert_eq!(
        decided_login(&events),
        LoginOutcome::SecondFactorRequired {
            user_id: user_id(),
            challenge_id: challenge(0)
        }
    );
}

#[test]
fn a_wrong_password_is_refused_as_such_even_when_it_locks_the_password() {
    let events = recorded(0, vec![signed_up()], log_in("not the password"));
    assert_eq!(
        decided_login(&events),
        LoginOutcome::Refused(Refusal::WrongPassword)
    );
    let failure = events[0].clone();
    let locking = recorded(
        0,
        vec![
            signed_up(),
            failure.clone(),
            failure.clone(),
            failure.clone(),
            failure,
        ],
        log_in("not the password"),
    );
    assert!(locking
        .iter()
        .any(|event| matches!(event, UserEvent::FactorLocked { .. })));
    assert_eq!(
        decided_login(&locking),
        LoginOutcome::Refused(Refusal::WrongPassword)
    );
}

#[test]
fn a_login_at_the_session_cap_is_a_login_not_an_ended_session() {
    let mut history = vec![signed_up()];
    history.extend(
        (0..crate::user::MAX_SESSIONS as u128).map(|n| UserEvent::SessionStarted {
            session_id: SessionId::from_uuid(uuid::Uuid::from_u128(1_000 + n)),
            refresh_id: RefreshTokenId::from_uuid(uuid::Uuid::from_u128(2_000 + n)),
            expires_at: at(0) + SESSION_MAX_AGE,
            at: at(0),
        }),
    );
    let events = recorded(0, history, log_in(PASSWORD));
    assert!(matches!(events[1], UserEvent::SessionEnded { .. }));
    assert_eq!(
        decided_login(&events),
        LoginOutcome::LoggedIn(first_grant())
    );
}

#[test]
fn a_wrong_second_factor_code_is_refused_as_a_wrong_code() {
    let verify = |code: &str| {
        UserCommand::VerifyTfaCode(VerifyTfaCode {
            challenge_id: challenge(1),
            code: secret(code),
        })
    };
    let history = vec![
        signed_up(),
        code_generator_enabled(),
        second_factor_required(1),
    ];
    let wrong = recorded(0, history.clone(), verify("000000"));
    assert_eq!(
        decided_login(&wrong),
        LoginOutcome::Refused(Refusal::WrongCode)
    );
    let right_code = totp::code_at_step(&seed(), totp::step_at(at(0)));
    let right = recorded(0, history, verify(&right_code));
    assert_eq!(decided_login(&right), LoginOutcome::LoggedIn(first_grant()));
}

#[test]
fn a_wrong_backup_code_at_login_is_refused_as_a_wrong_backup_code() {
    let use_code = |code: &str| {
        UserCommand::UseBackupCode(UseBackupCode {
            challenge_id: challenge(1),
            code: secret(code),
        })
    };
    let history = vec![
        signed_up(),
        email_device_enabled(),
        second_factor_required(1),
    ];
    let wrong = recorded(
        0,
        history.clone(),
        use_code("ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ"),
    );
    assert_eq!(
        decided_login(&wrong),
        LoginOutcome::Refused(Refusal::WrongBackupCode)
    );
    let right = recorded(0, history, use_code(BACKUP_CODES[0]));
    assert_eq!(decided_login(&right), LoginOutcome::LoggedIn(first_grant()));
}

fn session_at_zero() -> UserEvent {
    UserEvent::SessionStarted {
        session_id: SessionId::from_uuid(nth_uuid(5)),
        refresh_id: RefreshTokenId::from_uuid(nth_uuid(6)),
        expires_at: at(0) + SESSION_MAX_AGE,
        at: at(0),
    }
}

fn refresh(token: u8) -> UserCommand {
    UserCommand::RefreshSession(RefreshSession {
        session_id: SessionId::from_uuid(nth_uuid(5)),
        refresh_id: RefreshTokenId::from_uuid(nth_uuid(token)),
        reuse_grace: Duration::seconds(10),
    })
}

#[test]
fn a_refresh_is_rotated_revoked_on_reuse_or_refused_once_expired() {
    let rotated = recorded(60, vec![signed_up(), session_at_zero()], refresh(6));
    assert_eq!(
        RefreshOutcome::read(user_id(), &rotated),
        Ok(RefreshOutcome::Refreshed(SessionGrant {
            user_id: user_id(),
            session_id: SessionId::from_uuid(nth_uuid(5)),
            refresh_id: RefreshTokenId::from_uuid(nth_uuid(0)),
        }))
    );
    let reused = recorded(60, vec![signed_up(), session_at_zero()], refresh(9));
    assert_eq!(
        RefreshOutcome::read(user_id(), &reused),
        Ok(RefreshOutcome::Refused(Refusal::RefreshTokenReused))
    );
    let too_old = SESSION_MAX_AGE.whole_seconds() + 1;
    let expired = recorded(too_old, vec![signed_up(), session_at_zero()], refresh(6));
    assert!(matches!(
        expired[0],
        UserEvent::SessionEnded {
            reason: SessionEndReason::Expired,
            ..
        }
    ));
    assert_eq!(
        RefreshOutcome::read(user_id(), &expired),
        Ok(RefreshOutcome::Refused(Refusal::SessionExpired))
    );
}

#[test]
fn a_repeated_refresh_within_the_grace_period_gets_the_successor_already_issued() {
    use cqrs_es::Aggregate;
    let rotated_at_sixty = UserEvent::SessionRefreshed {
        session_id: SessionId::from_uuid(nth_uuid(5)),
        refresh_id: RefreshTokenId::from_uuid(nth_uuid(9)),
        at: at(60),
    };
    let history = vec![signed_up(), session_at_zero(), rotated_at_sixty];
    let repeated = recorded(65, history.clone(), refresh(6));
    assert!(repeated.is_empty(), "nothing rotates: {repeated:?}");
    let mut user = User::default();
    for event in history {
        user.apply(event);
    }
    let session_id = SessionId::from_uuid(nth_uuid(5));

    assert_eq!(
        RefreshOutcome::decided(&user, user_id(), session_id, &repeated),
        Ok(RefreshOutcome::Refreshed(SessionGrant {
            user_id: user_id(),
            session_id,
            refresh_id: RefreshTokenId::from_uuid(nth_uuid(9)),
        }))
    );
    let unknown = SessionId::from_uuid(nth_uuid(4));
    assert_eq!(
        RefreshOutcome::decided(&user, user_id(), unknown, &repeated),
        Err(NoDecision)
    );
}

fn disable(password: &str, code: &str) -> UserCommand {
    UserCommand::DisableTfa(DisableTfa {
        password: secret(password),
        code: secret(code),
    })
}

#[test]
fn a_sensitive_change_tells_a_wrong_password_from_a_wrong_code() {
    let history = vec![signed_up(), code_generator_enabled()];
    let code = totp::code_at_step(&seed(), totp::step_at(at(0)));
    let wrong_password = recorded(0, history.clone(), disable("not the password", &code));
    assert_eq!(
        ChangeOutcome::read(&wrong_password),
        ChangeOutcome::Refused(Refusal::WrongPassword)
    );
    let wrong_code = recorded(0, history.clone(), disable(PASSWORD, "000000"));
    assert_eq!(
        ChangeOutcome::read(&wrong_code),
        ChangeOutcome::Refused(Refusal::WrongCode)
    );
    let changed = recorded(0, history, disable(PASSWORD, &code));
    assert_eq!(ChangeOutcome::read(&changed), ChangeOutcome::Changed);
}

#[test]
fn a_wrong_backup_code_in_a_sensitive_change_is_a_wrong_code() {
    let events = recorded(
        0,
        vec![signed_up(), email_device_enabled()],
        disable(PASSWORD, "ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ"),
    );
    assert_eq!(
        ChangeOutcome::read(&events),
        ChangeOutcome::Refused(Refusal::WrongCode)
    );
}

#[test]
fn events_without_a_decision_are_a_bug_not_a_refusal() {
    let unrelated = [UserEvent::AdminGranted { at: at(0) }];
    assert_eq!(LoginOutcome::read(user_id(), &unrelated), Err(NoDecision));
    assert_eq!(RefreshOutcome::read(user_id(), &unrelated), Err(NoDecision));
}
