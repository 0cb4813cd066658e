//! XChaCha20-Poly1305 sealing of TOTP seeds and HMAC-SHA-256 digests of codes.
//!
//! XChaCha's 192-bit nonces can be drawn at random for every seal with no practical risk of
//! reuse, so no nonce counter has to be shared between instances. The digest key is derived
//! from the sealing key with HKDF, so one configured secret serves both, and the key id (a
//! fingerprint of the key, not the key) is stored beside everything so keys can rotate.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::SecretSlice;
use sha2::{Digest, Sha256};
use twofold_domain::services::{SealerError, SecretSealer};
use twofold_domain::values::{KeyedDigest, SealedSecret};
use zeroize::Zeroizing;

const NONCE_BYTES: usize = 24;
/// Length of a sealing key: 256 bits.
pub const SEALING_KEY_BYTES: usize = 32;

/// The configured sealing key: 32 bytes, never printed.
pub struct SealingKey(Zeroizing<[u8; SEALING_KEY_BYTES]>);

impl SealingKey {
    /// Parses the base64 form `TWOFOLD_SEALING_KEY` holds.
    pub fn from_base64(encoded: &str) -> Result<Self, String> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(encoded.trim())
                .map_err(|_| "TWOFOLD_SEALING_KEY is not valid base64".to_owned())?,
        );
        let key: [u8; SEALING_KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "TWOFOLD_SEALING_KEY must decode to {SEALING_KEY_BYTES} bytes, not {}",
                bytes.len()
            )
        })?;
        Ok(Self(Zeroizing::new(key)))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; SEALING_KEY_BYTES]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self(key)
    }

    /// The key of mail jobs, derived from this one: what the mailer is configured with.
    pub fn mail_key(&self) -> twofold_nats::MailKey {
        twofold_nats::MailKey::derive(&self.0)
    }

    /// The sealer of mail jobs, whose key is derived from this one.
    pub fn mail_sealer(&self) -> twofold_nats::MailSealer {
        twofold_nats::MailSealer::new(self.mail_key())
    }

    /// The key the event chain is computed with (tamper evidence), derived from this one and
    /// known by the same id as what this key seals.
    pub fn chain_key(&self) -> twofold_projections::chain::ChainKey {
        let mut key = Zeroizing::new([0u8; 32]);
        let expanded = hkdf::Hkdf::<Sha256>::new(None, self.0.as_ref())
            .expand(b"twofold event chain v1", key.as_mut());
        debug_assert!(expanded.is_ok(), "32 bytes is a valid HKDF-SHA-256 length");
        twofold_projections::chain::ChainKey::new(self.id(), key)
    }

    /// The key's id: the first 8 bytes of its SHA-256, in hex. Stored beside what it seals.
    fn id(&self) -> String {
        Sha256::digest(self.0.as_ref())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The base64 form, for `twofold keys generate`.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_ref())
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

/// Seals and digests under the current key; opens and checks under it and the retired keys.
pub struct XChaChaSealer {
    current: KeyMaterial,
    retired: Vec<KeyMaterial>,
}

/// One sealing key's cipher and digest key, with its id.
struct KeyMaterial {
    key_id: String,
    cipher: XChaCha20Poly1305,
    digest_key: Zeroizing<[u8; 32]>,
}

impl XChaChaSealer {
    /// A sealer using `key`, which also opens what the `retired` keys sealed.
    pub fn new(key: &SealingKey, retired: &[SealingKey]) -> Self {
        Self {
            current: KeyMaterial::new(key),
            retired: retired.iter().map(KeyMaterial::new).collect(),
        }
    }

    fn key(&self, key_id: &str) -> Option<&KeyMaterial> {
        std::iter::once(&self.current)
            .chain(&self.retired)
            .find(|key| key.key_id == key_id)
    }
}

impl KeyMaterial {
    fn new(key: &SealingKey) -> Self {
        let key_id = key.id();
        let mut digest_key = Zeroizing::new([0u8; 32]);
        let expanded = hkdf::Hkdf::<Sha256>::new(None, key.0.as_ref())
            .expand(b"twofold code digest v1", digest_key.as_mut());
        debug_assert!(expanded.is_ok(), "32 bytes is a valid HKDF-SHA-256 length");
        Self {
            key_id,
            cipher: XChaCha20Poly1305::new(key.0.as_ref().into()),
            digest_key,
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(self.digest_key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }
}

impl SecretSealer for XChaChaSealer {
    fn seal(&self, plaintext: &[u8]) -> SealedSecret {
        let key = &self.current;
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce only fails for plaintexts over 256 GiB.
        let ciphertext = key
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .unwrap_or_default();
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        SealedSecret {
            key_id: key.key_id.clone(),
            ciphertext: STANDARD.encode(sealed),
        }
    }

    fn open(&self, sealed: &SealedSecret) -> Result<SecretSlice<u8>, SealerError> {
        let key = self
            .key(&sealed.key_id)
            .ok_or_else(|| SealerError::UnknownKey(sealed.key_id.clone()))?;
        let bytes = STANDARD
            .decode(&sealed.ciphertext)
            .map_err(|_| SealerError::Corrupt)?;
        if bytes.len() < NONCE_BYTES {
            return Err(SealerError::Corrupt);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        key.cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map(Into::into)
            .map_err(|_| SealerError::Corrupt)
    }

    fn digest(&self, secret: &[u8]) -> KeyedDigest {
        let mut mac = self.current.mac();
        mac.update(secret);
        KeyedDigest {
            key_id: self.current.key_id.clone(),
            digest: STANDARD.encode(mac.finalize().into_bytes()),
        }
    }

    fn digests(&self, secret: &[u8]) -> Vec<KeyedDigest> {
        std::iter::once(&self.current)
            .chain(&self.retired)
            .map(|key| {
                let mut mac = key.mac();
                mac.update(secret);
                KeyedDigest {
                    key_id: key.key_id.clone(),
                    digest: STANDARD.encode(mac.finalize().into_bytes()),
                }
            })
            .collect()
    }

    fn matches(&self, digest: &KeyedDigest, candidate: &[u8]) -> bool {
        let Some(key) = self.key(&digest.key_id) else {
            return false;
        };
        let Ok(expected) = STANDARD.decode(&digest.digest) else {
            return false;
        };
        let mut mac = key.mac();
        mac.update(candidate);
        mac.verify_slice(&expected).is_ok()
    }

    fn current_key_id(&self) -> &str {
        &self.current.key_id
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_sealed_secret_opens_with_the_same_key_only() {
        let sealer = XChaChaSealer::new(&SealingKey::generate(), &[]);
        let sealed = sealer.seal(b"seed bytes");
        assert!(!sealed.ciphertext.contains("seed"));
        assert_eq!(sealer.open(&sealed).unwrap().expose_secret(), b"seed bytes");

        let other = XChaChaSealer::new(&SealingKey::generate(), &[]);
        assert!(matches!(
            other.open(&sealed),
            Err(SealerError::UnknownKey(_))
        ));
    }

    #[test]
    fn a_tampered_ciphertext_is_refused() {
        let sealer = XChaChaSealer::new(&SealingKey::generate(), &[]);
        let mut sealed = sealer.seal(b"seed bytes");
        let mut bytes = STANDARD.decode(&sealed.ciphertext).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        sealed.ciphertext = STANDARD.encode(bytes);
        assert_eq!(sealer.open(&sealed).err(), Some(SealerError::Corrupt));
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let sealer = XChaChaSealer::new(&SealingKey::generate(), &[]);
        assert_ne!(sealer.seal(b"x").ciphertext, sealer.seal(b"x").ciphertext);
    }

    #[test]
    fn a_digest_matches_its_secret_and_nothing_else() {
        let sealer = XChaChaSealer::new(&SealingKey::generate(), &[]);
        let digest = sealer.digest(b"ABCD");
        assert!(sealer.matches(&digest, b"ABCD"));
        assert!(!sealer.matches(&digest, b"ABCE"));
        let other = XChaChaSealer::new(&SealingKey::generate(), &[]);
        assert!(!other.matches(&digest, b"ABCD"));
    }

    #[test]
    fn a_retired_key_opens_and_checks_what_it_sealed_and_digested() {
        let old_key = SealingKey::generate();
        let old = XChaChaSealer::new(&old_key, &[]);
        let sealed = old.seal(b"seed bytes");
        let digest = old.digest(b"ABCD");

        let rotated = XChaChaSealer::new(&SealingKey::generate(), &[old_key]);
        assert_eq!(
            rotated.open(&sealed).unwrap().expose_secret(),
            b"seed bytes"
        );
        assert!(rotated.matches(&digest, b"ABCD"));
        assert!(!rotated.matches(&digest, b"ABCE"));
        let resealed = rotated.seal(b"seed bytes");
        assert_eq!(resealed.key_id, rotated.current_key_id());
        assert_ne!(resealed.key_id, sealed.key_id);
        assert!(matches!(
            old.open(&resealed),
            Err(SealerError::UnknownKey(_))
        ));
    }

    #[test]
    fn keys_of_the_wrong_length_or_encoding_are_refused_with_a_reason() {
        assert!(SealingKey::from_base64("not base64!").is_err());
        let short = STANDARD.encode([0u8; 16]);
        let error = SealingKey::from_base64(&short).unwrap_err();
        assert!(error.contains("32 bytes"), "{error}");
    }
}
