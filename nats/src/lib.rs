//! Twofold's mail path over NATS JetStream, shared by the API and the mailer: the message
//! schemas, the sealing of the codes they carry, the streams and consumer (declared in code),
//! the publisher with message-id deduplication, and the transactional outbox with its relay.

mod outbox;
mod publish;
mod schema;
mod seal;
mod settings;
mod topology;

pub use outbox::{enqueue, OutboxRelay};
pub use publish::{publish, PublishFailed};
pub use schema::{Mail, MailJob, SealedText, TaskState, TaskStatus};
pub use seal::{BadMailKey, MailKey, MailSealer, OpenFailed};
pub use settings::{redact_userinfo, NatsSettings};
pub use topology::Topology;
