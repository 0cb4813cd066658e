//! The Twofold HTTP API: routes, extractors, tokens, configuration, the adapters behind the
//! domain's ports, and the composition root that wires them.

pub mod adapters;
pub mod app;
pub mod config;
pub mod http;
pub mod metrics;
pub mod operator;
pub mod readiness;
pub mod serve;
pub mod startup;
pub mod telemetry;

pub use config::{Cli, Config};
pub use startup::Application;
