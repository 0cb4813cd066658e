//! One proof per factor: each rule holds the same way in every flow that checks the factor,
//! the second step of a login and the re-authentication of a sensitive change.

use super::*;
use crate::totp;
use crate::user::{
    Factor, NewDevice, RegenerateBackupCodes, SwitchTfaDevice, TfaEnrolment, UseBackupCode,
    UserCommand, UserError, VerifyTfaCode, EMAIL_CODE_TTL,
};

fn log_in_with(code: &str) -> UserCommand {
    UserCommand::VerifyTfaCode(VerifyTfaCode {
        challenge_id: challenge(1),
        code: secret(code),
    })
}

fn recover_with(code: &str) -> UserCommand {
    UserCommand::UseBackupCode(UseBackupCode {
        challenge_id: challenge(1),
        code: secret(code),
    })
}

fn regenerate_with(code: &str) -> UserCommand {
    UserCommand::RegenerateBackupCodes(RegenerateBackupCodes {
        code: secret(code),
        codes: vec![secret("ZZZZ-YYYY")],
    })
}

fn regenerated() -> UserEvent {
    UserEvent::BackupCodesRegenerated {
        backup_codes: vec![digest_of("ZZZZYYYY")],
        at: at(0),
    }
}

mod totp_proof {
    use super::*;

    fn step0() -> u64 {
        totp::step_at(at(0))
    }

    fn code_at(step: u64) -> String {
        totp::code_at_step(&seed(), step)
    }

    fn confirmed(step: u64) -> UserEvent {
        UserEvent::SecondFactorConfirmed {
            factor: Factor::Totp,
            totp_step: Some(step),
            backup_code_index: None,
            at: at(0),
        }
    }

    /// An authenticator app whose seed was sealed under a key no longer configured.
    fn unreadable_seed_enabled() -> UserEvent {
        UserEvent::TfaEnabled {
            device: Device {
                id: DeviceId::from_uuid(nth_uuid(0)),
                secret: DeviceSecret::CodeGenerator {
                    seed: SealedSecret {
                        key_id: "dropped".to_owned(),
                        ciphertext: hex(SEED),
                    },
                },
            },
            backup_codes: backup_digests(),
            at: at(0),
        }
    }

    #[test]
    fn whitespace_around_a_code_is_forgiven_at_login() {
        test_at(0)
            .given(vec![
                signed_up(),
                code_generator_enabled(),
                second_factor_required(1),
            ])
            .when(log_in_with(&format!(" {}\n", code_at(step0()))))
            .then_expect_events(vec![
                UserEvent::TfaVerified {
                    challenge_id: challenge(1),
                    factor: Factor::Totp,
                    totp_step: Some(step0()),
                    at: at(0),
                },
                session_started(0),
            ]);
    }

    #[test]
    fn whitespace_around_a_code_is_forgiven_when_confirming_a_change() {
        test_at(0)
            .given(vec![signed_up(), code_generator_enabled()])
            .when(regenerate_with(&format!(" {}\n", code_at(step0()))))
            .then_expect_events(vec![confirmed(step0()), regenerated()]);
    }

    #[test]
    fn a_step_spent_confirming_a_change_cannot_log_in() {
        test_at(0)
            .given(vec![
                signed_up(),
                code_generator_enabled(),
                confirmed(step0()),
                second_factor_required(1),
            ])
            .when(log_in_with(&code_at(step0())))
            .then_expect_error(UserError::TfaCodeReplayed);
    }

    #[test]
    fn a_step_spent_logging_in_cannot_confirm_a_change() {
        test_at(0)
            .given(vec![
                signed_up(),
                code_generator_enabled(),
                second_factor_required(1),
                UserEvent::TfaVerified {
                    challenge_id: challenge(1),
                    factor: Factor::Totp,
                    totp_step: Some(step0()),
                    at: at(0),
                },
            ])
            .when(regenerate_with(&code_at(step0())))
            .then_expect_error(UserError::TfaCodeReplayed);
    }

    #[test]
    fn a_seed_that_does_not_open_refuses_a_login_without_counting_a_failure() {
        test_at(0)
            .given(vec![
                signed_up(),
                unreadable_seed_enabled(),
                second_factor_required(1),
            ])
            .when(log_in_with(&code_at(step0())))
            .then_expect_error(UserError::SecretUnreadable);
    }

    #[test]
    fn a_seed_that_does_not_open_refuses_a_change_without_counting_a_failure() {
        test_at(0)
            .given(vec![signed_up(), unreadable_seed_enabled()])
            .when(regenerate_with(&code_at(step0())))
            .then_expect_error(UserError::SecretUnreadable);
    }
}

mod email_code_proof {
    use super::*;

    fn email_code_issued() -> UserEvent {
        UserEvent::EmailCodeIssued {
            challenge_id: challenge(1),
            digest: digest_of("123456"),
            expires_at: at(0) + EMAIL_CODE_TTL,
        }
    }

    #[test]
    fn whitespace_around_an_emailed_code_is_forgiven() {
        test_at(60)
            .given(vec![
                signed_up(),
                email_device_enabled(),
                second_factor_required(1),
                email_code_issued(),
            ])
            .when(log_in_with("\t123456 "))
            .then_expect_events(vec![
                UserEvent::TfaVerified {
                    challenge_id: challenge(1),
                    factor: Factor::EmailCode,
                    totp_step: None,
                    at: at(60),
                },
                session_started(60),
            ]);
    }

    #[test]
    fn a_challenge_with_no_emailed_code_takes_none() {
        test_at(60)
            .given(vec![
                signed_up(),
                email_device_enabled(),
                second_factor_required(1),
            ])
            .when(log_in_with("123456"))
            .then_expect_error(UserError::ChallengeClosed);
    }
}

mod backup_code_proof {
    use super::*;

    /// The second code, typed in lower case, without separators, amid spaces.
    const TYPED_LOOSELY: &str = "  gggghhhh jjjjkkkk mmmmnnnn\n";

    fn consumed_at_login() -> UserEvent {
        UserEvent::BackupCodeConsumed {
            challenge_id: challenge(1),
            index: 1,
            remaining: 1,
            at: at(0),
        }
    }

    fn confirmed() -> UserEvent {
        UserEvent::SecondFactorConfirmed {
            factor: Factor::BackupCode,
            totp_step: None,
            backup_code_index: Some(1),
            at: at(0),
        }
    }

    #[test]
    fn a_loosely_typed_code_is_found_at_login() {
        test_at(0)
            .given(vec![
                signed_up(),
                email_device_enabled(),
                second_factor_required(1),
            ])
            .when(recover_with(TYPED_LOOSELY))
            .then_expect_events(vec![consumed_at_login(), session_started(0)]);
    }

    #[test]
    fn a_loosely_typed_code_is_found_when_confirming_a_change() {
        test_at(0)
            .given(vec![signed_up(), email_device_enabled()])
            .when(regenerate_with(TYPED_LOOSELY))
            .then_expect_events(vec![confirmed(), regenerated()]);
    }

    #[test]
    fn a_code_spent_confirming_a_change_cannot_log_in() {
        test_at(0)
            .given(vec![
                signed_up(),
                email_device_enabled(),
                confirmed(),
                second_factor_required(1),
            ])
            .when(recover_with(BACKUP_CODES[1]))
            .then_expect_events(vec![UserEvent::LoginFailed {
                factor: Factor::BackupCode,
                challenge_id: Some(challenge(1)),
                at: at(0),
            }]);
    }

    #[test]
    fn a_code_spent_logging_in_cannot_confirm_a_change() {
        test_at(0)
            .given(vec![
                signed_up(),
                email_device_enabled(),
                second_factor_required(1),
                consumed_at_login(),
            ])
            .when(regenerate_with(BACKUP_CODES[1]))
            .then_expect_events(vec![UserEvent::LoginFailed {
                factor: Factor::BackupCode,
                challenge_id: None,
                at: at(0),
            }]);
    }
}

mod backup_code_digests {
    use super::*;

    /// Codes as a caller might hand them over: any case, separators or not, stray spaces.
    fn issued_loosely() -> Vec<SecretString> {
        vec![
            secret(" aaaa-bbbb-cccc-dddd-eeee-ffff"),
            secret("GGGGHHHHJJJJKKKKMMMMNNNN "),
        ]
    }

    fn email_enrolment() -> TfaEnrolment {
        TfaEnrolment {
            device: NewDevice::Email,
            backup_codes: issued_loosely(),
        }
    }

    #[test]
    fn enabling_stores_each_code_as_the_digest_of_its_canonical_form() {
        test_at(0)
            .given(vec![signed_up()])
            .when(super::signup::enable(email_enrolment()))
            .then_expect_events(vec![email_device_enabled()]);
    }

    #[test]
    fn switching_device_stores_the_new_codes_the_same_way() {
        test_at(0)
            .given(vec![signed_up(), email_device_enabled()])
            .when(UserCommand::SwitchTfaDevice(SwitchTfaDevice {
                password: secret(PASSWORD),
                code: secret(BACKUP_CODES[0]),
                enrolment: email_enrolment(),
            }))
            .then_expect_events(vec![
                UserEvent::SecondFactorConfirmed {
                    factor: Factor::BackupCode,
                    totp_step: None,
                    backup_code_index: Some(0),
                    at: at(0),
                },
                UserEvent::TfaDeviceChanged {
                    device: Device {
                        id: DeviceId::from_uuid(nth_uuid(0)),
                        secret: DeviceSecret::Email,
                    },
                    backup_codes: backup_digests(),
                    at: at(0),
                },
            ]);
    }

    #[test]
    fn regenerating_stores_the_new_codes_the_same_way() {
        test_at(0)
            .given(vec![signed_up(), email_device_enabled()])
            .when(UserCommand::RegenerateBackupCodes(RegenerateBackupCodes {
                code: secret(BACKUP_CODES[0]),
                codes: issued_loosely(),
            }))
            .then_expect_events(vec![
                UserEvent::SecondFactorConfirmed {
                    factor: Factor::BackupCode,
                    totp_step: None,
                    backup_code_index: Some(0),
                    at: at(0),
                },
                UserEvent::BackupCodesRegenerated {
                    backup_codes: backup_digests(),
                    at: at(0),
                },
            ]);
    }
}
