//! Publishing a job to JetStream and waiting for the stream's acknowledgement.

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;

use crate::{MailJob, Topology};

/// A job was not acknowledged by JetStream (NATS down, stream missing, timeout).
#[derive(Debug, thiserror::Error)]
#[error("publishing mail job {job_id} failed: {source}")]
pub struct PublishFailed {
    job_id: uuid::Uuid,
    #[source]
    source: async_nats::Error,
}

/// Publishes `job` with `Nats-Msg-Id` set to its id and returns once JetStream has stored it.
pub async fn publish(
    jetstream: &Context,
    topology: &Topology,
    job: &MailJob,
) -> Result<(), PublishFailed> {
    let failed = |source: async_nats::Error| PublishFailed {
        job_id: job.id,
        source,
    };
    let payload = serde_json::to_vec(job).map_err(|error| failed(error.into()))?;
    let message = PublishMessage::build()
        .payload(payload.into())
        .message_id(job.id.to_string());
    jetstream
        .send_publish(topology.subject(&job.mail), message)
        .await
        .map_err(|error| failed(error.into()))?
        .await
        .map_err(|error| failed(error.into()))?;
    Ok(())
}
