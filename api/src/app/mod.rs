//! The use cases HTTP and the command line share: the command gateway, the event store's
//! write side, mail, operator actions. Nothing here knows HTTP (no axum, no `crate::http`).

pub mod admin;
pub mod gateway;
pub mod mail;
pub mod store;
pub mod unknown_accounts;
pub mod views;
