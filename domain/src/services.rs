//! Ports: the services the aggregate reaches through traits, so the domain stays free of I/O
//! and its tests can fix time and randomness.

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::{SecretSlice, SecretString};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::values::{KeyedDigest, NewPassword, PasswordHash, SealedSecret};

/// Everything the `User` aggregate needs from the outside world.
#[derive(Clone)]
pub struct UserServices {
    /// Hashes and verifies passwords (slow by design; the adapter keeps it off the runtime).
    pub hasher: Arc<dyn PasswordHasher>,
    /// Seals TOTP seeds and digests codes under configured keys.
    pub sealer: Arc<dyn SecretSealer>,
    /// The current time.
    pub clock: Arc<dyn Clock>,
    /// Cryptographically secure randomness.
    pub rng: Arc<dyn Randomness>,
}

/// Why a password could not be hashed or checked. Neither says anything about the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HasherError {
    /// Every worker is busy and the queue is full: the caller should retry shortly.
    #[error("the password hasher is saturated")]
    Saturated,
    /// The hasher failed (bad parameters, a stored hash that does not parse).
    #[error("the password hasher failed")]
    Failed,
}

/// Password hashing (Argon2id in production).
#[async_trait]
pub trait PasswordHasher: Send + Sync {
    /// Hashes a policy-checked password with a fresh salt.
    async fn hash(&self, password: &NewPassword) -> Result<PasswordHash, HasherError>;
    /// Whether `password` matches `hash`, in time independent of where they differ.
    async fn verify(
        &self,
        password: &SecretString,
        hash: &PasswordHash,
    ) -> Result<bool, HasherError>;
}

/// Why a sealed secret could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealerError {
    /// The key id is not configured (any more).
    #[error("no sealing key with id {0}")]
    UnknownKey(String),
    /// Authentication failed: the ciphertext was altered or sealed under another key.
    #[error("sealed secret failed authentication")]
    Corrupt,
}

/// Authenticated encryption for secrets that must be read back (TOTP seeds), and keyed
/// digests for secrets that only need to be recognised (backup and email codes).
pub trait SecretSealer: Send + Sync {
    /// Encrypts under the current key with a fresh nonce.
    fn seal(&self, plaintext: &[u8]) -> SealedSecret;
    /// Decrypts with whichever configured key sealed it.
    fn open(&self, sealed: &SealedSecret) -> Result<SecretSlice<u8>, SealerError>;
    /// A keyed digest under the current key.
    fn digest(&self, secret: &[u8]) -> KeyedDigest;
    /// Keyed digests under every configured key, the current one first: to find what was
    /// digested before a key rotation.
    fn digests(&self, secret: &[u8]) -> Vec<KeyedDigest>;
    /// Whether `candidate` has this digest, compared in constant time.
    fn matches(&self, digest: &KeyedDigest, candidate: &[u8]) -> bool;
    /// The id of the key that seals and digests now; secrets under any other id are due for
    /// resealing.
    fn current_key_id(&self) -> &str;
}

/// The time source.
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// A cryptographically secure random source.
pub trait Randomness: Send + Sync {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]);
}

impl dyn Randomness {
    /// A random (v4) UUID drawn from this source.
    pub fn uuid(&self) -> Uuid {
        let mut bytes = [0u8; 16];
        self.fill(&mut bytes);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// A uniformly random integer below `bound` (rejection sampling, no modulo bias).
    pub fn below(&self, bound: u32) -> u32 {
        let zone = u32::MAX - (u32::MAX % bound);
        loop {
            let mut bytes = [0u8; 4];
            self.fill(&mut bytes);
            let value = u32::from_le_bytes(bytes);
            if value < zone {
                return value % bound;
            }
        }
    }
}
