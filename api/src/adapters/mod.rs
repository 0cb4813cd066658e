//! Production implementations of the domain's ports.

mod argon2;
mod clock;
mod rng;
mod sealer;

pub use self::argon2::{Argon2Hasher, Argon2Params, DEFAULT_NICE_STEPS};
pub use clock::SystemClock;
pub use rng::OsRandomness;
pub use sealer::{SealingKey, XChaChaSealer};
