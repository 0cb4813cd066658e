//! The HTTP API: routes, extractors, tokens, the OpenAPI document, and how errors answer.

pub mod deadline;
pub mod error;
pub mod extract;
pub mod hygiene;
pub mod jwt;
pub mod openapi;
pub mod qr;
pub mod rate_limit;
pub mod routes;
pub mod state;
