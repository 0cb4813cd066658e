//! The secrets a request generates: what an enrolment gives the user (a TOTP seed to scan,
//! backup codes to keep), a login code, a reset token. The command receives them to keep only
//! sealed or digested forms; the user receives them once, by QR code or by email.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use twofold_domain::services::Randomness;
use twofold_domain::user::{NewDevice, TfaEnrolment};
use twofold_domain::values::{DeviceType, Email};
use twofold_domain::{backup_codes, totp};

use super::mail_policy::MailSecrets;
use super::App;

/// Bytes of randomness in a reset token (256 bits).
const RESET_TOKEN_BYTES: usize = 32;

/// The `otpauth://totp/` URI an authenticator app scans, as a QR code. It holds the seed.
pub struct ScanCode(SecretString);

impl ScanCode {
    /// The code of an otpauth `uri`.
    pub(super) fn of(uri: String) -> Self {
        Self(SecretString::from(uri))
    }

    /// The URI.
    pub fn uri(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A fresh enrolment: the command's part, and what the user is given.
pub(super) struct NewEnrolment {
    /// What the command records (sealed and digested).
    pub(super) enrolment: TfaEnrolment,
    /// The seed, for an authenticator app.
    pub(super) seed: Option<SecretSlice<u8>>,
    /// The backup codes, for the email.
    pub(super) mail: MailSecrets,
}

impl App {
    /// New secrets for enrolling a `device_type` device.
    pub(super) fn new_enrolment(&self, device_type: DeviceType) -> NewEnrolment {
        let rng: &dyn Randomness = self.services.rng.as_ref();
        let codes = backup_codes::generate_set(rng, self.settings.backup_codes);
        let (device, seed) = match device_type {
            DeviceType::Email => (NewDevice::Email, None),
            DeviceType::CodeGenerator => {
                let seed = totp::generate_seed(rng);
                (NewDevice::CodeGenerator { seed: seed.clone() }, Some(seed))
            }
        };
        NewEnrolment {
            enrolment: TfaEnrolment {
                device,
                backup_codes: codes.clone(),
            },
            seed,
            mail: MailSecrets {
                backup_codes: codes,
                ..MailSecrets::none()
            },
        }
    }

    /// New backup codes, for a regeneration.
    pub(super) fn new_backup_codes(&self) -> Vec<SecretString> {
        backup_codes::generate_set(self.services.rng.as_ref(), self.settings.backup_codes)
    }

    /// A random 6-digit code for an email second factor.
    pub(super) fn new_email_code(&self) -> SecretString {
        let rng: &dyn Randomness = self.services.rng.as_ref();
        SecretString::from(format!("{:06}", rng.below(1_000_000)))
    }

    /// A random password reset token of [`RESET_TOKEN_BYTES`] bytes, base64url.
    pub(super) fn new_reset_token(&self) -> SecretString {
        let mut bytes = [0u8; RESET_TOKEN_BYTES];
        self.services.rng.fill(&mut bytes);
        SecretString::from(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The code for the user with address `account` to scan, when the enrolment has a seed.
    pub(super) fn scan_code(
        &self,
        account: &Email,
        seed: Option<&SecretSlice<u8>>,
    ) -> Option<ScanCode> {
        seed.map(|seed| ScanCode::of(totp::otpauth_uri(&self.settings.totp_issuer, account, seed)))
    }
}
