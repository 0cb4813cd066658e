//! Twofold read models: views projected from `User` events, the projection that keeps them
//! current, and their Postgres and in-memory repositories.

mod directory;
mod memory;
mod projection;
mod user_view;

pub use directory::{MemUserDirectory, PgUserDirectory, UserDirectory, USER_VIEW_TABLE};
pub use memory::MemViewRepository;
pub use projection::UserProjection;
pub use user_view::{DeviceView, UserView};
