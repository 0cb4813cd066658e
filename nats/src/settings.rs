//! The NATS settings the API and the mailer share: one definition of their flags, environment
//! variables and defaults. The server URL is kept secret, since it may carry a password.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::Topology;

/// Where NATS is, and the prefix of every name Twofold uses in it.
#[derive(Clone, clap::Args)]
pub struct NatsSettings {
    /// NATS server URL (with JetStream), such as `nats://127.0.0.1:4222`. The API needs it
    /// with DATABASE_URL (emails leave through the outbox and JetStream); the mailer always.
    #[arg(
        id = "nats_url",
        long = "nats-url",
        env = "NATS_URL",
        hide_env_values = true
    )]
    pub url: Option<SecretString>,
    /// Prefix of every NATS stream, subject, consumer and bucket name (the API's and the
    /// mailer's must be the same).
    #[arg(
        id = "nats_prefix",
        long = "nats-prefix",
        env = "TWOFOLD_NATS_PREFIX",
        default_value = "twofold"
    )]
    pub prefix: String,
}

impl NatsSettings {
    /// The streams, consumer and bucket the prefix names, or why the prefix is unusable.
    pub fn topology(&self) -> Result<Topology, String> {
        Topology::new(&self.prefix)
    }
}

impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSettings")
            .field(
                "nats_url",
                &self
                    .url
                    .as_ref()
                    .map(|url| redact_userinfo(url.expose_secret())),
            )
            .field("nats_prefix", &self.prefix)
            .finish()
    }
}

/// A URL such as `smtp://user:pass@host:587` with its credentials replaced, for logs and
/// `Debug`: `smtp://[redacted]@host:587`. Text without credentials is returned as it is.
pub fn redact_userinfo(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://[redacted]{}", &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_and_the_host_is_kept() {
        assert_eq!(
            redact_userinfo("nats://ada:hunter2@127.0.0.1:4222"),
            "nats://[redacted]@127.0.0.1:4222"
        );
        assert_eq!(
            redact_userinfo("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        let settings = NatsSettings {
            url: Some(SecretString::from("nats://ada:hunter2@nats:4222")),
            prefix: "twofold".to_owned(),
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("[redacted]@nats:4222"), "{debug}");
    }
}
