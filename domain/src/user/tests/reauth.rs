use super::sessions::{ended, recent_sign_in, refreshed, session, started};
use super::*;
use crate::totp;
use crate::user::{
    DisableTfa, EndOtherSessions, EndSession, Factor, Reauthentication, RegenerateBackupCodes,
    RequestConfirmationCode, SessionEndReason, UserCommand, UserError, VerifyTfaCode,
    CONFIRMATION_CODE_TTL,
};

const CONFIRMATION_CODE: &str = "424242";

fn proofs(password: &str, code: Option<&str>) -> Reauthentication {
    Reauthentication::Proofs {
        password: secret(password),
        code: code.map(secret),
    }
}

fn end_others(reauthentication: Reauthentication) -> UserCommand {
    UserCommand::EndOtherSessions(EndOtherSessions {
        keep: session(1),
        reauthentication,
    })
}

fn disable(code: &str) -> UserCommand {
    UserCommand::DisableTfa(DisableTfa {
        password: secret(PASSWORD),
        code: secret(code),
    })
}

fn request_code(code: &str) -> UserCommand {
    UserCommand::RequestConfirmationCode(RequestConfirmationCode { code: secret(code) })
}

fn code_issued(offset: i64) -> UserEvent {
    UserEvent::ConfirmationCodeIssued {
        digest: digest_of(CONFIRMATION_CODE),
        expires_at: at(offset) + CONFIRMATION_CODE_TTL,
        at: at(offset),
    }
}

fn confirmed(factor: Factor, backup_code_index: Option<usize>, offset: i64) -> UserEvent {
    UserEvent::SecondFactorConfirmed {
        factor,
        totp_step: None,
        backup_code_index,
        at: at(offset),
    }
}

/// An email-device user who has spent both backup codes.
fn email_user_without_backup_codes() -> Vec<UserEvent> {
    vec![
        signed_up(),
        email_device_enabled(),
        confirmed(Factor::BackupCode, Some(0), 0),
        confirmed(Factor::BackupCode, Some(1), 0),
    ]
}

fn failed(factor: Factor, challenge_id: Option<ChallengeId>, offset: i64) -> UserEvent {
    UserEvent::LoginFailed {
        factor,
        challenge_id,
        at: at(offset),
    }
}

#[test]
fn other_sessions_end_without_proofs_within_the_window_after_the_sign_in() {
    test_at(300)
        .given(vec![signed_up(), started(0), started(1)])
        .when(end_others(recent_sign_in(1)))
        .then_expect_events(vec![ended(0, SessionEndReason::EndedByUser, 300)]);
}

#[test]
fn after_the_window_ending_other_sessions_needs_a_re_authentication() {
    test_at(301)
        .given(vec![signed_up(), started(0), started(1)])
        .when(end_others(recent_sign_in(1)))
        .then_expect_error(UserError::ReauthenticationRequired);
}

#[test]
fn a_refresh_keeps_the_sessions_sign_in_instant() {
    test_at(301)
        .given(vec![
            signed_up(),
            started(0),
            started(1),
            refreshed(1, 9, 300),
        ])
        .when(end_others(recent_sign_in(1)))
        .then_expect_error(UserError::ReauthenticationRequired);
}

#[test]
fn after_the_window_ending_another_session_needs_a_re_authentication() {
    test_at(301)
        .given(vec![signed_up(), started(0), started(1)])
        .when(UserCommand::EndSession(EndSession {
            session_id: session(0),
            reason: SessionEndReason::EndedByUser,
            reauthentication: Some(recent_sign_in(1)),
        }))
        .then_expect_error(UserError::ReauthenticationRequired);
}

#[test]
fn the_password_ends_other_sessions_at_any_time_for_a_user_without_tfa() {
    test_at(86_400)
        .given(vec![signed_up(), started(0), started(1)])
        .when(end_others(proofs(PASSWORD, None)))
        .then_expect_events(vec![ended(0, SessionEndReason::EndedByUser, 86_400)]);
}

#[test]
fn a_wrong_password_ends_no_session_and_counts_as_a_failure() {
    test_at(86_400)
        .given(vec![signed_up(), started(0), started(1)])
        .when(end_others(proofs("not the password", None)))
        .then_expect_events(vec![failed(Factor::Password, None, 86_400)]);
}

#[test]
fn with_tfa_on_the_password_alone_does_not_re_authenticate() {
    test_at(86_400)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            started(0),
            started(1),
        ])
        .when(end_others(proofs(PASSWORD, None)))
        .then_expect_error(UserError::SecondFactorRequired);
}

#[test]
fn the_password_and_a_totp_code_re_authenticate_and_spend_the_code() {
    let step = totp::step_at(at(0));
    test_at(0)
        .given(vec![signed_up(), code_generator_enabled(), started(0)])
        .when(UserCommand::Reauthenticate(proofs(
            PASSWORD,
            Some(&totp::code_at_step(&seed(), step)),
        )))
        .then_expect_events(vec![UserEvent::SecondFactorConfirmed {
            factor: Factor::Totp,
            totp_step: Some(step),
            backup_code_index: None,
            at: at(0),
        }]);
}

#[test]
fn a_wrong_second_factor_does_not_re_authenticate_and_counts_as_a_failure() {
    test_at(0)
        .given(vec![signed_up(), code_generator_enabled(), started(0)])
        .when(UserCommand::Reauthenticate(proofs(
            PASSWORD,
            Some("000000"),
        )))
        .then_expect_events(vec![failed(Factor::Totp, None, 0)]);
}

#[test]
fn a_recent_sign_in_re_authenticates_and_records_nothing() {
    test_at(60)
        .given(vec![signed_up(), code_generator_enabled(), started(0)])
        .when(UserCommand::Reauthenticate(recent_sign_in(0)))
        .then_expect_events(vec![]);
}

#[test]
fn an_email_device_user_is_issued_a_confirmation_code() {
    test_at(0)
        .given(vec![signed_up(), email_device_enabled()])
        .when(request_code(CONFIRMATION_CODE))
        .then_expect_events(vec![code_issued(0)]);
}

#[test]
fn a_second_confirmation_code_within_a_minute_is_refused() {
    test_at(45)
        .given(vec![signed_up(), email_device_enabled(), code_issued(0)])
        .when(request_code(CONFIRMATION_CODE))
        .then_expect_error(UserError::ConfirmationCodeTooSoon {
            retry_after_secs: 15,
        });
}

#[test]
fn a_confirmation_code_is_issued_again_after_a_minute() {
    test_at(60)
        .given(vec![signed_up(), email_device_enabled(), code_issued(0)])
        .when(request_code(CONFIRMATION_CODE))
        .then_expect_events(vec![code_issued(60)]);
}

#[test]
fn a_user_with_an_authenticator_app_gets_no_confirmation_code() {
    test_at(0)
        .given(vec![signed_up(), code_generator_enabled()])
        .when(request_code(CONFIRMATION_CODE))
        .then_expect_error(UserError::NoEmailDevice);
}

#[test]
fn a_user_without_tfa_gets_no_confirmation_code() {
    test_at(0)
        .given(vec![signed_up()])
        .when(request_code(CONFIRMATION_CODE))
        .then_expect_error(UserError::TfaNotEnabled);
}

#[test]
fn a_confirmation_code_turns_tfa_off_when_every_backup_code_is_spent() {
    let mut given = email_user_without_backup_codes();
    given.push(code_issued(0));
    test_at(30)
        .given(given)
        .when(disable(CONFIRMATION_CODE))
        .then_expect_events(vec![
            confirmed(Factor::EmailCode, None, 30),
            UserEvent::TfaDisabled { at: at(30) },
        ]);
}

#[test]
fn a_confirmation_code_proves_the_factor_for_new_backup_codes() {
    let mut given = email_user_without_backup_codes();
    given.push(code_issued(0));
    test_at(30)
        .given(given)
        .when(UserCommand::RegenerateBackupCodes(RegenerateBackupCodes {
            code: secret(CONFIRMATION_CODE),
            codes: vec![secret("NEW1")],
        }))
        .then_expect_events(vec![
            confirmed(Factor::EmailCode, None, 30),
            UserEvent::BackupCodesRegenerated {
                backup_codes: vec![digest_of("NEW1")],
                at: at(30),
            },
        ]);
}

#[test]
fn a_confirmation_code_is_accepted_only_once() {
    let mut given = email_user_without_backup_codes();
    given.extend([code_issued(0), confirmed(Factor::EmailCode, None, 10)]);
    test_at(30)
        .given(given)
        .when(disable(CONFIRMATION_CODE))
        .then_expect_events(vec![failed(Factor::BackupCode, None, 30)]);
}

#[test]
fn an_expired_confirmation_code_is_refused() {
    let mut given = email_user_without_backup_codes();
    given.push(code_issued(0));
    test_at(CONFIRMATION_CODE_TTL.whole_seconds())
        .given(given)
        .when(disable(CONFIRMATION_CODE))
        .then_expect_error(UserError::EmailCodeExpired);
}

#[test]
fn a_wrong_confirmation_code_is_refused_and_counted_against_the_second_factor() {
    let mut given = email_user_without_backup_codes();
    given.push(code_issued(0));
    test_at(30)
        .given(given)
        .when(disable("000000"))
        .then_expect_events(vec![failed(Factor::EmailCode, None, 30)]);
}

#[test]
fn a_login_code_is_not_a_confirmation_code() {
    let mut given = email_user_without_backup_codes();
    given.extend([
        second_factor_required(0),
        UserEvent::EmailCodeIssued {
            challenge_id: challenge(0),
            digest: digest_of("135790"),
            expires_at: at(600),
        },
    ]);
    test_at(30)
        .given(given)
        .when(disable("135790"))
        .then_expect_events(vec![failed(Factor::BackupCode, None, 30)]);
}

#[test]
fn a_confirmation_code_does_not_complete_a_login() {
    let mut given = email_user_without_backup_codes();
    given.extend([
        second_factor_required(0),
        UserEvent::EmailCodeIssued {
            challenge_id: challenge(0),
            digest: digest_of("135790"),
            expires_at: at(600),
        },
        code_issued(0),
    ]);
    test_at(30)
        .given(given)
        .when(UserCommand::VerifyTfaCode(VerifyTfaCode {
            challenge_id: challenge(0),
            code: secret(CONFIRMATION_CODE),
        }))
        .then_expect_events(vec![failed(Factor::EmailCode, Some(challenge(0)), 30)]);
}

#[test]
fn a_new_password_voids_the_pending_confirmation_code() {
    let mut given = email_user_without_backup_codes();
    given.extend([
        code_issued(0),
        UserEvent::PasswordChanged {
            password_hash: PasswordHash::from_phc(format!("plain${PASSWORD}")),
            at: at(10),
        },
    ]);
    test_at(30)
        .given(given)
        .when(disable(CONFIRMATION_CODE))
        .then_expect_events(vec![failed(Factor::BackupCode, None, 30)]);
}
