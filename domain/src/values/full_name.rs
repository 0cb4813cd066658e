//! A user's display name.

use serde::{Deserialize, Serialize};

use crate::user::UserError;

/// The fewest characters a display name has, after trimming.
pub const MIN_FULL_NAME_CHARS: usize = 1;
/// The most characters a display name has, after trimming.
pub const MAX_FULL_NAME_CHARS: usize = 200;

/// A display name: 1 to 200 characters after trimming, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FullName(String);

impl FullName {
    /// Parses a display name.
    pub fn parse(raw: &str) -> Result<Self, UserError> {
        let trimmed = raw.trim();
        let length = trimmed.chars().count();
        if (MIN_FULL_NAME_CHARS..=MAX_FULL_NAME_CHARS).contains(&length)
            && !trimmed.chars().any(char::is_control)
        {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(UserError::InvalidFullName)
        }
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_overlong_and_control_character_names_are_refused() {
        assert_eq!(FullName::parse("   "), Err(UserError::InvalidFullName));
        assert_eq!(
            FullName::parse(&"x".repeat(201)),
            Err(UserError::InvalidFullName)
        );
        assert_eq!(FullName::parse("a\u{0}b"), Err(UserError::InvalidFullName));
        assert_eq!(FullName::parse(" Ada ").unwrap().as_str(), "Ada");
    }
}
