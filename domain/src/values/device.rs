//! The kinds of second-factor device.

use serde::{Deserialize, Serialize};

/// How a user proves the second factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    /// A code is emailed at each login.
    Email,
    /// An authenticator app computes TOTP codes from a seed enrolled by QR code.
    CodeGenerator,
}
