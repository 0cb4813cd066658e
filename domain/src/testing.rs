//! Deterministic fakes of the service ports, for given-when-then tests here and in other
//! crates (feature `testing`). None of them is secure; none is compiled into the service.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use time::OffsetDateTime;

use crate::services::{
    Clock, HasherError, PasswordHasher, Randomness, SealerError, SecretSealer, UserServices,
};
use crate::values::{KeyedDigest, NewPassword, PasswordHash, SealedSecret};

/// A clock that shows a set time until moved.
#[derive(Debug)]
pub struct FixedClock(Mutex<OffsetDateTime>);

impl FixedClock {
    /// A clock at `at`.
    pub fn at(at: OffsetDateTime) -> Self {
        Self(Mutex::new(at))
    }
}

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
            .lock()
            .map(|at| *at)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// "Randomness" that counts up from a seed byte: repeatable, and distinct between calls.
#[derive(Debug)]
pub struct SeqRandomness(AtomicU8);

impl SeqRandomness {
    /// Starts counting at `seed`.
    pub fn starting_at(seed: u8) -> Self {
        Self(AtomicU8::new(seed))
    }
}

impl Randomness for SeqRandomness {
    fn fill(&self, dest: &mut [u8]) {
        for byte in dest {
            *byte = self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A hasher whose "hash" is the password behind a prefix. Fast and obviously not secure.
#[derive(Debug, Default)]
pub struct PlainHasher;

#[async_trait]
impl PasswordHasher for PlainHasher {
    async fn hash(&self, password: &NewPassword) -> Result<PasswordHash, HasherError> {
        Ok(PasswordHash::from_phc(format!(
            "plain${}",
            password.secret().expose_secret()
        )))
    }

    async fn verify(
        &self,
        password: &SecretString,
        hash: &PasswordHash,
    ) -> Result<bool, HasherError> {
        Ok(hash.as_phc() == format!("plain${}", password.expose_secret()))
    }
}

/// The key id a [`HexSealer`] still opens but no longer seals under, as after a rotation.
pub const RETIRED_TEST_KEY: &str = "retired";

/// A sealer that "seals" by hex-encoding under key id `test`, and digests the same way. It
/// also opens and matches what was "sealed" under [`RETIRED_TEST_KEY`].
#[derive(Debug, Default)]
pub struct HexSealer;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl SecretSealer for HexSealer {
    fn seal(&self, plaintext: &[u8]) -> SealedSecret {
        SealedSecret {
            key_id: "test".to_owned(),
            ciphertext: hex(plaintext),
        }
    }

    fn open(&self, sealed: &SealedSecret) -> Result<SecretSlice<u8>, SealerError> {
        if sealed.key_id != "test" && sealed.key_id != RETIRED_TEST_KEY {
            return Err(SealerError::UnknownKey(sealed.key_id.clone()));
        }
        let text = sealed.ciphertext.as_bytes();
        let bytes: Result<Vec<u8>, _> = text
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or(SealerError::Corrupt)
            })
            .collect();
        bytes.map(Into::into)
    }

    fn digest(&self, secret: &[u8]) -> KeyedDigest {
        KeyedDigest {
            key_id: "test".to_owned(),
            digest: hex(secret),
        }
    }

    fn digests(&self, secret: &[u8]) -> Vec<KeyedDigest> {
        vec![self.digest(secret)]
    }

    fn matches(&self, digest: &KeyedDigest, candidate: &[u8]) -> bool {
        digest.digest == hex(candidate)
    }

    fn current_key_id(&self) -> &str {
        "test"
    }
}

/// Services with fake ports, a clock fixed at `at` and counting randomness.
pub fn services_at(at: OffsetDateTime) -> UserServices {
    UserServices {
        hasher: Arc::new(PlainHasher),
        sealer: Arc::new(HexSealer),
        clock: Arc::new(FixedClock::at(at)),
        rng: Arc::new(SeqRandomness::starting_at(0)),
    }
}
