//! Email addresses, and the case-insensitive key that makes them unique across users.

use serde::{Deserialize, Serialize};

use crate::user::UserError;

/// The longest address SMTP can carry (RFC 5321 path limit less the angle brackets).
const MAX_EMAIL_LEN: usize = 254;

/// A syntactically plausible email address, stored as the user typed it (trimmed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Parses an address: one `@`, a non-empty local part, a domain with a dot, no whitespace
    /// or control characters. Deliverability is proven by the emails themselves, not here.
    pub fn parse(raw: &str) -> Result<Self, UserError> {
        let trimmed = raw.trim();
        let valid = trimmed.len() <= MAX_EMAIL_LEN
            && !trimmed.chars().any(|c| c.is_whitespace() || c.is_control())
            && match trimmed.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                }
                None => false,
            };
        if valid {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(UserError::InvalidEmail)
        }
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The uniqueness key: two addresses that differ only in case belong to one account.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_differ_only_in_case_share_a_key() {
        let lower = Email::parse("alice@example.com").unwrap();
        let mixed = Email::parse("  Alice@Example.COM ").unwrap();
        assert_eq!(lower.key(), mixed.key());
        assert_eq!(mixed.as_str(), "Alice@Example.COM");
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for raw in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "alice@@example.com",
            "al ice@example.com",
            "alice@.example.com",
            "alice@example.com.",
        ] {
            assert_eq!(Email::parse(raw), Err(UserError::InvalidEmail), "{raw:?}");
        }
        let too_long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&too_long), Err(UserError::InvalidEmail));
    }
}
