//! Sealing the codes inside mail jobs, so they are never in clear in the outbox table or the
//! stream. The mail key is derived with HKDF from the API's sealing key, under its own label,
//! so it never equals the key that seals TOTP seeds; the mailer is configured with the derived
//! mail key only (`twofold keys mail-key` prints it), never with the sealing key it comes from.
//! The recipient address and the job id are authenticated with each code (AEAD associated
//! data): a sealed code copied into a job addressed to someone else, or into another job to the
//! same address (a resend by whoever can publish on the mail subjects), does not open.
//!
//! Codes sealed by versions before the job id was bound (recipient only) still open, so that
//! jobs waiting in the outbox or the stream across an upgrade are delivered; a code sealed now
//! never opens under the older associated data.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

use crate::SealedText;

const NONCE_BYTES: usize = 24;

/// A mail key is not the base64 of 32 bytes. The message never repeats the key.
#[derive(Debug, thiserror::Error)]
#[error("a mail key must be the base64 of 32 bytes (as `twofold keys mail-key` prints it)")]
pub struct BadMailKey;

/// Why sealed text could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenFailed {
    /// Sealed under a key this process does not hold.
    #[error("sealed under unknown key {0}")]
    UnknownKey(String),
    /// Altered, truncated or not ours.
    #[error("sealed text failed authentication")]
    Corrupt,
}

/// Seals and opens the secret parts of mail jobs.
#[derive(Clone)]
pub struct MailSealer {
    current: MailKey,
    /// Keys of before a rotation: jobs sealed under them still open.
    retired: Vec<MailKey>,
}

/// The key of mail jobs, with its id. Its `Debug` shows the id only.
#[derive(Clone)]
pub struct MailKey {
    key: Zeroizing<[u8; 32]>,
    key_id: String,
    cipher: XChaCha20Poly1305,
}

impl MailSealer {
    /// A sealer that seals under `current`.
    pub fn new(current: MailKey) -> Self {
        Self {
            current,
            retired: Vec::new(),
        }
    }

    /// This sealer, also opening jobs sealed under `retired` keys.
    pub fn with_retired(mut self, retired: Vec<MailKey>) -> Self {
        self.retired = retired;
        self
    }
}

impl MailKey {
    /// The mail key of a 32-byte sealing key.
    pub fn derive(sealing_key: &[u8; 32]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        let expanded = hkdf::Hkdf::<Sha256>::new(None, sealing_key)
            .expand(b"twofold mail job v1", key.as_mut());
        debug_assert!(expanded.is_ok(), "32 bytes is a valid HKDF-SHA-256 length");
        Self::from_bytes(key)
    }

    /// A mail key from its base64 (standard alphabet), as [`MailKey::to_base64`] writes it.
    pub fn parse(encoded: &str) -> Result<Self, BadMailKey> {
        let bytes = Zeroizing::new(STANDARD.decode(encoded.trim()).map_err(|_| BadMailKey)?);
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != key.len() {
            return Err(BadMailKey);
        }
        key.copy_from_slice(&bytes);
        Ok(Self::from_bytes(key))
    }

    /// The key in base64, for the mailer's configuration.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.key.as_ref()))
    }

    /// The key's id, which sealed text names: a digest, never the key.
    pub fn id(&self) -> &str {
        &self.key_id
    }

    fn from_bytes(key: Zeroizing<[u8; 32]>) -> Self {
        let fingerprint = Sha256::digest(key.as_ref());
        let key_id = fingerprint[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let cipher = XChaCha20Poly1305::new(key.as_ref().into());
        Self {
            key,
            key_id,
            cipher,
        }
    }
}

impl std::fmt::Debug for MailKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailKey")
            .field("id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl MailSealer {
    /// Seals `plaintext` for `recipient` in the mail job `job`.
    pub fn seal(&self, plaintext: &str, recipient: &str, job: Uuid) -> SealedText {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // Encryption only fails for plaintexts beyond 256 GiB.
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &associated_data(recipient, job),
                },
            )
            .unwrap_or_default();
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        SealedText {
            key_id: self.current.key_id.clone(),
            ciphertext: STANDARD.encode(sealed),
        }
    }

    /// Seals a list of codes (as a JSON array) for `recipient` in the mail job `job`.
    pub fn seal_codes(&self, codes: &[String], recipient: &str, job: Uuid) -> SealedText {
        let mut json = serde_json::to_string(codes).unwrap_or_default();
        let sealed = self.seal(&json, recipient, job);
        json.zeroize();
        sealed
    }

    /// Opens text sealed for `recipient` in the mail job `job`.
    pub fn open(
        &self,
        sealed: &SealedText,
        recipient: &str,
        job: Uuid,
    ) -> Result<Zeroizing<String>, OpenFailed> {
        let key = std::iter::once(&self.current)
            .chain(&self.retired)
            .find(|key| key.key_id == sealed.key_id)
            .ok_or_else(|| OpenFailed::UnknownKey(sealed.key_id.clone()))?;
        let bytes = STANDARD
            .decode(&sealed.ciphertext)
            .map_err(|_| OpenFailed::Corrupt)?;
        if bytes.len() < NONCE_BYTES {
            return Err(OpenFailed::Corrupt);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let decrypt = |aad: &[u8]| {
            key.cipher.decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
        };
        let plaintext = decrypt(&associated_data(recipient, job))
            .or_else(|_| decrypt(&recipient_only_associated_data(recipient)))
            .map_err(|_| OpenFailed::Corrupt)?;
        String::from_utf8(plaintext)
            .map(Zeroizing::new)
            .map_err(|_| OpenFailed::Corrupt)
    }

    /// Opens a list of codes sealed for `recipient` in the mail job `job`.
    pub fn open_codes(
        &self,
        sealed: &SealedText,
        recipient: &str,
        job: Uuid,
    ) -> Result<Vec<Zeroizing<String>>, OpenFailed> {
        let json = self.open(sealed, recipient, job)?;
        let codes: Vec<String> = serde_json::from_str(&json).map_err(|_| OpenFailed::Corrupt)?;
        Ok(codes.into_iter().map(Zeroizing::new).collect())
    }
}

/// The associated data a code is sealed with: the recipient, case-folded as addresses are, and
/// the job.
fn associated_data(recipient: &str, job: Uuid) -> Vec<u8> {
    format!(
        "twofold mail to {} in job {job}",
        recipient.trim().to_lowercase()
    )
    .into_bytes()
}

/// The associated data of codes sealed before the job was bound (see the module doc).
fn recipient_only_associated_data(recipient: &str) -> Vec<u8> {
    format!("twofold mail to {}", recipient.trim().to_lowercase()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: Uuid = Uuid::nil();

    fn sealer_of(byte: u8) -> MailSealer {
        MailSealer::new(MailKey::derive(&[byte; 32]))
    }

    #[test]
    fn a_mail_key_survives_its_base64_and_its_debug_shows_only_its_id() {
        let key = MailKey::derive(&[7u8; 32]);
        let encoded = key.to_base64();
        let parsed = MailKey::parse(&encoded).unwrap();
        assert_eq!(parsed.id(), key.id());
        assert!(!format!("{key:?}").contains(encoded.as_str()));
        let sealed = MailSealer::new(key).seal("123456", "ada@example.com", JOB);
        let opened = MailSealer::new(parsed).open(&sealed, "ada@example.com", JOB);
        assert_eq!(opened.unwrap().as_str(), "123456");
    }

    #[test]
    fn the_mail_key_is_not_the_sealing_key_and_bad_keys_are_refused() {
        let sealing = [7u8; 32];
        assert_ne!(MailKey::derive(&sealing).key.as_ref(), &sealing);
        for bad in ["not base64!", "AAECAw=="] {
            assert!(MailKey::parse(bad).is_err());
        }
    }

    #[test]
    fn sealed_codes_open_with_the_same_key_only_and_hide_the_plaintext() {
        let sealer = sealer_of(7);
        let codes = vec!["AAAA-BBBB".to_owned(), "CCCC-DDDD".to_owned()];
        let sealed = sealer.seal_codes(&codes, "ada@example.com", JOB);
        assert!(!sealed.ciphertext.contains("AAAA"));
        let opened: Vec<String> = sealer
            .open_codes(&sealed, "ada@example.com", JOB)
            .unwrap()
            .iter()
            .map(|code| code.to_string())
            .collect();
        assert_eq!(opened, codes);
        let other = sealer_of(8);
        assert!(matches!(
            other.open(&sealed, "ada@example.com", JOB),
            Err(OpenFailed::UnknownKey(_))
        ));
    }

    #[test]
    fn a_job_sealed_before_a_rotation_opens_with_the_retired_key() {
        let before = sealer_of(7).seal("123456", "ada@example.com", JOB);
        let rotated = sealer_of(8).with_retired(vec![MailKey::derive(&[7u8; 32])]);
        assert_eq!(
            rotated
                .open(&before, "ada@example.com", JOB)
                .unwrap()
                .as_str(),
            "123456"
        );
        let after = rotated.seal("654321", "ada@example.com", JOB);
        assert_ne!(after.key_id, before.key_id);
        assert!(matches!(
            sealer_of(7).open(&after, "ada@example.com", JOB),
            Err(OpenFailed::UnknownKey(_))
        ));
    }

    #[test]
    fn a_sealed_code_does_not_open_for_another_recipient() {
        let sealer = sealer_of(7);
        let sealed = sealer.seal("reset-token", "victim@example.com", JOB);
        assert!(sealer.open(&sealed, "Victim@Example.com", JOB).is_ok());
        assert!(matches!(
            sealer.open(&sealed, "attacker@example.com", JOB),
            Err(OpenFailed::Corrupt)
        ));
    }

    #[test]
    fn tampered_sealed_text_is_refused() {
        let sealer = sealer_of(7);
        let mut sealed = sealer.seal("123456", "ada@example.com", JOB);
        let mut bytes = STANDARD.decode(&sealed.ciphertext).unwrap();
        bytes[30] ^= 1;
        sealed.ciphertext = STANDARD.encode(bytes);
        assert!(matches!(
            sealer.open(&sealed, "ada@example.com", JOB),
            Err(OpenFailed::Corrupt)
        ));
    }

    #[test]
    fn a_sealed_code_does_not_open_in_another_job() {
        let sealer = sealer_of(7);
        let sealed = sealer.seal("123456", "ada@example.com", JOB);
        assert!(sealer.open(&sealed, "ada@example.com", JOB).is_ok());
        assert!(matches!(
            sealer.open(&sealed, "ada@example.com", Uuid::from_u128(1)),
            Err(OpenFailed::Corrupt)
        ));
    }

    #[test]
    fn a_code_sealed_before_jobs_were_bound_still_opens_in_its_job() {
        let sealer = sealer_of(7);
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = sealer
            .current
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: b"123456",
                    aad: &recipient_only_associated_data("ada@example.com"),
                },
            )
            .unwrap();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ciphertext);
        let older = SealedText {
            key_id: sealer.current.key_id.clone(),
            ciphertext: STANDARD.encode(bytes),
        };
        assert_eq!(
            sealer
                .open(&older, "ada@example.com", JOB)
                .unwrap()
                .as_str(),
            "123456"
        );
    }
}
