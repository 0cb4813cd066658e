//! Twofold read models: views projected from `User` events, the projection that keeps them
//! current, and their Postgres and in-memory repositories.

pub mod chain;
mod directory;
mod history;
mod memory;
mod projection;
mod redaction;
mod sessions_view;
mod user_view;

pub use directory::{
    MemUserDirectory, PgUserDirectory, UserDirectory, SESSION_VIEW_TABLE, USER_VIEW_TABLE,
};
pub use history::{history_entry, HistoryEntry, HistoryFactor, HistoryType, Initiator};
pub use memory::MemViewRepository;
pub use projection::{ProjectedView, Projection};
pub use redaction::{redacted, REDACTED};
pub use sessions_view::{SessionSummary, SessionsView};
pub use user_view::{DeviceView, UserView};
