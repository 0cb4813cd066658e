//! Stored events as an auditor reads them: each with its place in the log, its user and
//! sequence, its type and stored version, when it was committed, who caused it in which
//! request, and the event itself in its current shape with every secret redacted.

use cqrs_es::persist::{EventUpcaster, PersistenceError};
use serde::Serialize;
use time::OffsetDateTime;
use twofold_domain::EventMetadata;

use crate::log::{envelope, LoggedEvent};
use crate::redacted;

/// Who caused an event, in which request and from where, as stored beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditedMetadata {
    /// `user:<id>`, `admin:<id>`, `anonymous`, `cli` or `config`.
    pub actor: String,
    /// The request's `x-request-id`, which its log lines and emails carry too.
    pub request_id: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// Why, where the actor gave a reason (an erasure's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One stored event, as an auditor reads it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "position": "1234.56",
    "user_id": "0b7c8a2e-2f4e-4d5b-9b1e-8f4e0c6b2a10",
    "sequence": 4,
    "type": "LoginFailed",
    "version": "2.0",
    "recorded_at": "2026-11-28T21:04:05.12Z",
    "metadata": {"actor": "anonymous", "request_id": "5f0c…", "ip": "203.0.113.7",
                 "user_agent": "curl/8.5.0"},
    "payload": {"LoginFailed": {"factor": "password", "challenge_id": null,
                                "at": "2026-11-28T21:04:05.1Z"}}
}))]
pub struct AuditedEvent {
    /// Its place in the log: resume an export after it with `--after`.
    pub position: String,
    /// The user whose stream it is in.
    pub user_id: String,
    /// Its sequence in the user's stream, from 1.
    pub sequence: u64,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The version it was stored at (the payload below is read in the current shape).
    pub version: String,
    /// When it was committed.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    /// Who caused it, in which request.
    pub metadata: AuditedMetadata,
    /// The event, with every secret replaced by `[redacted]`.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// `logged` as an auditor reads it, through `upcasters`.
pub fn audited(
    logged: LoggedEvent,
    upcasters: &[Box<dyn EventUpcaster>],
) -> Result<AuditedEvent, PersistenceError> {
    let version = logged.event.event_version.clone();
    let event_type = logged.event.event_type.clone();
    let envelope = envelope(logged.event, upcasters)?;
    let metadata = EventMetadata::from_map(&envelope.metadata)
        .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?;
    Ok(AuditedEvent {
        position: logged.checkpoint.to_string(),
        user_id: envelope.aggregate_id,
        sequence: envelope.sequence as u64,
        event_type,
        version,
        recorded_at: logged.recorded_at,
        metadata: AuditedMetadata {
            actor: metadata.actor.to_string(),
            request_id: metadata.request_id,
            ip: metadata.ip,
            user_agent: metadata.user_agent,
            reason: metadata.reason,
        },
        payload: serde_json::to_value(redacted(&envelope.payload))?,
    })
}
