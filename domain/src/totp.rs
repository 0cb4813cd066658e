//! Time-based one-time passwords (RFC 6238) with the parameters every authenticator app
//! understands: HMAC-SHA-1, 6 digits, 30-second steps. Google and Microsoft Authenticator
//! ignore other algorithms and periods in practice, so these are not configurable.

use secrecy::{ExposeSecret, SecretSlice};
use time::OffsetDateTime;
use totp_rs::{Algorithm, Secret, TOTP};

use crate::services::Randomness;
use crate::values::Email;

/// Seconds per time step (RFC 6238's default X).
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// 160-bit seeds: the HMAC-SHA-1 block-size recommendation of RFC 4226 §4.
pub const SEED_BYTES: usize = 20;
/// Steps accepted either side of the current one, for clock drift and typing time
/// (RFC 6238 §5.2 recommends at most one).
pub const ALLOWED_DRIFT_STEPS: u64 = 1;

/// A fresh TOTP seed from the secure random source.
pub fn generate_seed(rng: &dyn Randomness) -> SecretSlice<u8> {
    let mut seed = vec![0u8; SEED_BYTES];
    rng.fill(&mut seed);
    seed.into()
}

/// The time step that contains `at`.
pub fn step_at(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp()).unwrap_or(0) / STEP_SECONDS
}

/// The code an authenticator shows during `step`.
pub fn code_at_step(seed: &SecretSlice<u8>, step: u64) -> String {
    totp(seed).generate(step * STEP_SECONDS)
}

/// The step whose code `code` is, among the current step and its neighbours, or `None`.
/// Every candidate is computed and compared in constant time, whatever matches.
pub fn matching_step(seed: &SecretSlice<u8>, code: &str, at: OffsetDateTime) -> Option<u64> {
    let current = step_at(at);
    let generator = totp(seed);
    let mut found = None;
    for step in current.saturating_sub(ALLOWED_DRIFT_STEPS)..=current + ALLOWED_DRIFT_STEPS {
        let candidate = generator.generate(step * STEP_SECONDS);
        let equal: bool =
            subtle::ConstantTimeEq::ct_eq(candidate.as_bytes(), code.as_bytes()).into();
        if equal && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// The `otpauth://` URI an authenticator app enrols from (Google's Key Uri Format). The
/// period is not stated because it is the default; the original service's `period=2` was wrong.
pub fn otpauth_uri(issuer: &str, account: &Email, seed: &SecretSlice<u8>) -> String {
    let secret = match Secret::Raw(seed.expose_secret().to_vec()).to_encoded() {
        Secret::Encoded(encoded) => encoded,
        Secret::Raw(_) => String::new(),
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}",
        percent_encode(issuer),
        percent_encode(account.as_str()),
        secret.trim_end_matches('='),
        percent_encode(issuer),
    )
}

fn totp(seed: &SecretSlice<u8>) -> TOTP {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        0,
        STEP_SECONDS,
        seed.expose_secret().to_vec(),
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `@`, which authenticator
/// apps show as typed in an account label.
fn percent_encode(raw: &str) -> String {
    let mut encoded = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 seed "12345678901234567890", truncated to 6 digits.
    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        let seed: SecretSlice<u8> = b"12345678901234567890".to_vec().into();
        for (unix, expected) in [
            (59u64, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code_at_step(&seed, unix / STEP_SECONDS), expected);
        }
    }

    #[test]
    fn a_code_matches_within_one_step_of_drift_and_not_beyond() {
        let seed: SecretSlice<u8> = b"12345678901234567890".to_vec().into();
        let at = OffsetDateTime::from_unix_timestamp(1_111_111_111).unwrap();
        let step = step_at(at);
        for offset in [-1i64, 0, 1] {
            let candidate = step.checked_add_signed(offset).unwrap();
            let code = code_at_step(&seed, candidate);
            assert_eq!(matching_step(&seed, &code, at), Some(candidate));
        }
        assert_eq!(
            matching_step(&seed, &code_at_step(&seed, step + 2), at),
            None
        );
        assert_eq!(
            matching_step(&seed, &code_at_step(&seed, step - 2), at),
            None
        );
    }

    #[test]
    fn the_otpauth_uri_names_issuer_and_account_and_carries_the_base32_seed() {
        let seed: SecretSlice<u8> = b"12345678901234567890".to_vec().into();
        let email = Email::parse("ada+2fa@example.com").unwrap();
        assert_eq!(
            otpauth_uri("Twofold", &email, &seed),
            "otpauth://totp/Twofold:ada%2B2fa@example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Twofold"
        );
    }
}
