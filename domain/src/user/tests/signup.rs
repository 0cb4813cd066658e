use super::passkeys::passkey_registered;
use super::sessions::{recent_sign_in, started};
use super::*;
use crate::user::{
    EnableTfa, NewDevice, Reauthentication, SignUp, TfaEnrolment, UserCommand, UserError,
};
use crate::values::NewPassword;

/// Enables `enrolment` from session 0.
pub(super) fn enable(enrolment: TfaEnrolment) -> UserCommand {
    UserCommand::EnableTfa(EnableTfa {
        enrolment,
        reauthentication: recent_sign_in(0),
    })
}

fn sign_up(tfa: Option<TfaEnrolment>) -> UserCommand {
    UserCommand::SignUp(SignUp {
        user_id: user_id(),
        email: Email::parse("ada@example.com").unwrap(),
        full_name: FullName::parse("Ada Lovelace").unwrap(),
        password: NewPassword::parse(secret(PASSWORD)).unwrap(),
        tfa,
    })
}

fn code_generator_enrolment() -> TfaEnrolment {
    TfaEnrolment {
        device: NewDevice::CodeGenerator { seed: seed() },
        backup_codes: BACKUP_CODES.iter().map(|code| secret(code)).collect(),
    }
}

#[test]
fn signing_up_records_the_account_with_only_a_hash_of_the_password() {
    test_at(0)
        .given_no_previous_events()
        .when(sign_up(None))
        .then_expect_events(vec![signed_up()]);
}

#[test]
fn signing_up_with_a_code_generator_seals_the_seed_and_digests_the_backup_codes() {
    test_at(0)
        .given_no_previous_events()
        .when(sign_up(Some(code_generator_enrolment())))
        .then_expect_events(vec![signed_up(), code_generator_enabled()]);
}

#[test]
fn signing_up_with_an_email_device_records_no_seed() {
    let enrolment = TfaEnrolment {
        device: NewDevice::Email,
        backup_codes: BACKUP_CODES.iter().map(|code| secret(code)).collect(),
    };
    test_at(0)
        .given_no_previous_events()
        .when(sign_up(Some(enrolment)))
        .then_expect_events(vec![signed_up(), email_device_enabled()]);
}

#[test]
fn signing_up_an_existing_user_again_is_refused() {
    test_at(0)
        .given(vec![signed_up()])
        .when(sign_up(None))
        .then_expect_error(UserError::AlreadyRegistered);
}

#[test]
fn a_saturated_hasher_refuses_the_signup_without_recording_anything() {
    let mut services = testing::services_at(at(0));
    services.hasher = std::sync::Arc::new(SaturatedHasher);
    UserTest::with(services)
        .given_no_previous_events()
        .when(sign_up(None))
        .then_expect_error(UserError::HasherSaturated);
}

#[test]
fn enabling_tfa_records_the_device_and_the_backup_code_digests() {
    test_at(0)
        .given(vec![signed_up()])
        .when(enable(code_generator_enrolment()))
        .then_expect_events(vec![code_generator_enabled()]);
}

fn code_generator_enabled_at(offset: i64) -> UserEvent {
    let UserEvent::TfaEnabled {
        device,
        backup_codes,
        ..
    } = code_generator_enabled()
    else {
        unreachable!("code_generator_enabled is a TfaEnabled");
    };
    UserEvent::TfaEnabled {
        device,
        backup_codes,
        at: at(offset),
    }
}

#[test]
fn a_user_with_a_passkey_enables_tfa_within_the_window_after_a_sign_in() {
    test_at(60)
        .given(vec![signed_up(), passkey_registered(0, 0), started(0)])
        .when(enable(code_generator_enrolment()))
        .then_expect_events(vec![code_generator_enabled_at(60)]);
}

#[test]
fn after_the_window_a_user_with_a_passkey_signs_in_with_it_before_enabling_tfa() {
    // An access token alone must not add an authenticator app beside the owner's passkey.
    test_at(301)
        .given(vec![signed_up(), passkey_registered(0, 0), started(0)])
        .when(enable(code_generator_enrolment()))
        .then_expect_error(UserError::PasskeySignInRequired);
}

#[test]
fn the_password_alone_does_not_let_a_user_with_a_passkey_enable_tfa() {
    test_at(60)
        .given(vec![signed_up(), passkey_registered(0, 0), started(0)])
        .when(UserCommand::EnableTfa(EnableTfa {
            enrolment: code_generator_enrolment(),
            reauthentication: Reauthentication::Proofs {
                password: secret(PASSWORD),
                code: None,
            },
        }))
        .then_expect_error(UserError::PasskeySignInRequired);
}

#[test]
fn enabling_tfa_when_it_is_already_on_is_refused() {
    test_at(0)
        .given(vec![signed_up(), email_device_enabled()])
        .when(enable(code_generator_enrolment()))
        .then_expect_error(UserError::TfaAlreadyEnabled);
}

#[test]
fn enabling_tfa_for_a_user_who_never_signed_up_is_refused() {
    test_at(0)
        .given_no_previous_events()
        .when(enable(code_generator_enrolment()))
        .then_expect_error(UserError::UnknownUser);
}

struct SaturatedHasher;

#[async_trait::async_trait]
impl crate::services::PasswordHasher for SaturatedHasher {
    async fn hash(
        &self,
        _password: &NewPassword,
    ) -> Result<PasswordHash, crate::services::HasherError> {
        Err(crate::services::HasherError::Saturated)
    }

    async fn verify(
        &self,
        _password: &SecretString,
        _hash: &PasswordHash,
    ) -> Result<bool, crate::services::HasherError> {
        Err(crate::services::HasherError::Saturated)
    }
}

mod sign_up_attempts {
    use super::super::*;
    use crate::user::{UserCommand, UserError, SIGN_UP_NOTICE_INTERVAL};

    #[test]
    fn an_attempt_with_a_taken_address_tells_the_owner() {
        test_at(5)
            .given(vec![signed_up()])
            .when(UserCommand::NoteSignUpAttempt)
            .then_expect_events(vec![UserEvent::SignUpAttempted { at: at(5) }]);
    }

    #[test]
    fn attempts_within_the_interval_of_a_notice_record_nothing() {
        let just_inside = SIGN_UP_NOTICE_INTERVAL.whole_seconds() - 1;
        test_at(just_inside)
            .given(vec![signed_up(), UserEvent::SignUpAttempted { at: at(0) }])
            .when(UserCommand::NoteSignUpAttempt)
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_attempt_after_the_interval_tells_the_owner_again() {
        let after = SIGN_UP_NOTICE_INTERVAL.whole_seconds();
        test_at(after)
            .given(vec![signed_up(), UserEvent::SignUpAttempted { at: at(0) }])
            .when(UserCommand::NoteSignUpAttempt)
            .then_expect_events(vec![UserEvent::SignUpAttempted { at: at(after) }]);
    }

    #[test]
    fn an_attempt_on_a_user_who_never_signed_up_is_refused() {
        test_at(5)
            .given_no_previous_events()
            .when(UserCommand::NoteSignUpAttempt)
            .then_expect_error(UserError::UnknownUser);
    }
}
