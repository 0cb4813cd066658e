use time::Duration;

use super::*;
use crate::user::{
    EndOtherSessions, EndSession, Reauthentication, RefreshSession, SessionEndReason, UserCommand,
    UserError, MAX_SESSIONS, SESSION_MAX_AGE,
};
use crate::values::{RefreshTokenId, SessionId};

/// Session n has id uuid(3 + n) (n < 3).
pub(super) fn session(n: u8) -> SessionId {
    SessionId::from_uuid(nth_uuid(3 + n))
}

/// The caller's session n, signed in within the default window of five minutes.
pub(super) fn recent_sign_in(n: u8) -> Reauthentication {
    Reauthentication::RecentSignIn {
        session: session(n),
        window: Duration::minutes(5),
    }
}

/// Refresh token t has id uuid(t): 0 is what a command draws, 6 + n is session n's first,
/// 9 and 10 are later rotations.
fn refresh_token(t: u8) -> RefreshTokenId {
    RefreshTokenId::from_uuid(nth_uuid(t))
}

/// Session n, started at T0 with its first refresh token.
pub(super) fn started(n: u8) -> UserEvent {
    UserEvent::SessionStarted {
        session_id: session(n),
        refresh_id: refresh_token(6 + n),
        expires_at: at(0) + SESSION_MAX_AGE,
        at: at(0),
    }
}

pub(super) fn refreshed(n: u8, token: u8, offset: i64) -> UserEvent {
    UserEvent::SessionRefreshed {
        session_id: session(n),
        refresh_id: refresh_token(token),
        at: at(offset),
    }
}

fn refresh(n: u8, token: u8) -> UserCommand {
    UserCommand::RefreshSession(RefreshSession {
        session_id: session(n),
        refresh_id: refresh_token(token),
        reuse_grace: Duration::seconds(10),
    })
}

pub(super) fn ended(n: u8, reason: SessionEndReason, offset: i64) -> UserEvent {
    UserEvent::SessionEnded {
        session_id: session(n),
        reason,
        at: at(offset),
    }
}

#[test]
fn the_current_refresh_token_is_rotated() {
    test_at(60)
        .given(vec![signed_up(), started(0)])
        .when(refresh(0, 6))
        .then_expect_events(vec![refreshed(0, 0, 60)]);
}

#[test]
fn a_repeated_refresh_of_the_previous_token_within_the_grace_period_rotates_nothing() {
    // The successor issued at 60 stays current: every client of the race ends holding it.
    test_at(65)
        .given(vec![signed_up(), started(0), refreshed(0, 9, 60)])
        .when(refresh(0, 6))
        .then_expect_events(vec![]);
}

#[test]
fn the_successor_of_a_repeated_refresh_can_itself_be_refreshed() {
    test_at(66)
        .given(vec![signed_up(), started(0), refreshed(0, 9, 60)])
        .when(refresh(0, 9))
        .then_expect_events(vec![refreshed(0, 0, 66)]);
}

#[test]
fn a_repeat_of_a_refresh_exactly_at_the_end_of_the_grace_period_still_gets_the_successor() {
    test_at(70)
        .given(vec![signed_up(), started(0), refreshed(0, 9, 60)])
        .when(refresh(0, 6))
        .then_expect_events(vec![]);
}

#[test]
fn a_rotated_token_presented_after_the_grace_period_revokes_the_session() {
    test_at(71)
        .given(vec![signed_up(), started(0), refreshed(0, 9, 60)])
        .when(refresh(0, 6))
        .then_expect_events(vec![ended(0, SessionEndReason::RefreshTokenReused, 71)]);
}

#[test]
fn a_token_two_rotations_old_revokes_the_session_at_once() {
    test_at(62)
        .given(vec![
            signed_up(),
            started(0),
            refreshed(0, 9, 60),
            refreshed(0, 10, 61),
        ])
        .when(refresh(0, 6))
        .then_expect_events(vec![ended(0, SessionEndReason::RefreshTokenReused, 62)]);
}

#[test]
fn a_revoked_session_cannot_be_refreshed_even_with_its_newest_token() {
    test_at(80)
        .given(vec![
            signed_up(),
            started(0),
            refreshed(0, 9, 60),
            ended(0, SessionEndReason::RefreshTokenReused, 71),
        ])
        .when(refresh(0, 9))
        .then_expect_error(UserError::SessionEnded);
}

#[test]
fn a_session_ends_at_its_absolute_age_however_often_it_was_refreshed() {
    let limit = SESSION_MAX_AGE.whole_seconds();
    test_at(limit)
        .given(vec![signed_up(), started(0), refreshed(0, 9, limit - 60)])
        .when(refresh(0, 9))
        .then_expect_events(vec![ended(0, SessionEndReason::Expired, limit)]);
}

#[test]
fn logging_out_ends_the_session_and_only_it() {
    test_at(5)
        .given(vec![signed_up(), started(0), started(1)])
        .when(UserCommand::EndSession(EndSession {
            session_id: session(0),
            reason: SessionEndReason::LoggedOut,
            reauthentication: None,
        }))
        .then_expect_events(vec![ended(0, SessionEndReason::LoggedOut, 5)]);
}

#[test]
fn ending_a_session_the_user_does_not_have_is_refused() {
    test_at(5)
        .given(vec![signed_up(), started(0)])
        .when(UserCommand::EndSession(EndSession {
            session_id: session(2),
            reason: SessionEndReason::EndedByUser,
            reauthentication: Some(recent_sign_in(0)),
        }))
        .then_expect_error(UserError::UnknownSession);
}

#[test]
fn ending_other_sessions_keeps_the_callers() {
    test_at(5)
        .given(vec![signed_up(), started(0), started(1), started(2)])
        .when(UserCommand::EndOtherSessions(EndOtherSessions {
            keep: session(1),
            reauthentication: recent_sign_in(1),
        }))
        .then_expect_events(vec![
            ended(0, SessionEndReason::EndedByUser, 5),
            ended(2, SessionEndReason::EndedByUser, 5),
        ]);
}

/// The i-th of many sessions, started in order one second apart.
fn many_started(count: u128) -> Vec<UserEvent> {
    (0..count)
        .map(|i| {
            let offset = i64::try_from(i).unwrap();
            UserEvent::SessionStarted {
                session_id: SessionId::from_uuid(Uuid::from_u128(0x5e55_0000 + i)),
                refresh_id: RefreshTokenId::from_uuid(Uuid::from_u128(0x7e75_0000 + i)),
                expires_at: at(offset) + SESSION_MAX_AGE,
                at: at(offset),
            }
        })
        .collect()
}

fn ended_by_limit(i: u128, offset: i64) -> UserEvent {
    UserEvent::SessionEnded {
        session_id: SessionId::from_uuid(Uuid::from_u128(0x5e55_0000 + i)),
        reason: SessionEndReason::SessionLimit,
        at: at(offset),
    }
}

fn log_in() -> UserCommand {
    UserCommand::LogIn(crate::user::LogIn {
        password: secret(PASSWORD),
        email_code: secret("123456"),
    })
}

#[test]
fn a_login_at_the_session_cap_ends_the_oldest_session_with_an_event() {
    let mut given = vec![signed_up()];
    given.extend(many_started(MAX_SESSIONS as u128));
    test_at(600)
        .given(given)
        .when(log_in())
        .then_expect_events(vec![
            UserEvent::LoggedIn { at: at(600) },
            ended_by_limit(0, 600),
            session_started(600),
        ]);
}

#[test]
fn a_login_below_the_session_cap_ends_no_session() {
    let mut given = vec![signed_up()];
    given.extend(many_started(MAX_SESSIONS as u128 - 1));
    test_at(600)
        .given(given)
        .when(log_in())
        .then_expect_events(vec![
            UserEvent::LoggedIn { at: at(600) },
            session_started(600),
        ]);
}

#[test]
fn sessions_over_the_cap_in_an_older_stream_are_all_ended_at_the_next_login() {
    let mut given = vec![signed_up()];
    given.extend(many_started(MAX_SESSIONS as u128 + 1));
    test_at(600)
        .given(given)
        .when(log_in())
        .then_expect_events(vec![
            UserEvent::LoggedIn { at: at(600) },
            ended_by_limit(0, 600),
            ended_by_limit(1, 600),
            session_started(600),
        ]);
}
