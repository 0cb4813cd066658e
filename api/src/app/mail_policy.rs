//! Which committed fact sends which email: the one place that decides.
//!
//! The gateway asks this policy for a command's mail jobs after the command decided and before
//! its events are committed, so that the jobs are stored in the same transaction as the facts
//! that cause them. Secrets an email carries (backup codes, a login code, a reset token) exist
//! in clear only for the request that generated them; they arrive here as [`MailSecrets`] and
//! leave sealed for the mailer. Adding a notice is one arm of [`MailPolicy::jobs`]: the match
//! names every event, so a new event cannot be forgotten.
//!
//! | event | email | recipient | secret |
//! |---|---|---|---|
//! | `TfaEnabled` at sign-up | backup codes | the user | backup codes |
//! | `TfaEnabled` later | backup codes, "2FA turned on" notice | the user | backup codes |
//! | `TfaDeviceChanged` | backup codes, "2FA turned on" notice | the user | backup codes |
//! | `BackupCodesRegenerated` | backup codes | the user | backup codes |
//! | `EmailCodeIssued` | login code | the user | email code |
//! | `ConfirmationCodeIssued` | confirmation code | the user | email code |
//! | `BackupCodeConsumed` | "backup code used" notice | the user | — |
//! | `TfaDisabled` | "2FA turned off" notice | the user | — |
//! | `PasswordChanged` | "password changed" notice | the user | — |
//! | `PasswordReset` | "password reset" notice | the user | — |
//! | `PasswordResetRequested` | reset token | the user | reset token |
//! | `SignUpAttempted` | "someone tried to sign up" notice | the user | — |
//! | `PasskeyRegistered` | "passkey added" notice | the user | — |
//! | `PasskeyRemoved` | "passkey removed" notice | the user | — |
//! | `PasskeyCounterRegressed` | "passkey may be copied" notice | the user | — |

use secrecy::SecretString;
use twofold_domain::{User, UserEvent};
use twofold_nats::MailJob;

use crate::app::mail::MailFactory;

/// The secrets generated for one request that its emails carry.
#[derive(Default)]
pub struct MailSecrets {
    /// Fresh backup codes (an enrolment, a device switch, a regeneration).
    pub backup_codes: Vec<SecretString>,
    /// The code for an email second factor.
    pub email_code: Option<SecretString>,
    /// A password reset token.
    pub reset_token: Option<SecretString>,
}

impl MailSecrets {
    /// No secrets: for commands whose emails carry none.
    pub fn none() -> Self {
        Self::default()
    }
}

/// An event needs a secret the request did not generate: the caller's bug.
#[derive(Debug, thiserror::Error)]
#[error("`{event}` sends an email that needs {secret}, which the request did not provide")]
pub struct MissingSecret {
    event: &'static str,
    secret: &'static str,
}

/// Decides the emails of committed facts, and builds them with their secrets sealed.
pub struct MailPolicy {
    factory: MailFactory,
}

impl MailPolicy {
    /// A policy building jobs with `factory`.
    pub fn new(factory: MailFactory) -> Self {
        Self { factory }
    }

    /// The builder of mail jobs, for the emails no command causes (the test email).
    pub fn factory(&self) -> &MailFactory {
        &self.factory
    }

    /// The mail jobs of `events`, just recorded for `user` (their state after them).
    pub fn jobs(
        &self,
        user: &User,
        events: &[UserEvent],
        secrets: &MailSecrets,
        request_id: Option<&str>,
    ) -> Result<Vec<MailJob>, MissingSecret> {
        let (Some(owner), Some(to)) = (user.id(), user.email()) else {
            return Ok(Vec::new());
        };
        let mail = self.factory.to(owner, to, request_id);
        let signing_up = events
            .iter()
            .any(|event| matches!(event, UserEvent::SignedUp { .. }));
        let backup_codes = |event| {
            if secrets.backup_codes.is_empty() {
                Err(MissingSecret {
                    event,
                    secret: "backup codes",
                })
            } else {
                Ok(mail.backup_codes(&secrets.backup_codes))
            }
        };
        let mut jobs = Vec::new();
        for event in events {
            match event {
                UserEvent::TfaEnabled { device, .. } => {
                    jobs.push(backup_codes("TfaEnabled")?);
                    // A sign-up with 2FA is not news to its owner: only the codes go out.
                    if !signing_up {
                        jobs.push(mail.tfa_enabled(device.device_type()));
                    }
                }
                UserEvent::TfaDeviceChanged { device, .. } => {
                    jobs.push(backup_codes("TfaDeviceChanged")?);
                    jobs.push(mail.tfa_enabled(device.device_type()));
                }
                UserEvent::BackupCodesRegenerated { .. } => {
                    jobs.push(backup_codes("BackupCodesRegenerated")?);
                }
                UserEvent::EmailCodeIssued { .. } => {
                    let code = secrets.email_code.as_ref().ok_or(MissingSecret {
                        event: "EmailCodeIssued",
                        secret: "an email code",
                    })?;
                    jobs.push(mail.login_code(code));
                }
                UserEvent::ConfirmationCodeIssued { .. } => {
                    let code = secrets.email_code.as_ref().ok_or(MissingSecret {
                        event: "ConfirmationCodeIssued",
                        secret: "an email code",
                    })?;
                    jobs.push(mail.confirmation_code(code));
                }
                UserEvent::BackupCodeConsumed { remaining, .. } => {
                    jobs.push(mail.backup_code_used(*remaining));
                }
                UserEvent::TfaDisabled { .. } => jobs.push(mail.tfa_disabled()),
                UserEvent::PasswordChanged { .. } => jobs.push(mail.password_changed(false)),
                UserEvent::PasswordReset { .. } => jobs.push(mail.password_changed(true)),
                UserEvent::PasswordResetRequested { .. } => {
                    let token = secrets.reset_token.as_ref().ok_or(MissingSecret {
                        event: "PasswordResetRequested",
                        secret: "a reset token",
                    })?;
                    jobs.push(mail.password_reset(token));
                }
                UserEvent::SignUpAttempted { .. } => jobs.push(mail.sign_up_attempted()),
                UserEvent::PasskeyRegistered { .. } => jobs.push(mail.passkey_added()),
                UserEvent::PasskeyRemoved { .. } => jobs.push(mail.passkey_removed()),
                UserEvent::PasskeyCounterRegressed { .. } => {
                    jobs.push(mail.passkey_counter_regressed());
                }
                UserEvent::SignedUp { .. }
                | UserEvent::LoggedIn { .. }
                | UserEvent::SecondFactorRequired { .. }
                | UserEvent::LoginFailed { .. }
                | UserEvent::TfaVerified { .. }
                | UserEvent::FactorLocked { .. }
                | UserEvent::SessionStarted { .. }
                | UserEvent::SessionRefreshed { .. }
                | UserEvent::SessionEnded { .. }
                | UserEvent::SecondFactorConfirmed { .. }
                | UserEvent::AccountLocked { .. }
                | UserEvent::AccountUnlocked { .. }
                | UserEvent::AdminGranted { .. }
                | UserEvent::SeedResealed { .. }
                | UserEvent::AuditTrailRead { .. }
                | UserEvent::PasskeyRenamed { .. }
                | UserEvent::PasskeyUsed { .. }
                // The address is being forgotten: nothing is sent to it any more.
                | UserEvent::UserErased { .. } => {}
            }
        }
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::Aggregate;
    use time::OffsetDateTime;
    use twofold_domain::user::{Device, DeviceSecret, Factor, SessionEndReason, ThrottledFactor};
    use twofold_domain::values::{
        ChallengeId, DeviceId, DeviceType, Email, FullName, KeyedDigest, PasswordHash,
        RefreshTokenId, SealedSecret, SessionId, UserId,
    };
    use twofold_nats::{Mail, MailKey, MailSealer};

    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const ADDRESS: &str = "ada@example.com";

    fn at() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH
    }

    fn user_id() -> UserId {
        UserId::from_uuid(uuid::Uuid::from_u128(0xada))
    }

    fn digest() -> KeyedDigest {
        KeyedDigest {
            key_id: "k".to_owned(),
            digest: "d".to_owned(),
        }
    }

    fn signed_up() -> UserEvent {
        UserEvent::SignedUp {
            user_id: user_id(),
            email: Email::parse(ADDRESS).unwrap(),
            full_name: FullName::parse("Ada Lovelace").unwrap(),
            password_hash: PasswordHash::from_phc("$argon2id$…".to_owned()),
            at: at(),
        }
    }

    fn device(secret: DeviceSecret) -> Device {
        Device {
            id: DeviceId::from_uuid(uuid::Uuid::from_u128(1)),
            secret,
        }
    }

    fn app_device() -> Device {
        device(DeviceSecret::CodeGenerator {
            seed: SealedSecret {
                key_id: "k".to_owned(),
                ciphertext: "c".to_owned(),
            },
        })
    }

    fn tfa_enabled(device: Device) -> UserEvent {
        UserEvent::TfaEnabled {
            device,
            backup_codes: vec![digest()],
            at: at(),
        }
    }

    fn codes() -> Vec<SecretString> {
        vec![
            SecretString::from("AAAA-BBBB"),
            SecretString::from("CCCC-DDDD"),
        ]
    }

    fn secrets_with_codes() -> MailSecrets {
        MailSecrets {
            backup_codes: codes(),
            ..MailSecrets::none()
        }
    }

    /// The jobs of `new` recorded after `history` (both applied, as the gateway has them).
    fn jobs(
        history: Vec<UserEvent>,
        new: Vec<UserEvent>,
        secrets: &MailSecrets,
    ) -> Result<Vec<MailJob>, MissingSecret> {
        let mut user = User::default();
        for event in history.iter().chain(&new).cloned() {
            user.apply(event);
        }
        MailPolicy::new(MailFactory::new(MailSealer::new(MailKey::derive(&KEY)))).jobs(
            &user,
            &new,
            secrets,
            Some("req-1"),
        )
    }

    /// The templates of `jobs`, each checked to go to the user with the request id.
    fn templates(jobs: &[MailJob]) -> Vec<&'static str> {
        for job in jobs {
            assert_eq!(job.to.as_str(), ADDRESS);
            assert_eq!(job.owner, user_id());
            assert_eq!(job.request_id.as_deref(), Some("req-1"));
        }
        jobs.iter().map(|job| job.mail.template()).collect()
    }

    fn opened_codes(job: &MailJob) -> Vec<String> {
        let codes = match &job.mail {
            Mail::BackupCodes { codes } => Some(codes),
            _ => None,
        }
        .expect("a backup-codes email");
        MailSealer::new(MailKey::derive(&KEY))
            .open_codes(codes, ADDRESS, job.id)
            .unwrap()
            .iter()
            .map(|code| code.as_str().to_owned())
            .collect()
    }

    #[test]
    fn a_sign_up_with_tfa_mails_only_the_backup_codes() {
        let sent = jobs(
            vec![],
            vec![signed_up(), tfa_enabled(app_device())],
            &secrets_with_codes(),
        )
        .unwrap();
        assert_eq!(templates(&sent), ["backup_codes"]);
        assert_eq!(opened_codes(&sent[0]), ["AAAA-BBBB", "CCCC-DDDD"]);
    }

    #[test]
    fn turning_tfa_on_later_mails_the_codes_and_a_notice_naming_the_device() {
        let sent = jobs(
            vec![signed_up()],
            vec![tfa_enabled(device(DeviceSecret::Email))],
            &secrets_with_codes(),
        )
        .unwrap();
        assert_eq!(templates(&sent), ["backup_codes", "tfa_enabled"]);
        assert!(matches!(
            &sent[1].mail,
            Mail::TfaEnabled {
                device_type: DeviceType::Email
            }
        ));
    }

    #[test]
    fn a_device_switch_mails_the_new_codes_and_a_notice_naming_the_new_device() {
        let switched = UserEvent::TfaDeviceChanged {
            device: app_device(),
            backup_codes: vec![digest()],
            at: at(),
        };
        let sent = jobs(
            vec![signed_up(), tfa_enabled(device(DeviceSecret::Email))],
            vec![switched],
            &secrets_with_codes(),
        )
        .unwrap();
        assert_eq!(templates(&sent), ["backup_codes", "tfa_enabled"]);
        assert_eq!(opened_codes(&sent[0]), ["AAAA-BBBB", "CCCC-DDDD"]);
        assert!(matches!(
            &sent[1].mail,
            Mail::TfaEnabled {
                device_type: DeviceType::CodeGenerator
            }
        ));
    }

    #[test]
    fn regenerated_backup_codes_are_mailed() {
        let regenerated = UserEvent::BackupCodesRegenerated {
            backup_codes: vec![digest()],
            at: at(),
        };
        let sent = jobs(
            vec![signed_up(), tfa_enabled(app_device())],
            vec![regenerated],
            &secrets_with_codes(),
        )
        .unwrap();
        assert_eq!(templates(&sent), ["backup_codes"]);
        assert_eq!(opened_codes(&sent[0]), ["AAAA-BBBB", "CCCC-DDDD"]);
    }

    #[test]
    fn an_issued_email_code_is_mailed_sealed_for_the_user() {
        let challenge_id = ChallengeId::from_uuid(uuid::Uuid::from_u128(2));
        let new = vec![
            UserEvent::SecondFactorRequired {
                challenge_id,
                at: at(),
            },
            UserEvent::EmailCodeIssued {
                challenge_id,
                digest: digest(),
                expires_at: at(),
            },
        ];
        let secrets = MailSecrets {
            email_code: Some(SecretString::from("123456")),
            ..MailSecrets::none()
        };
        let sent = jobs(
            vec![signed_up(), tfa_enabled(device(DeviceSecret::Email))],
            new,
            &secrets,
        )
        .unwrap();
        assert_eq!(templates(&sent), ["login_code"]);
        let code = match &sent[0].mail {
            Mail::LoginCode { code, .. } => Some(code),
            _ => None,
        }
        .expect("a login-code email");
        let opened = MailSealer::new(MailKey::derive(&KEY))
            .open(code, ADDRESS, sent[0].id)
            .unwrap();
        assert_eq!(opened.as_str(), "123456");
    }

    #[test]
    fn an_issued_confirmation_code_is_mailed_sealed_for_the_user_and_its_job() {
        let issued = UserEvent::ConfirmationCodeIssued {
            digest: digest(),
            expires_at: at(),
            at: at(),
        };
        let secrets = MailSecrets {
            email_code: Some(SecretString::from("424242")),
            ..MailSecrets::none()
        };
        let history = vec![signed_up(), tfa_enabled(device(DeviceSecret::Email))];
        let sent = jobs(history.clone(), vec![issued.clone()], &secrets).unwrap();
        assert_eq!(templates(&sent), ["confirmation_code"]);
        let code = match &sent[0].mail {
            Mail::ConfirmationCode { code, .. } => Some(code),
            _ => None,
        }
        .expect("a confirmation-code email");
        let sealer = MailSealer::new(MailKey::derive(&KEY));
        assert_eq!(
            sealer.open(code, ADDRESS, sent[0].id).unwrap().as_str(),
            "424242"
        );
        assert!(sealer.open(code, ADDRESS, uuid::Uuid::new_v4()).is_err());
        assert!(jobs(history, vec![issued], &MailSecrets::none()).is_err());
    }

    #[test]
    fn a_reset_request_mails_the_token_sealed_for_the_user() {
        let requested = UserEvent::PasswordResetRequested {
            digest: digest(),
            expires_at: at(),
            at: at(),
        };
        let secrets = MailSecrets {
            reset_token: Some(SecretString::from("token")),
            ..MailSecrets::none()
        };
        let sent = jobs(vec![signed_up()], vec![requested], &secrets).unwrap();
        assert_eq!(templates(&sent), ["password_reset"]);
        let token = match &sent[0].mail {
            Mail::PasswordReset { token, .. } => Some(token),
            _ => None,
        }
        .expect("a reset email");
        let opened = MailSealer::new(MailKey::derive(&KEY))
            .open(token, ADDRESS, sent[0].id)
            .unwrap();
        assert_eq!(opened.as_str(), "token");
    }

    #[test]
    fn each_security_notice_follows_its_fact() {
        let history = vec![signed_up(), tfa_enabled(app_device())];
        let consumed = UserEvent::BackupCodeConsumed {
            challenge_id: ChallengeId::from_uuid(uuid::Uuid::from_u128(2)),
            index: 0,
            remaining: 3,
            at: at(),
        };
        let cases = [
            (consumed, "backup_code_used"),
            (UserEvent::TfaDisabled { at: at() }, "tfa_disabled"),
            (
                UserEvent::PasswordChanged {
                    password_hash: PasswordHash::from_phc("$argon2id$new".to_owned()),
                    at: at(),
                },
                "password_changed",
            ),
            (
                UserEvent::PasswordReset {
                    password_hash: PasswordHash::from_phc("$argon2id$new".to_owned()),
                    at: at(),
                },
                "password_changed",
            ),
            (UserEvent::SignUpAttempted { at: at() }, "sign_up_attempted"),
        ];
        for (event, template) in cases {
            let sent = jobs(history.clone(), vec![event.clone()], &MailSecrets::none()).unwrap();
            assert_eq!(templates(&sent), [template], "{event:?}");
            match (&event, &sent[0].mail) {
                (UserEvent::BackupCodeConsumed { .. }, Mail::BackupCodeUsed { remaining }) => {
                    assert_eq!(*remaining, 3);
                }
                (UserEvent::PasswordChanged { .. }, Mail::PasswordChanged { reset }) => {
                    assert!(!reset);
                }
                (UserEvent::PasswordReset { .. }, Mail::PasswordChanged { reset }) => {
                    assert!(reset);
                }
                _ => {}
            }
        }
    }

    #[test]
    fn facts_without_a_notice_send_nothing() {
        let session_id = SessionId::from_uuid(uuid::Uuid::from_u128(3));
        let quiet = vec![
            UserEvent::LoggedIn { at: at() },
            UserEvent::SessionStarted {
                session_id,
                refresh_id: RefreshTokenId::from_uuid(uuid::Uuid::from_u128(4)),
                expires_at: at(),
                at: at(),
            },
            UserEvent::LoginFailed {
                factor: Factor::Password,
                challenge_id: None,
                at: at(),
            },
            UserEvent::FactorLocked {
                factor: ThrottledFactor::Password,
                until: at(),
                at: at(),
            },
            UserEvent::SessionEnded {
                session_id,
                reason: SessionEndReason::LoggedOut,
                at: at(),
            },
            UserEvent::AccountLocked { at: at() },
            UserEvent::AccountUnlocked { at: at() },
            UserEvent::AdminGranted { at: at() },
        ];
        let sent = jobs(vec![signed_up()], quiet, &MailSecrets::none()).unwrap();
        assert!(sent.is_empty());
    }

    #[test]
    fn a_fact_whose_email_needs_a_secret_the_request_lacks_is_refused() {
        let enabled = jobs(
            vec![signed_up()],
            vec![tfa_enabled(app_device())],
            &MailSecrets::none(),
        );
        assert!(enabled.is_err());
        let requested = UserEvent::PasswordResetRequested {
            digest: digest(),
            expires_at: at(),
            at: at(),
        };
        assert!(jobs(vec![signed_up()], vec![requested], &MailSecrets::none()).is_err());
    }

    #[test]
    fn a_user_without_an_address_gets_no_email() {
        let sent = jobs(
            vec![],
            vec![UserEvent::TfaDisabled { at: at() }],
            &MailSecrets::none(),
        );
        assert!(sent.unwrap().is_empty());
    }
}
