//! Configuration: command-line flags, environment variables and an optional TOML file (clap),
//! validated at start-up into the settings the service runs with. Secrets are wrapped as soon as
//! they are read and never printed.

mod check;
pub mod database;
mod file;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, FromArgMatches, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
pub use twofold_mailer::{LogFormat, MailSettings};
pub use twofold_nats::NatsSettings;

pub use check::{database_target, Checked, ConfigProblems, Keys};

use crate::adapters::{Argon2Params, SealingKey, DEFAULT_NICE_STEPS};
pub use crate::app::ExistingEmail;
use crate::http::jwt::JwtKey;

/// Twofold: password login with JWTs and a second factor, event-sourced.
#[derive(Debug, Parser)]
#[command(name = "twofold", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// A TOML file of settings, keyed by the long flags without `--`; flags and environment
    /// variables override it.
    #[arg(long = "config", env = "TWOFOLD_CONFIG", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub config: Config,
}

/// The subcommands of the `twofold` binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Validate the configuration (and that the database answers) without serving, then print
    /// the effective settings with secrets hidden.
    Check,
    /// Manage users.
    Users {
        /// The user action.
        #[command(subcommand)]
        action: UsersCommand,
    },
    /// Manage keys.
    Keys {
        /// The key action.
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Read the event log back: check that nobody tampered with it.
    Audit {
        /// The audit action.
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Check or rebuild the views (read models) from the event log.
    Views {
        /// The views action.
        #[command(subcommand)]
        action: ViewsCommand,
    },
    /// Run the mailer (the same as the `twofold-mailer` binary, from this one's build): send
    /// the emails of the mail jobs in NATS JetStream until SIGTERM. It takes the mailer's
    /// settings (`twofold mailer --help`), and refuses to run where the sealing key is set.
    #[command(name = "mailer")]
    Mailer(twofold_mailer::MailerArgs),
}

/// `twofold audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// One user's events as a readable timeline (recorded in the user's stream as a read of
    /// their audit trail, with `cli` as the actor).
    History {
        /// The user's email address or id.
        user: String,
        /// Only the events committed up to this instant (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = parse_instant)]
        as_of: Option<time::OffsetDateTime>,
        /// One JSON object per event instead of text (the same objects as `audit export`).
        #[arg(long)]
        json: bool,
    },
    /// Every event in log order as NDJSON on standard output, secrets redacted, for a SIEM or
    /// a data warehouse: resumable after the `position` of the last line printed.
    Export {
        /// Only the events after this position (the `position` of an exported line).
        #[arg(long, value_name = "POSITION")]
        after: Option<String>,
        /// Only the events committed up to this instant (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = parse_instant)]
        until: Option<time::OffsetDateTime>,
    },
    /// Walk every user's chain of events and report each event that was edited, inserted,
    /// deleted or reordered (by user and sequence); exit 1 if there is any.
    Verify {
        /// Also write the log's head (each user's last event and its digest) to this file,
        /// to keep where the database's writers cannot reach it.
        #[arg(long, value_name = "FILE")]
        head_out: Option<PathBuf>,
        /// A head written earlier: report every user whose newest events were removed or
        /// rewritten since.
        #[arg(long, value_name = "FILE")]
        head_in: Option<PathBuf>,
    },
}

/// `twofold views …`
#[derive(Debug, Subcommand)]
pub enum ViewsCommand {
    /// Replay the whole event log into fresh shadow views, print every difference from the live
    /// views (`user <id> view <name> field <field>: live <x> rebuilt <y>`) and the replay speed,
    /// and exit 1 if there is any. With --apply, swap the rebuilt views in instead, atomically,
    /// while the service keeps serving.
    Rebuild {
        /// Replace the live views with the rebuilt ones.
        #[arg(long)]
        apply: bool,
    },
}

/// `twofold users …`
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Give the user with this email the admin role (recorded as an event).
    GrantAdmin {
        /// The user's email address.
        email: String,
    },
    /// Erase a user: every session ends, the address is freed and what identified the person
    /// in the log can no longer be read (recorded as an event, with `cli` as the actor).
    Erase {
        /// The user's id or email address.
        user: String,
        /// Why (recorded in clear with the erasure; at most 200 characters, never the
        /// person's data).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `twofold keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a fresh Ed25519 JWT key (PKCS#8 PEM) and print a fresh sealing key.
    Generate {
        /// Where to write the JWT key.
        #[arg(long, default_value = "twofold-jwt.pem")]
        jwt_key_out: PathBuf,
    },
    /// After a sealing-key rotation, seal every TOTP seed again under TWOFOLD_SEALING_KEY and
    /// report which retired keys (TWOFOLD_SEALING_RETIRED_KEYS) are still needed.
    Reseal,
    /// Print the mailer's keys (TWOFOLD_MAIL_KEY and TWOFOLD_MAIL_RETIRED_KEYS), derived from
    /// TWOFOLD_SEALING_KEY and TWOFOLD_SEALING_RETIRED_KEYS: the mailer holds only these.
    MailKey,
}

/// Where Twofold runs, and so how strict start-up is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    /// Anything goes that works, including the embedded store with keys generated at start-up.
    Development,
    /// Refuses the embedded in-memory store and ephemeral keys.
    Production,
}

/// Every setting, from flags, environment variables or the configuration file, in groups.
/// The flags, variables and file keys are those of the settings themselves: the groups only
/// organise the code.
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// `production` refuses the embedded in-memory store and keys generated at start-up.
    #[arg(long, env = "TWOFOLD_ENV", value_enum, default_value = "development")]
    pub env: Environment,
    /// The HTTP server: address, browsers, proxies, client limits.
    #[command(flatten)]
    pub http: HttpSettings,
    /// The event store and views.
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// NATS JetStream, which emails leave through to the mailer.
    #[command(flatten)]
    pub nats: NatsSettings,
    /// Signing tokens.
    #[command(flatten)]
    pub jwt: JwtSettings,
    /// How long tokens live.
    #[command(flatten)]
    pub lifetimes: LifetimeSettings,
    /// Sealing TOTP seeds and personal data, keying digests.
    #[command(flatten)]
    pub sealing: SealingSettings,
    /// Password hashing.
    #[command(flatten)]
    pub argon2: Argon2Settings,
    /// Emails in the embedded mode.
    #[command(flatten)]
    pub mail: MailSettings,
    /// Accounts: second factor, sign-up, admins.
    #[command(flatten)]
    pub accounts: AccountSettings,
    /// Passkeys: the WebAuthn relying party.
    #[command(flatten)]
    pub webauthn: WebauthnSettings,
    /// Log format.
    #[arg(long, env = "TWOFOLD_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}

/// The HTTP server.
#[derive(Clone, Debug, Args)]
pub struct HttpSettings {
    /// Address to listen on.
    #[arg(long, env = "TWOFOLD_ADDR", default_value = "127.0.0.1:5555")]
    pub addr: SocketAddr,
    /// Origins allowed to call the API from a browser (comma-separated); none by default.
    #[arg(long, env = "TWOFOLD_CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,
    /// Proxies whose `X-Forwarded-For` names the client (comma-separated IP addresses).
    #[arg(long, env = "TWOFOLD_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// Requests per minute one client (an IPv4 address, or the /64 of an IPv6 address) may make
    /// to the endpoints callable without a token (sign-up, login, refresh, password reset,
    /// second step), shared by every instance on one database; 0 disables the limit.
    #[arg(long, env = "TWOFOLD_IP_RATE_LIMIT", default_value_t = 120)]
    pub ip_rate_limit: u32,
    /// How long, in seconds, a stopping service waits for requests in flight to finish.
    #[arg(long, env = "TWOFOLD_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Timeouts and the connection cap of the HTTP server.
    #[command(flatten)]
    pub connections: crate::serve::ConnectionSettings,
}

/// The event store and views.
#[derive(Clone, Debug, Args)]
pub struct DatabaseSettings {
    /// Postgres connection URL; without it Twofold runs on an in-memory store.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub url: Option<SecretString>,
    /// Maximum Postgres connections per instance.
    #[arg(
        long = "database-max-connections",
        env = "TWOFOLD_DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub pool_size: u32,
    /// Seconds a user stays in memory after a command on them, so that the next command
    /// starts without reading the store; 0 (the default) keeps none. Never changes an answer;
    /// bounds how long a user erased on another instance stays in this one's memory.
    #[arg(
        long = "recent-users-ttl",
        env = "TWOFOLD_RECENT_USERS_TTL",
        default_value_t = 0
    )]
    pub recent_users_ttl: u64,
}

/// Signing tokens.
#[derive(Clone, Debug, Args)]
pub struct JwtSettings {
    /// File with the Ed25519 JWT signing key (PKCS#8 PEM). Required with DATABASE_URL.
    #[arg(long = "jwt-key-file", env = "TWOFOLD_JWT_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Sign tokens with HS256 and this shared secret (at least 32 bytes) instead of EdDSA, for
    /// clients of the original service that verify with a shared secret. Prefer EdDSA.
    #[arg(
        long = "jwt-hs256-secret",
        env = "TWOFOLD_JWT_HS256_SECRET",
        hide_env_values = true
    )]
    pub hs256_secret: Option<SecretString>,
    /// Earlier JWT keys (PKCS#8 PEM files, comma-separated) that still verify tokens and stay
    /// in the JWKS until their tokens expire.
    #[arg(
        long = "jwt-retired-key-files",
        env = "TWOFOLD_JWT_RETIRED_KEY_FILES",
        value_delimiter = ','
    )]
    pub retired_key_files: Vec<PathBuf>,
    /// The `iss` claim of issued tokens.
    #[arg(
        long = "jwt-issuer",
        env = "TWOFOLD_JWT_ISSUER",
        default_value = "twofold"
    )]
    pub issuer: String,
    /// The `aud` claim of access tokens (refresh and pre-2FA tokens add a suffix).
    #[arg(
        long = "jwt-audience",
        env = "TWOFOLD_JWT_AUDIENCE",
        default_value = "twofold"
    )]
    pub audience: String,
}

/// How long tokens live, in seconds.
#[derive(Clone, Debug, Args)]
pub struct LifetimeSettings {
    /// Access token lifetime, in seconds.
    #[arg(long, env = "TWOFOLD_ACCESS_TOKEN_TTL", default_value_t = 1800)]
    pub access_token_ttl: u64,
    /// Refresh token lifetime, in seconds.
    #[arg(long, env = "TWOFOLD_REFRESH_TOKEN_TTL", default_value_t = 86_400)]
    pub refresh_token_ttl: u64,
    /// Pre-2FA token lifetime, in seconds.
    #[arg(long, env = "TWOFOLD_PRE_2FA_TOKEN_TTL", default_value_t = 300)]
    pub pre_tfa_token_ttl: u64,
    /// Seconds a rotated refresh token stays acceptable, for clients that refresh twice at
    /// once; after that, presenting it revokes the session.
    #[arg(long, env = "TWOFOLD_REFRESH_REUSE_GRACE", default_value_t = 10)]
    pub refresh_reuse_grace: u64,
    /// Seconds after a full sign-in during which reading the TOTP seed's QR code and ending
    /// other sessions need no proofs; after it they need the password and the second factor.
    /// 0 asks for the proofs every time.
    #[arg(long, env = "TWOFOLD_REAUTH_WINDOW", default_value_t = 300)]
    pub reauth_window: u64,
}

/// Sealing TOTP seeds and personal data, keying digests.
#[derive(Clone, Debug, Args)]
pub struct SealingSettings {
    /// 32 random bytes, base64, sealing TOTP seeds and keying code digests. Required with
    /// DATABASE_URL.
    #[arg(
        long = "sealing-key",
        env = "TWOFOLD_SEALING_KEY",
        hide_env_values = true
    )]
    pub key: Option<SecretString>,
    /// Sealing keys retired by a rotation, base64, comma-separated: they still open what they
    /// sealed and check the digests they keyed until `twofold keys reseal` has moved the seeds.
    #[arg(
        long = "sealing-retired-keys",
        env = "TWOFOLD_SEALING_RETIRED_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub retired_keys: Vec<SecretString>,
}

/// Password hashing: Argon2id's parameters and the pool that runs it.
#[derive(Clone, Debug, Args)]
pub struct Argon2Settings {
    /// Argon2id memory cost, KiB.
    #[arg(long = "argon2-memory-kib", env = "TWOFOLD_ARGON2_MEMORY_KIB", default_value_t = Argon2Params::OWASP_MINIMUM.memory_kib)]
    pub memory_kib: u32,
    /// Argon2id passes.
    #[arg(long = "argon2-iterations", env = "TWOFOLD_ARGON2_ITERATIONS", default_value_t = Argon2Params::OWASP_MINIMUM.iterations)]
    pub iterations: u32,
    /// Argon2id lanes.
    #[arg(long = "argon2-parallelism", env = "TWOFOLD_ARGON2_PARALLELISM", default_value_t = Argon2Params::OWASP_MINIMUM.parallelism)]
    pub parallelism: u32,
    /// Password hashing threads (default: one per core).
    #[arg(long = "hash-workers", env = "TWOFOLD_HASH_WORKERS")]
    pub workers: Option<usize>,
    /// Password hashes that may wait for a thread before requests get 503.
    #[arg(long = "hash-queue", env = "TWOFOLD_HASH_QUEUE", default_value_t = 256)]
    pub queue: usize,
    /// How many steps of nice value the hashing threads run below the rest of the service
    /// (0–19; 0 keeps them level), so that cheap requests are not kept waiting for a core by
    /// a run of logins.
    #[arg(long = "hash-nice", env = "TWOFOLD_HASH_NICE", default_value_t = DEFAULT_NICE_STEPS)]
    pub nice: i32,
}

impl Argon2Settings {
    /// Argon2id parameters.
    pub fn params(&self) -> Argon2Params {
        Argon2Params {
            memory_kib: self.memory_kib,
            iterations: self.iterations,
            parallelism: self.parallelism,
        }
    }
}

/// Accounts: the second factor, sign-up and admins.
#[derive(Clone, Debug, Args)]
pub struct AccountSettings {
    /// Issuer shown by authenticator apps.
    #[arg(long, env = "TWOFOLD_TOTP_ISSUER", default_value = "Twofold")]
    pub totp_issuer: String,
    /// Backup codes issued when 2FA is turned on.
    #[arg(long, env = "TWOFOLD_BACKUP_CODES", default_value_t = 5)]
    pub backup_codes: usize,
    /// How sign-up answers an email that already has an account: `conflict` (409, the API
    /// contract) or `conceal` (the answer a new account gets, and a notice to the owner).
    #[arg(
        long,
        env = "TWOFOLD_SIGNUP_EXISTING_EMAIL",
        value_enum,
        default_value = "conflict"
    )]
    pub signup_existing_email: ExistingEmail,
    /// Email addresses (comma-separated) that get the admin role: when they sign up, or at
    /// start-up if their account exists. Recorded as an event with `config` as the actor.
    #[arg(long, env = "TWOFOLD_ADMIN_EMAILS", value_delimiter = ',')]
    pub admin_emails: Vec<String>,
}

/// Passkeys (WebAuthn): the relying party that passkeys are registered with and signed in to.
#[derive(Clone, Debug, Args)]
pub struct WebauthnSettings {
    /// The relying party id: the domain passkeys are bound to, the host of the pages that
    /// call the WebAuthn API or a parent domain of it. Changing it orphans every passkey.
    #[arg(
        long = "webauthn-rp-id",
        env = "TWOFOLD_WEBAUTHN_RP_ID",
        default_value = "localhost"
    )]
    pub webauthn_rp_id: String,
    /// The origins (comma-separated URLs, scheme, host and port) whose pages may register
    /// and use passkeys; each host is the relying party id or a subdomain of it.
    #[arg(
        long = "webauthn-origins",
        env = "TWOFOLD_WEBAUTHN_ORIGINS",
        default_value = "http://localhost:5555"
    )]
    pub webauthn_origins: String,
}

/// An RFC 3339 instant, as the audit subcommands take it.
fn parse_instant(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("`{text}` is not an RFC 3339 instant (like 2026-11-28T21:00:00Z)"))
}

impl Config {
    /// Every setting at its built-in default, whatever the environment of this process says.
    pub fn defaults() -> Self {
        let command =
            Self::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None));
        let parsed = command
            .try_get_matches_from(["defaults"])
            .and_then(|matches| Self::from_arg_matches(&matches));
        match parsed {
            Ok(config) => config,
            // Every setting has a default or is optional: this cannot fail.
            Err(error) => unreachable!("the built-in defaults do not parse: {error}"),
        }
    }

    /// The configuration integration tests use: the defaults, with port 0, cheap Argon2 on two
    /// threads, keys written to (and emails delivered into) `work_dir`, no rate limit, no
    /// refresh grace.
    pub fn for_tests(
        database_url: Option<String>,
        nats_url: Option<String>,
        nats_prefix: &str,
        work_dir: &std::path::Path,
    ) -> std::io::Result<Self> {
        let insecure = Argon2Params::insecure_for_tests();
        std::fs::create_dir_all(work_dir)?;
        let jwt_key_file = work_dir.join("jwt.pem");
        let pem = JwtKey::generate_pem().map_err(std::io::Error::other)?;
        std::fs::write(&jwt_key_file, pem.as_bytes())?;
        let mut config = Self::defaults();
        config.http.addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.http.ip_rate_limit = 0;
        config.database.url = database_url.map(SecretString::from);
        config.database.pool_size = 20;
        config.nats.url = nats_url.map(SecretString::from);
        nats_prefix.clone_into(&mut config.nats.prefix);
        config.jwt.key_file = Some(jwt_key_file);
        config.sealing.key = Some(SecretString::from(SealingKey::generate().to_base64()));
        config.lifetimes.refresh_reuse_grace = 0;
        config.argon2.memory_kib = insecure.memory_kib;
        config.argon2.iterations = insecure.iterations;
        config.argon2.parallelism = insecure.parallelism;
        config.argon2.workers = Some(2);
        config.argon2.queue = 1024;
        config.mail.transport =
            SecretString::from(format!("file:{}", work_dir.join("mail").display()));
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn debug_output_hides_credentials_and_keys() {
        let dir = twofold_tests::scratch::ScratchDir::new("config-debug").unwrap();
        let mut config = Config::for_tests(None, None, "t", &dir).unwrap();
        config.mail.transport = SecretString::from("smtp://mailer:hunter2hunter2@smtp.example:587");
        config.nats.url = Some(SecretString::from("nats://user:natspass@127.0.0.1:4222"));
        config.database.url = Some(SecretString::from("postgres://app:pgpass@db/twofold"));
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("natspass"), "{printed}");
        assert!(!printed.contains("pgpass"), "{printed}");
        assert!(
            printed.contains("smtp://[redacted]@smtp.example:587"),
            "{printed}"
        );
        let sealing = config
            .sealing
            .key
            .as_ref()
            .unwrap()
            .expose_secret()
            .to_owned();
        assert!(!printed.contains(&sealing), "{printed}");
    }

    #[test]
    fn debug_output_names_every_setting() {
        use clap::CommandFactory;
        let dir = twofold_tests::scratch::ScratchDir::new("config-debug").unwrap();
        let config = Config::for_tests(None, None, "t", &dir).unwrap();
        let printed = format!("{config:?}");
        let command = Cli::command();
        let settings: Vec<_> = command
            .get_arguments()
            .map(|arg| arg.get_id().as_str())
            .filter(|id| !["config_file", "help", "version"].contains(id))
            .collect();
        assert!(settings.len() > 30, "{settings:?}");
        for id in settings {
            assert!(
                printed.contains(&format!(" {id}: ")),
                "the Debug of Config leaves out `{id}`: add it (redacted if secret)"
            );
        }
    }

    #[test]
    fn the_defaults_are_the_built_in_ones_whatever_the_environment() {
        let defaults = Config::defaults();
        assert_eq!(defaults.http.addr, SocketAddr::from(([127, 0, 0, 1], 5555)));
        assert_eq!(defaults.lifetimes.access_token_ttl, 1800);
        // No users kept after a command unless asked for (README, "Configuration").
        assert_eq!(defaults.database.recent_users_ttl, 0);
        assert_eq!(defaults.argon2.params(), Argon2Params::OWASP_MINIMUM);
        assert_eq!(defaults.nats.prefix, "twofold");
        assert_eq!(defaults.mail.from, twofold_mailer::DEFAULT_FROM);
        assert!(defaults.database.url.is_none() && defaults.sealing.key.is_none());
    }
}
