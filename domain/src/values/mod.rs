//! Value types: inputs are parsed into these at the edge, so the aggregate only sees valid data.

mod device;
mod email;
mod full_name;
mod ids;
mod password;
mod secrets;

pub use device::DeviceType;
pub use email::Email;
pub use full_name::{FullName, MAX_FULL_NAME_CHARS, MIN_FULL_NAME_CHARS};
pub use ids::{ChallengeId, DeviceId, RefreshTokenId, SessionId, UserId};
pub use password::{NewPassword, PasswordHash, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
pub use secrets::{KeyedDigest, SealedSecret};
