use super::*;
use crate::totp;
use crate::user::{
    DisableTfa, Factor, NewDevice, RegenerateBackupCodes, SwitchTfaDevice, TfaEnrolment,
    UserCommand, UserError,
};

fn current_code() -> String {
    totp::code_at_step(&seed(), totp::step_at(at(0)))
}

fn disable(password: &str, code: &str) -> UserCommand {
    UserCommand::DisableTfa(DisableTfa {
        password: secret(password),
        code: secret(code),
    })
}

fn confirmed_totp() -> UserEvent {
    UserEvent::SecondFactorConfirmed {
        factor: Factor::Totp,
        totp_step: Some(totp::step_at(at(0))),
        backup_code_index: None,
        at: at(0),
    }
}

#[test]
fn turning_tfa_off_needs_the_password_and_a_current_code() {
    test_at(0)
        .given(vec![signed_up(), code_generator_enabled()])
        .when(disable(PASSWORD, &current_code()))
        .then_expect_events(vec![confirmed_totp(), UserEvent::TfaDisabled { at: at(0) }]);
}

#[test]
fn a_wrong_password_changes_nothing_and_counts_as_a_failure() {
    test_at(0)
        .given(vec![signed_up(), code_generator_enabled()])
        .when(disable("not the password", &current_code()))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::Password,
            challenge_id: None,
            at: at(0),
        }]);
}

#[test]
fn a_wrong_code_changes_nothing_and_counts_as_a_failure() {
    test_at(0)
        .given(vec![signed_up(), code_generator_enabled()])
        .when(disable(PASSWORD, "000000"))
        .then_expect_events(vec![UserEvent::LoginFailed {
            factor: Factor::Totp,
            challenge_id: None,
            at: at(0),
        }]);
}

#[test]
fn a_code_already_used_to_log_in_cannot_be_used_again_here() {
    test_at(0)
        .given(vec![
            signed_up(),
            code_generator_enabled(),
            confirmed_totp(),
        ])
        .when(disable(PASSWORD, &current_code()))
        .then_expect_error(UserError::TfaCodeReplayed);
}

#[test]
fn turning_tfa_off_when_it_is_off_is_refused() {
    test_at(0)
        .given(vec![signed_up()])
        .when(disable(PASSWORD, "123456"))
        .then_expect_error(UserError::TfaNotEnabled);
}

#[test]
fn a_backup_code_proves_the_second_factor_for_new_codes_and_is_consumed() {
    test_at(0)
        .given(vec![signed_up(), email_device_enabled()])
        .when(UserCommand::RegenerateBackupCodes(RegenerateBackupCodes {
            code: secret(BACKUP_CODES[1]),
            codes: vec![secret("ZZZZ-YYYY")],
        }))
        .then_expect_events(vec![
            UserEvent::SecondFactorConfirmed {
                factor: Factor::BackupCode,
                totp_step: None,
                backup_code_index: Some(1),
                at: at(0),
            },
            UserEvent::BackupCodesRegenerated {
                backup_codes: vec![digest_of("ZZZZYYYY")],
                at: at(0),
            },
        ]);
}

#[test]
fn regenerating_backup_codes_is_refused_for_an_account_an_admin_locked() {
    test_at(0)
        .given(vec![
            signed_up(),
            email_device_enabled(),
            UserEvent::AccountLocked { at: at(0) },
        ])
        .when(UserCommand::RegenerateBackupCodes(RegenerateBackupCodes {
            code: secret(BACKUP_CODES[1]),
            codes: vec![secret("ZZZZ-YYYY")],
        }))
        .then_expect_error(UserError::AccountLocked);
}

#[test]
fn switching_device_replaces_it_and_the_backup_codes() {
    test_at(0)
        .given(vec![signed_up(), code_generator_enabled()])
        .when(UserCommand::SwitchTfaDevice(SwitchTfaDevice {
            password: secret(PASSWORD),
            code: secret(&current_code()),
            enrolment: TfaEnrolment {
                device: NewDevice::Email,
                backup_codes: vec![secret("ZZZZ-YYYY")],
            },
        }))
        .then_expect_events(vec![
            confirmed_totp(),
            UserEvent::TfaDeviceChanged {
                device: crate::user::Device {
                    id: crate::values::DeviceId::from_uuid(nth_uuid(0)),
                    secret: crate::user::DeviceSecret::Email,
                },
                backup_codes: vec![digest_of("ZZZZYYYY")],
                at: at(0),
            },
        ]);
}
