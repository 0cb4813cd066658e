//! The Twofold domain: the event-sourced `User` aggregate, its commands, events and rules,
//! the value types inputs are parsed into, and the ports (traits) through which the aggregate
//! reaches hashing, sealing, time and randomness. This crate performs no I/O.

pub mod backup_codes;
pub mod metadata;
mod rfc3339;
pub mod services;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod totp;
pub mod upcasters;
pub mod user;
pub mod values;

pub use metadata::{Actor, EventMetadata};
pub use services::UserServices;
pub use upcasters::upcasters;
pub use user::{Factor, User, UserCommand, UserError, UserEvent, UserEventKind};
