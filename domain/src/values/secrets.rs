//! Stored forms of secrets: sealed (reversible by the key holder) and keyed digests (one-way).

use serde::{Deserialize, Serialize};

/// A secret encrypted with an AEAD cipher. The key id travels with it so keys can rotate: a
/// retiring key still opens what it sealed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// Which configured key sealed it.
    pub key_id: String,
    /// Nonce and ciphertext (with tag), base64.
    pub ciphertext: String,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedSecret(key_id={})", self.key_id)
    }
}

/// A keyed one-way digest (HMAC) of a high-entropy or short-lived code. Without the key an
/// attacker holding the event store cannot test guesses against it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedDigest {
    /// Which configured key made it.
    pub key_id: String,
    /// The digest, base64.
    pub digest: String,
}

impl std::fmt::Debug for KeyedDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyedDigest(key_id={})", self.key_id)
    }
}
