//! Identifier newtypes, so a user id is never passed where a device id belongs.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps a UUID.
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// A new random (v4) id.
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Identifies a user; it is also the aggregate id in the event store.
    UserId
);
uuid_id!(
    /// Identifies an enrolled second-factor device.
    DeviceId
);
uuid_id!(
    /// Identifies one password login waiting for its second factor; the pre-2FA token carries it.
    ChallengeId
);
uuid_id!(
    /// Identifies a login session (a refresh-token family).
    SessionId
);
uuid_id!(
    /// Identifies one refresh token of a session; each refresh replaces it.
    RefreshTokenId
);
uuid_id!(
    /// Identifies one of a user's passkeys (a WebAuthn credential); chosen by Twofold, not the
    /// authenticator, so that the credential id never appears in a URL.
    PasskeyId
);
