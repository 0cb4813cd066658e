//! The operating system's CSPRNG.

use rand::RngCore;
use twofold_domain::services::Randomness;

/// Draws from the OS random source (getrandom).
#[derive(Debug, Default)]
pub struct OsRandomness;

impl Randomness for OsRandomness {
    fn fill(&self, dest: &mut [u8]) {
        rand::rngs::OsRng.fill_bytes(dest);
    }
}
