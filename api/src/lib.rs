//! The Twofold HTTP API: routes, extractors, tokens, configuration, the adapters behind the
//! domain's ports, and the composition root that wires them.

pub mod adapters;
pub mod admin;
pub mod config;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod hygiene;
pub mod jwt;
pub mod mail;
pub mod metrics;
pub mod openapi;
pub mod qr;
pub mod rate_limit;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod unknown_accounts;

pub use config::{Cli, Config};
pub use startup::Application;
