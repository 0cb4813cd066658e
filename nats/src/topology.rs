//! The JetStream streams, consumer and key-value bucket of the mail path, declared in code and
//! created or updated idempotently at start-up. Every name derives from one prefix, so tests
//! (and several deployments on one NATS) never share them.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{kv, Context};

use crate::Mail;

/// A re-publish of the same job id within this window is dropped by JetStream. It must exceed
/// how long a relay can take between publishing and deleting an outbox row.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Jobs nobody consumed are dropped after this.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long the mailer may hold a job before JetStream redelivers it.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// Deliveries of one job before it is dead-lettered.
pub const MAX_DELIVER: i64 = 5;
/// How long task statuses are kept.
pub const STATUS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Names and configuration derived from a prefix such as `twofold`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// Checks the prefix: lower-case letters, digits, `_` and `-` only.
    pub fn new(prefix: &str) -> Result<Self, String> {
        let valid = !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if valid {
            Ok(Self {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(format!(
                "TWOFOLD_NATS_PREFIX must be lower-case letters, digits, `_` or `-`, not `{prefix}`"
            ))
        }
    }

    fn upper(&self) -> String {
        self.prefix.to_ascii_uppercase().replace('-', "_")
    }

    /// The work-queue stream of mail jobs.
    pub fn stream(&self) -> String {
        format!("{}_MAIL", self.upper())
    }

    /// The subject a job is published on: `<prefix>.mail.<template>`.
    pub fn subject(&self, mail: &Mail) -> String {
        format!("{}.mail.{}", self.prefix, mail.template())
    }

    /// The stream of jobs given up on.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_MAIL_DEAD", self.upper())
    }

    /// The subject a dead job is republished on: `<prefix>.mail_dead.<template>`.
    pub fn dead_letter_subject(&self, mail: &Mail) -> String {
        format!("{}.mail_dead.{}", self.prefix, mail.template())
    }

    /// The durable consumer every mailer shares.
    pub fn consumer(&self) -> String {
        format!("{}-mailer", self.prefix)
    }

    /// The key-value bucket of task statuses.
    pub fn status_bucket(&self) -> String {
        format!("{}_MAIL_STATUS", self.upper())
    }

    /// The durable pull consumer: explicit acks, bounded deliveries.
    pub fn consumer_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.consumer()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_deliver: MAX_DELIVER,
            deliver_policy: DeliverPolicy::All,
            filter_subject: format!("{}.mail.>", self.prefix),
            ..Default::default()
        }
    }

    /// Creates or updates the streams and the status bucket ([`declare_stream`]).
    pub async fn declare(&self, jetstream: &Context) -> Result<(), async_nats::Error> {
        declare_stream(
            jetstream,
            Config {
                name: self.stream(),
                subjects: vec![format!("{}.mail.>", self.prefix)],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                max_age: MAX_AGE,
                ..Default::default()
            },
        )
        .await?;
        declare_stream(
            jetstream,
            Config {
                name: self.dead_letter_stream(),
                subjects: vec![format!("{}.mail_dead.>", self.prefix)],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                max_age: MAX_AGE * 4,
                ..Default::default()
            },
        )
        .await?;
        // The status bucket is declared as the stream backing it, in the layout the key-value
        // API uses, because async-nats's `create_key_value` first reads account info in a shape
        // nats-server 2.9 (Debian's) does not send. `get_key_value` then opens it as a bucket.
        let bucket = self.status_bucket();
        declare_stream(
            jetstream,
            Config {
                name: format!("KV_{bucket}"),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age: STATUS_MAX_AGE,
                storage: StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: DiscardPolicy::New,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            },
        )
        .await?;
        Ok(())
    }

    /// The status bucket (declared by [`Topology::declare`]).
    pub async fn status_store(&self, jetstream: &Context) -> Result<kv::Store, async_nats::Error> {
        Ok(jetstream.get_key_value(self.status_bucket()).await?)
    }
}

/// Creates the stream `wanted`, or updates it where it exists with other settings.
///
/// The API and the mailer declare the same streams as they start, often at the same moment.
/// `create_or_update_stream` (an update, then a create when there was nothing to update) let
/// one process's update meet the other's create of the same stream, and nats-server 2.9
/// (Debian's) crashes on that (a nil pointer in `stream.updateWithAdvisory`; two processes
/// declaring one topology in a loop brought it down within about a hundred rounds). Here a
/// stream that exists with the wanted settings gets no update at all, and a create that loses
/// the race to the other process reads the stream that process made.
async fn declare_stream(jetstream: &Context, wanted: Config) -> Result<(), async_nats::Error> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match jetstream.get_stream(&wanted.name).await {
            Ok(stream) => {
                if !same_settings(&stream.cached_info().config, &wanted) {
                    jetstream.update_stream(&wanted).await?;
                }
                return Ok(());
            }
            Err(error) if !is_not_found(error.kind()) => return Err(error.into()),
            Err(_) => match jetstream.create_stream(wanted.clone()).await {
                Ok(_) => return Ok(()),
                // Another process created it meanwhile (or is creating it): read it again.
                Err(_) if attempts < 3 => continue,
                Err(error) => return Err(error.into()),
            },
        }
    }
}

fn is_not_found(kind: GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(error) if error.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Whether the stream as the server reports it (`current`) has the settings [`Topology`]
/// declares (`wanted`). Settings the declaration leaves unset are not compared, except
/// where the server reports the same default back.
fn same_settings(current: &Config, wanted: &Config) -> bool {
    current.subjects == wanted.subjects
        && current.retention == wanted.retention
        && current.storage == wanted.storage
        && current.discard == wanted.discard
        && current.max_age == wanted.max_age
        && current.duplicate_window == wanted.duplicate_window
        && current.allow_rollup == wanted.allow_rollup
        && current.deny_delete == wanted.deny_delete
        && current.allow_direct == wanted.allow_direct
        // 0 is "unset" in a declaration; the server reports an unset limit as -1.
        && (wanted.max_messages_per_subject == 0
            || current.max_messages_per_subject == wanted.max_messages_per_subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_as_the_server_reports_it_has_its_declared_settings_until_one_changes() {
        let declared = Config {
            name: "IT_MAIL".to_owned(),
            subjects: vec!["it.mail.>".to_owned()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: MAX_AGE,
            ..Default::default()
        };
        // The server fills in what the declaration left unset.
        let reported = Config {
            max_messages: -1,
            max_bytes: -1,
            max_messages_per_subject: -1,
            num_replicas: 1,
            ..declared.clone()
        };
        assert!(same_settings(&reported, &declared));

        let older = Config {
            max_age: MAX_AGE / 2,
            ..reported.clone()
        };
        assert!(!same_settings(&older, &declared));
        let one_per_subject = Config {
            max_messages_per_subject: 1,
            ..declared
        };
        assert!(!same_settings(&reported, &one_per_subject));
    }

    #[test]
    fn every_name_derives_from_the_prefix() {
        let topology = Topology::new("it-42").unwrap();
        assert_eq!(topology.stream(), "IT_42_MAIL");
        assert_eq!(topology.subject(&Mail::Test), "it-42.mail.test");
        assert_eq!(
            topology.dead_letter_subject(&Mail::Test),
            "it-42.mail_dead.test"
        );
        assert_eq!(topology.status_bucket(), "IT_42_MAIL_STATUS");
        assert!(Topology::new("Bad.Prefix").is_err());
        assert!(Topology::new("").is_err());
    }
}
