//! The mailer's settings: built from code ([`MailerSettings::new`]) by tests and the API's
//! harness, or from the environment ([`MailerArgs`]) by the `twofold-mailer` binary.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use twofold_nats::Topology;
use zeroize::Zeroizing;

use crate::sender::DEFAULT_FROM;
use crate::transport::{Transport, TransportSpecError};

/// The first retry delay unless configured otherwise.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(2);
/// The longest retry delay unless configured otherwise.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(5 * 60);
/// Jobs one mailer works on at once unless configured otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Everything the mailer needs. Its `Debug` redacts the sealing key.
#[derive(Clone)]
pub struct MailerSettings {
    /// NATS server(s), such as `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// Stream, consumer and bucket names.
    pub topology: Topology,
    /// The raw 32-byte sealing key the API seals codes under.
    pub sealing_key: Zeroizing<[u8; 32]>,
    /// Sealing keys retired by a rotation: jobs sealed under them before it still open.
    pub retired_sealing_keys: Vec<Zeroizing<[u8; 32]>>,
    /// Where emails go.
    pub transport: Transport,
    /// The `From` mailbox.
    pub from: String,
    /// The delay before the first retry; each further retry waits twice as long.
    pub retry_base: Duration,
    /// The longest delay between retries.
    pub retry_max: Duration,
    /// Jobs worked on at once (at least 1).
    pub concurrency: usize,
}

impl MailerSettings {
    /// Settings with the defaults: stdout transport, [`DEFAULT_FROM`], [`DEFAULT_RETRY_BASE`],
    /// [`DEFAULT_RETRY_MAX`] and [`DEFAULT_CONCURRENCY`].
    pub fn new(nats_url: &str, topology: Topology, sealing_key: Zeroizing<[u8; 32]>) -> Self {
        Self {
            nats_url: nats_url.to_owned(),
            topology,
            sealing_key,
            retired_sealing_keys: Vec::new(),
            transport: Transport::Stdout,
            from: DEFAULT_FROM.to_owned(),
            retry_base: DEFAULT_RETRY_BASE,
            retry_max: DEFAULT_RETRY_MAX,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl fmt::Debug for MailerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailerSettings")
            .field("nats_url", &redact_url(&self.nats_url))
            .field("topology", &self.topology)
            .field("sealing_key", &"[redacted]")
            .field(
                "retired_sealing_keys",
                &format!("[{} redacted]", self.retired_sealing_keys.len()),
            )
            .field("transport", &self.transport)
            .field("from", &self.from)
            .field("retry_base", &self.retry_base)
            .field("retry_max", &self.retry_max)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// Hides a password in a URL such as `nats://user:pass@host:4222`.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                format!("{scheme}://{user}:[redacted]@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The command line and environment of the `twofold-mailer` binary.
#[derive(clap::Parser)]
#[command(
    name = "twofold-mailer",
    version,
    about = "Sends Twofold's emails: consumes mail jobs from NATS JetStream."
)]
pub struct MailerArgs {
    /// NATS server URL (required).
    #[arg(long, env = "NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// Prefix of the stream, consumer and bucket names (same as the API's).
    #[arg(long, env = "TWOFOLD_NATS_PREFIX", default_value = "twofold")]
    pub nats_prefix: String,
    /// 32 random bytes, base64: the API's sealing key, which opens the codes in mail jobs
    /// (required).
    #[arg(long, env = "TWOFOLD_SEALING_KEY", hide_env_values = true)]
    pub sealing_key: Option<String>,
    /// The API's retired sealing keys, base64, comma-separated: jobs sealed before a key
    /// rotation still open.
    #[arg(
        long,
        env = "TWOFOLD_SEALING_RETIRED_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub sealing_retired_keys: Vec<String>,
    /// `stdout`, `file:DIR` or `smtp://[user:pass@]host:port[?tls=starttls|tls]`.
    #[arg(
        long,
        env = "TWOFOLD_MAIL_TRANSPORT",
        default_value = "stdout",
        hide_env_values = true
    )]
    pub mail_transport: String,
    /// The From mailbox of emails.
    #[arg(long, env = "TWOFOLD_MAIL_FROM", default_value = DEFAULT_FROM)]
    pub mail_from: String,
    /// Milliseconds before the first retry of a failed email; doubles for each further one.
    #[arg(long, env = "TWOFOLD_MAIL_RETRY_BASE_MS", default_value_t = 2000)]
    pub mail_retry_base_ms: u64,
    /// Emails sent at once.
    #[arg(long, env = "TWOFOLD_MAIL_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub mail_concurrency: usize,
    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "TWOFOLD_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    /// Address of the Prometheus scrape endpoint (e.g. `0.0.0.0:9091`); none when unset.
    #[arg(long, env = "TWOFOLD_MAILER_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// A setting is invalid. Messages name the variable and never repeat a secret.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `NATS_URL` is not set.
    #[error("NATS_URL is required: the NATS server to consume mail jobs from, such as nats://127.0.0.1:4222")]
    NoNatsUrl,
    /// The sealing key is missing, or not base64 of 32 bytes.
    #[error("{0}")]
    SealingKey(String),
    /// The prefix is not usable in NATS names.
    #[error("{0}")]
    Prefix(String),
    /// The transport spec is invalid.
    #[error(transparent)]
    Transport(#[from] TransportSpecError),
    /// Zero concurrency.
    #[error("TWOFOLD_MAIL_CONCURRENCY must be at least 1")]
    Concurrency,
}

impl fmt::Debug for MailerArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailerArgs")
            .field("nats_prefix", &self.nats_prefix)
            .field("log_format", &self.log_format)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl MailerArgs {
    /// Checks the arguments and turns them into settings.
    pub fn into_settings(self) -> Result<MailerSettings, SettingsError> {
        let nats_url = self.nats_url.ok_or(SettingsError::NoNatsUrl)?;
        let sealing_key = Zeroizing::new(self.sealing_key.ok_or_else(|| {
            SettingsError::SealingKey(
                "TWOFOLD_SEALING_KEY is required: the base64 of the API's 32-byte sealing key"
                    .to_owned(),
            )
        })?);
        let topology = Topology::new(&self.nats_prefix).map_err(SettingsError::Prefix)?;
        if self.mail_concurrency == 0 {
            return Err(SettingsError::Concurrency);
        }
        let retired_sealing_keys = self
            .sealing_retired_keys
            .iter()
            .map(|key| {
                parse_sealing_key(key).map_err(|error| {
                    SettingsError::SealingKey(
                        error
                            .to_string()
                            .replace("TWOFOLD_SEALING_KEY", "TWOFOLD_SEALING_RETIRED_KEYS"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MailerSettings {
            retired_sealing_keys,
            transport: Transport::parse(&self.mail_transport)?,
            from: self.mail_from,
            retry_base: Duration::from_millis(self.mail_retry_base_ms),
            concurrency: self.mail_concurrency,
            ..MailerSettings::new(&nats_url, topology, parse_sealing_key(&sealing_key)?)
        })
    }
}

/// Decodes `TWOFOLD_SEALING_KEY`: base64 (standard alphabet) of exactly 32 bytes.
pub fn parse_sealing_key(encoded: &str) -> Result<Zeroizing<[u8; 32]>, SettingsError> {
    let bytes = Zeroizing::new(STANDARD.decode(encoded.trim()).map_err(|_| {
        SettingsError::SealingKey("TWOFOLD_SEALING_KEY is not valid base64".to_owned())
    })?);
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return Err(SettingsError::SealingKey(format!(
            "TWOFOLD_SEALING_KEY must be the base64 of 32 bytes, not of {}",
            bytes.len()
        )));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn args(extra: &[&str]) -> Result<MailerArgs, clap::Error> {
        let mut argv = vec![
            "twofold-mailer",
            "--nats-url",
            "nats://127.0.0.1:4222",
            "--sealing-key",
            KEY,
        ];
        argv.extend_from_slice(extra);
        MailerArgs::try_parse_from(argv)
    }

    #[test]
    fn the_defaults_are_stdout_the_twofold_prefix_and_a_two_second_retry_base() {
        let settings = args(&[]).unwrap().into_settings().unwrap();
        assert_eq!(settings.transport, Transport::Stdout);
        assert_eq!(settings.topology, Topology::new("twofold").unwrap());
        assert_eq!(settings.from, DEFAULT_FROM);
        assert_eq!(settings.retry_base, Duration::from_secs(2));
        assert_eq!(settings.concurrency, DEFAULT_CONCURRENCY);
        let expected: Vec<u8> = (0..32).collect();
        assert_eq!(settings.sealing_key.as_slice(), expected.as_slice());
    }

    #[test]
    fn every_setting_can_be_given() {
        let settings = args(&[
            "--nats-prefix",
            "it-1",
            "--mail-transport",
            "file:/tmp/x",
            "--mail-from",
            "Ops <ops@example.com>",
            "--mail-retry-base-ms",
            "10",
            "--mail-concurrency",
            "2",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(settings.log_format, LogFormat::Json);
        let settings = settings.into_settings().unwrap();
        assert_eq!(settings.topology.stream(), "IT_1_MAIL");
        assert_eq!(settings.transport, Transport::parse("file:/tmp/x").unwrap());
        assert_eq!(settings.from, "Ops <ops@example.com>");
        assert_eq!(settings.retry_base, Duration::from_millis(10));
        assert_eq!(settings.concurrency, 2);
    }

    #[test]
    fn a_bad_sealing_key_is_refused_with_a_message_naming_the_variable() {
        for bad in ["not base64!", "AAECAw=="] {
            let error = args(&[]).map(|mut args| {
                args.sealing_key = Some(bad.to_owned());
                args.into_settings()
            });
            let message = error.unwrap().unwrap_err().to_string();
            assert!(message.contains("TWOFOLD_SEALING_KEY"), "{message}");
            assert!(!message.contains(bad), "{message}");
        }
    }

    #[test]
    fn a_missing_nats_url_or_sealing_key_is_refused_with_a_message_naming_the_variable() {
        let mut no_key = args(&[]).unwrap();
        no_key.sealing_key = None;
        let message = no_key.into_settings().unwrap_err().to_string();
        assert!(
            message.contains("TWOFOLD_SEALING_KEY is required"),
            "{message}"
        );
        let mut no_url = args(&[]).unwrap();
        no_url.nats_url = None;
        let message = no_url.into_settings().unwrap_err().to_string();
        assert!(message.contains("NATS_URL is required"), "{message}");
    }

    #[test]
    fn a_bad_prefix_transport_or_concurrency_is_refused() {
        let prefix = args(&["--nats-prefix", "Bad.Prefix"]).unwrap();
        assert!(matches!(
            prefix.into_settings(),
            Err(SettingsError::Prefix(_))
        ));
        let transport = args(&["--mail-transport", "carrier-pigeon"]).unwrap();
        assert!(matches!(
            transport.into_settings(),
            Err(SettingsError::Transport(_))
        ));
        let concurrency = args(&["--mail-concurrency", "0"]).unwrap();
        assert!(matches!(
            concurrency.into_settings(),
            Err(SettingsError::Concurrency)
        ));
    }

    #[test]
    fn the_debug_of_settings_and_arguments_hides_the_key_and_passwords() {
        let mut settings = args(&[]).unwrap().into_settings().unwrap();
        settings.nats_url = "nats://ada:hunter2@127.0.0.1:4222".to_owned();
        settings.transport = Transport::parse("smtp://ada:hunter3@mail:25").unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter"), "{debug}");
        assert!(debug.contains("sealing_key: \"[redacted]\""), "{debug}");
        assert!(!format!("{:?}", args(&[]).unwrap()).contains(KEY));
    }
}
