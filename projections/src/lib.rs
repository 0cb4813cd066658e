//! Twofold read models: views projected from `User` events, the projection that keeps them
//! current, and their Postgres and in-memory stores; the event log read in commit order, the
//! catch-up projector that follows it, the rebuild that replays it, and its tamper evidence.

mod audit;
pub mod chain;
mod directory;
mod history;
mod in_place;
pub mod log;
pub mod personal;
mod projection;
mod projector;
pub mod rebuild;
mod redaction;
mod sessions_view;
mod store;
mod user_view;

pub use audit::{audited, AuditedEvent, AuditedMetadata};
pub use directory::{
    MemUserDirectory, PgUserDirectory, UserDirectory, SESSION_VIEW_TABLE, USER_VIEW_TABLE,
};
pub use history::{history_entry, HistoryEntry, HistoryFactor, HistoryType, Initiator};
pub use in_place::{ChangedInPlace, ListChange, PgQuery, PlannedChange};
pub use projection::{CommitQuery, Follower, ProjectedView, Projection, UserBatch};
pub use projector::{
    by_user, CheckpointStore, MemCheckpointStore, PgCheckpointStore, Projector, POLL_INTERVAL,
    VIEWS_PROJECTOR,
};
pub use redaction::{redacted, REDACTED};
pub use sessions_view::{SessionSummary, SessionsView};
pub use store::{Commit, MemViewStore, PgViewStore, StoredView, ViewStore};
pub use user_view::{DeviceView, UserView};
