//! The mailer's settings: built from code ([`MailerSettings::new`]) by tests and the API's
//! harness, or from the environment ([`MailerArgs`]) by the `twofold-mailer` binary and
//! `twofold mailer`. The NATS settings ([`NatsSettings`]) and the mail settings
//! ([`MailSettings`]) are the API's too: one definition serves both.
//!
//! The mailer holds the mail key only (`TWOFOLD_MAIL_KEY`, derived from the API's sealing key
//! by `twofold keys mail-key`): it can open the codes of mail jobs, and nothing else the API
//! seals. It refuses to start where the API's sealing key is configured.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use twofold_nats::{redact_userinfo, MailKey, NatsSettings, Topology};

use crate::sender::DEFAULT_FROM;
use crate::transport::{Transport, TransportSpecError};

/// The first retry delay unless configured otherwise.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(2);
/// The longest retry delay unless configured otherwise.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(5 * 60);
/// Jobs one mailer works on at once unless configured otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// The settings that hold the API's root sealing keys, which the mailer must not hold.
pub const ROOT_KEY_SETTINGS: [&str; 2] = ["TWOFOLD_SEALING_KEY", "TWOFOLD_SEALING_RETIRED_KEYS"];

/// Everything the mailer needs. Its `Debug` redacts the keys and credentials.
#[derive(Clone)]
pub struct MailerSettings {
    /// NATS server(s), such as `nats://127.0.0.1:4222`.
    pub nats_url: SecretString,
    /// Stream, consumer and bucket names.
    pub topology: Topology,
    /// The key the API seals the codes of mail jobs under.
    pub mail_key: MailKey,
    /// Mail keys of before a sealing-key rotation: jobs sealed under them still open.
    pub retired_mail_keys: Vec<MailKey>,
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
    pub fn new(nats_url: &str, topology: Topology, mail_key: MailKey) -> Self {
        Self {
            nats_url: SecretString::from(nats_url),
            topology,
            mail_key,
            retired_mail_keys: Vec::new(),
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
            .field("nats_url", &redact_userinfo(self.nats_url.expose_secret()))
            .field("topology", &self.topology)
            .field("mail_key", &self.mail_key)
            .field("retired_mail_keys", &self.retired_mail_keys)
            .field("transport", &self.transport)
            .field("from", &self.from)
            .field("retry_base", &self.retry_base)
            .field("retry_max", &self.retry_max)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// Log output format (the API's and the mailer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Where emails go and whom they come from: the mailer's settings, and the API's in its
/// embedded mode (which sends without a mailer).
#[derive(Clone, clap::Args)]
pub struct MailSettings {
    /// Where emails go: `stdout`, `file:DIR` or `smtp://[user:pass@]host:port[?tls=starttls|tls]`.
    /// The API uses it in the embedded mode only; on the real stack the mailer sends.
    #[arg(
        id = "mail_transport",
        long = "mail-transport",
        env = "TWOFOLD_MAIL_TRANSPORT",
        default_value = "stdout",
        hide_env_values = true
    )]
    pub transport: SecretString,
    /// The From mailbox of emails.
    #[arg(id = "mail_from", long = "mail-from", env = "TWOFOLD_MAIL_FROM", default_value = DEFAULT_FROM)]
    pub from: String,
}

impl MailSettings {
    /// The transport the spec names, or why it names none.
    pub fn transport(&self) -> Result<Transport, TransportSpecError> {
        Transport::parse(self.transport.expose_secret())
    }
}

impl fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSettings")
            .field(
                "mail_transport",
                &redact_userinfo(self.transport.expose_secret()),
            )
            .field("mail_from", &self.from)
            .finish()
    }
}

/// The command line and environment of the `twofold-mailer` binary.
#[derive(Debug, clap::Parser)]
#[command(
    name = "twofold-mailer",
    version,
    about = "Sends Twofold's emails: consumes mail jobs from NATS JetStream."
)]
pub struct MailerArgs {
    /// Where NATS is (required) and the prefix of the names.
    #[command(flatten)]
    pub nats: NatsSettings,
    /// 32 random bytes, base64: the key the API seals the codes of mail jobs under, which
    /// `twofold keys mail-key` prints from the API's sealing key (required).
    #[arg(long, env = "TWOFOLD_MAIL_KEY", hide_env_values = true)]
    pub mail_key: Option<SecretString>,
    /// The mail keys of the API's retired sealing keys, base64, comma-separated (also printed
    /// by `twofold keys mail-key`): jobs sealed before a key rotation still open.
    #[arg(
        long,
        env = "TWOFOLD_MAIL_RETIRED_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub mail_retired_keys: Vec<SecretString>,
    /// Where emails go and whom they come from.
    #[command(flatten)]
    pub mail: MailSettings,
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
    /// `TWOFOLD_MAIL_KEY` is not set.
    #[error(
        "TWOFOLD_MAIL_KEY is required: the mail key `twofold keys mail-key` prints from the API's \
         sealing key"
    )]
    NoMailKey,
    /// A mail key is not base64 of 32 bytes.
    #[error("{0}: {1}")]
    MailKey(&'static str, twofold_nats::BadMailKey),
    /// One of the API's root sealing keys is configured where the mailer runs.
    #[error(
        "{0} is set: the mailer needs only the mail key (TWOFOLD_MAIL_KEY, which `twofold keys \
         mail-key` prints) and refuses to hold the API's sealing key; remove it from the mailer's \
         environment"
    )]
    RootKey(&'static str),
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

/// Refuses to go on where the API's sealing key or its retired keys are configured.
pub fn refuse_root_keys(sealing_key: bool, retired_keys: bool) -> Result<(), SettingsError> {
    match [sealing_key, retired_keys] {
        [true, _] => Err(SettingsError::RootKey(ROOT_KEY_SETTINGS[0])),
        [_, true] => Err(SettingsError::RootKey(ROOT_KEY_SETTINGS[1])),
        [false, false] => Ok(()),
    }
}

impl MailerArgs {
    /// Checks the arguments and turns them into settings.
    pub fn into_settings(self) -> Result<MailerSettings, SettingsError> {
        let nats_url = self.nats.url.clone().ok_or(SettingsError::NoNatsUrl)?;
        let mail_key = self.mail_key.ok_or(SettingsError::NoMailKey)?;
        let mail_key = MailKey::parse(mail_key.expose_secret())
            .map_err(|error| SettingsError::MailKey("TWOFOLD_MAIL_KEY", error))?;
        let topology = self.nats.topology().map_err(SettingsError::Prefix)?;
        if self.mail_concurrency == 0 {
            return Err(SettingsError::Concurrency);
        }
        let retired_mail_keys = self
            .mail_retired_keys
            .iter()
            .map(|key| {
                MailKey::parse(key.expose_secret())
                    .map_err(|error| SettingsError::MailKey("TWOFOLD_MAIL_RETIRED_KEYS", error))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MailerSettings {
            nats_url,
            retired_mail_keys,
            transport: self.mail.transport()?,
            from: self.mail.from,
            retry_base: Duration::from_millis(self.mail_retry_base_ms),
            concurrency: self.mail_concurrency,
            ..MailerSettings::new("", topology, mail_key)
        })
    }
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
            "--mail-key",
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
        assert_eq!(settings.mail_key.id(), MailKey::parse(KEY).unwrap().id());
    }

    #[test]
    fn every_setting_can_be_given() {
        let retired = MailKey::derive(&[9u8; 32]);
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
            "--mail-retired-keys",
            &retired.to_base64(),
        ])
        .unwrap();
        assert_eq!(settings.log_format, LogFormat::Json);
        let settings = settings.into_settings().unwrap();
        assert_eq!(settings.topology.stream(), "IT_1_MAIL");
        assert_eq!(settings.transport, Transport::parse("file:/tmp/x").unwrap());
        assert_eq!(settings.from, "Ops <ops@example.com>");
        assert_eq!(settings.retry_base, Duration::from_millis(10));
        assert_eq!(settings.concurrency, 2);
        assert_eq!(settings.retired_mail_keys.len(), 1);
        assert_eq!(settings.retired_mail_keys[0].id(), retired.id());
    }

    #[test]
    fn a_bad_mail_key_is_refused_with_a_message_naming_the_variable() {
        for bad in ["not base64!", "AAECAw=="] {
            let mut with_bad_key = args(&[]).unwrap();
            with_bad_key.mail_key = Some(SecretString::from(bad));
            let message = with_bad_key.into_settings().unwrap_err().to_string();
            assert!(message.contains("TWOFOLD_MAIL_KEY"), "{message}");
            assert!(!message.contains(bad), "{message}");
            let retired = args(&["--mail-retired-keys", bad]).unwrap();
            let message = retired.into_settings().unwrap_err().to_string();
            assert!(message.contains("TWOFOLD_MAIL_RETIRED_KEYS"), "{message}");
        }
    }

    #[test]
    fn a_missing_nats_url_or_mail_key_is_refused_with_a_message_naming_the_variable() {
        let mut no_key = args(&[]).unwrap();
        no_key.mail_key = None;
        let message = no_key.into_settings().unwrap_err().to_string();
        assert!(
            message.contains("TWOFOLD_MAIL_KEY is required"),
            "{message}"
        );
        let mut no_url = args(&[]).unwrap();
        no_url.nats.url = None;
        let message = no_url.into_settings().unwrap_err().to_string();
        assert!(message.contains("NATS_URL is required"), "{message}");
    }

    #[test]
    fn the_root_sealing_keys_are_refused_and_the_sealing_key_flag_is_gone() {
        for (name, configured) in ROOT_KEY_SETTINGS
            .into_iter()
            .zip([[true, false], [false, true]])
        {
            let refusal = refuse_root_keys(configured[0], configured[1]).unwrap_err();
            let message = refusal.to_string();
            assert!(message.starts_with(name), "{message}");
            assert!(message.contains("twofold keys mail-key"), "{message}");
        }
        assert!(refuse_root_keys(false, false).is_ok());
        assert!(args(&["--sealing-key", KEY]).is_err());
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
    fn the_debug_of_settings_and_arguments_hides_the_keys_and_passwords() {
        let mut arguments = args(&["--mail-transport", "smtp://ada:hunter3@mail:25"]).unwrap();
        arguments.nats.url = Some(SecretString::from("nats://ada:hunter1@127.0.0.1:4222"));
        let debug = format!("{arguments:?}");
        assert!(!debug.contains("hunter") && !debug.contains(KEY), "{debug}");
        let mut settings = arguments.into_settings().unwrap();
        settings.nats_url = SecretString::from("nats://ada:hunter2@127.0.0.1:4222");
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter") && !debug.contains(KEY), "{debug}");
        assert!(debug.contains("mail_key: MailKey { id: "), "{debug}");
    }
}
