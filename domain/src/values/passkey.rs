//! A passkey's user-given name and its stored public credential.

use serde::{Deserialize, Serialize};

use crate::user::UserError;

/// The most characters a passkey's name has, after trimming.
pub const MAX_PASSKEY_NAME_CHARS: usize = 64;

/// A passkey's name, as its owner calls it ("laptop", "phone"): 1 to 64 characters after
/// trimming, no control characters. Personal data: it is sealed in the log like a full name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasskeyName(String);

impl PasskeyName {
    /// Parses a name.
    pub fn parse(raw: &str) -> Result<Self, UserError> {
        let trimmed = raw.trim();
        let length = trimmed.chars().count();
        if (1..=MAX_PASSKEY_NAME_CHARS).contains(&length) && !trimmed.chars().any(char::is_control)
        {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(UserError::InvalidPasskeyName)
        }
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two names are the same to their owner: letter case aside.
    pub fn same_as(&self, other: &Self) -> bool {
        self.0.to_lowercase() == other.0.to_lowercase()
    }
}

/// A registered WebAuthn credential as the relying-party library serialises it: the
/// credential id, the public key, the sign counter at registration and the backup flags.
/// Public material only: no private key exists on the server.
///
/// The domain keeps it opaque (it performs no WebAuthn cryptography, which lives with the
/// library in the API crate) and hands it back to the ceremonies as it was stored. The facts
/// the rules need (the credential id and the sign counter) travel beside it as typed fields.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasskeyCredential(serde_json::Value);

impl PasskeyCredential {
    /// Wraps the library's serialised credential.
    pub fn new(serialised: serde_json::Value) -> Self {
        Self(serialised)
    }

    /// The serialised credential.
    pub fn as_json(&self) -> &serde_json::Value {
        &self.0
    }
}

impl std::fmt::Debug for PasskeyCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasskeyCredential(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_empty_overlong_or_control_character_names_are_refused() {
        assert_eq!(PasskeyName::parse(" phone ").unwrap().as_str(), "phone");
        assert_eq!(PasskeyName::parse("  "), Err(UserError::InvalidPasskeyName));
        assert_eq!(
            PasskeyName::parse(&"x".repeat(65)),
            Err(UserError::InvalidPasskeyName)
        );
        assert!(PasskeyName::parse(&"é".repeat(64)).is_ok());
        assert_eq!(
            PasskeyName::parse("a\nb"),
            Err(UserError::InvalidPasskeyName)
        );
    }

    #[test]
    fn names_differing_only_in_case_are_the_same() {
        let phone = PasskeyName::parse("Phone").unwrap();
        assert!(phone.same_as(&PasskeyName::parse("pHONE").unwrap()));
        assert!(!phone.same_as(&PasskeyName::parse("Phone 2").unwrap()));
    }
}
