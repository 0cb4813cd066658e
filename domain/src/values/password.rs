//! Password policy and the stored (hashed) form of a password.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::user::UserError;

/// NIST SP 800-63B §3.1.1.2: at least 8 characters for a user-chosen password.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// NIST asks verifiers to accept at least 64; 128 leaves room for passphrases while bounding
/// the hashing input an attacker can make us process.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Common passwords of policy length, lower-cased (see `domain/data/README.md`).
static COMMON_PASSWORDS: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| {
        include_str!("../../data/common-passwords.txt")
            .lines()
            .collect()
    });

/// A password that passed the policy and may be hashed. It never leaves memory in clear.
#[derive(Debug, Clone)]
pub struct NewPassword(SecretString);

impl NewPassword {
    /// Applies the policy: a length range and a list of common passwords, no composition
    /// rules (NIST 800-63B §3.1.1.2, ASVS 5.0 §6.2).
    pub fn parse(raw: SecretString) -> Result<Self, UserError> {
        let length = raw.expose_secret().chars().count();
        if length < MIN_PASSWORD_CHARS {
            return Err(UserError::PasswordTooShort);
        }
        if length > MAX_PASSWORD_CHARS {
            return Err(UserError::PasswordTooLong);
        }
        if COMMON_PASSWORDS.contains(raw.expose_secret().to_lowercase().as_str()) {
            return Err(UserError::PasswordTooCommon);
        }
        if is_one_repeated_character(raw.expose_secret()) {
            return Err(UserError::PasswordTooWeak);
        }
        Ok(Self(raw))
    }

    /// The password, for the hasher.
    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

/// Whether `password` is one character repeated (all spaces included): a guesser tries those
/// first, whatever their length, and no list of common passwords holds every length of them.
fn is_one_repeated_character(password: &str) -> bool {
    let mut characters = password.chars();
    characters
        .next()
        .is_some_and(|first| characters.all(|other| other == first))
}

/// An Argon2id hash in PHC string format (`$argon2id$v=19$m=…`): salted, slow, and safe to store.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string produced by a [`crate::services::PasswordHasher`].
    pub fn from_phc(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string.
    pub fn as_phc(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_shorter_than_eight_characters_are_refused() {
        let short = NewPassword::parse(SecretString::from("seven77"));
        assert_eq!(short.err(), Some(UserError::PasswordTooShort));
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        for common in ["password", "Baseball", "QWERTYUIOP", "iloveyou"] {
            let result = NewPassword::parse(SecretString::from(common));
            assert_eq!(result.err(), Some(UserError::PasswordTooCommon), "{common}");
        }
        assert!(NewPassword::parse(SecretString::from("correct horse battery")).is_ok());
    }

    #[test]
    fn passwords_of_only_spaces_or_one_repeated_character_are_refused_as_too_weak() {
        for weak in [
            " ".repeat(8),
            " ".repeat(40),
            "a".repeat(8),
            "Z".repeat(128),
            "é".repeat(12),
            "\t".repeat(9),
        ] {
            let result = NewPassword::parse(SecretString::from(weak.clone()));
            assert_eq!(result.err(), Some(UserError::PasswordTooWeak), "{weak:?}");
        }
        for fine in ["aaaaaaab", "        x", " a a a a a"] {
            assert!(
                NewPassword::parse(SecretString::from(fine)).is_ok(),
                "{fine:?}"
            );
        }
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        assert!(NewPassword::parse(SecretString::from("ééééééé")).is_err());
        assert!(NewPassword::parse(SecretString::from("éèéèéèéè")).is_ok());
    }

    #[test]
    fn passwords_longer_than_the_cap_are_refused_and_no_composition_rule_applies() {
        let long = NewPassword::parse(SecretString::from("a".repeat(129)));
        assert_eq!(long.err(), Some(UserError::PasswordTooLong));
        assert!(NewPassword::parse(SecretString::from("ab".repeat(64))).is_ok());
        assert!(NewPassword::parse(SecretString::from("all lower case words")).is_ok());
    }
}
