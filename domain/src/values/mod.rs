//! Value types: inputs are parsed into these at the edge, so the aggregate only sees valid data.

mod device;
mod email;
mod full_name;
mod ids;
mod passkey;
mod password;
mod secrets;

pub use device::DeviceType;
pub use email::Email;
pub use full_name::{FullName, MAX_FULL_NAME_CHARS, MIN_FULL_NAME_CHARS};
pub use ids::{ChallengeId, DeviceId, PasskeyId, RefreshTokenId, SessionId, UserId};
pub use passkey::{PasskeyCredential, PasskeyName, MAX_PASSKEY_NAME_CHARS};
pub use password::{NewPassword, PasswordHash, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
pub use secrets::{KeyedDigest, SealedSecret};
