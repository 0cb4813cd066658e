//! Configuration: command-line flags, environment variables and an optional TOML file (clap),
//! validated at start-up into the settings the service runs with. Secrets are wrapped as soon as
//! they are read and never printed.

mod check;
pub mod database;
mod file;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

pub use check::{database_target, Checked, ConfigProblems, Keys};

use crate::adapters::{Argon2Params, SealingKey};
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
    /// settings (`twofold mailer --help`); the settings above do not apply to it.
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
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Where Twofold runs, and so how strict start-up is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    /// Anything goes that works, including the embedded store with keys generated at start-up.
    Development,
    /// Refuses the embedded in-memory store and ephemeral keys.
    Production,
}

/// Every setting, from flags, environment variables or the configuration file.
#[derive(Clone, Args)]
pub struct Config {
    /// `production` refuses the embedded in-memory store and keys generated at start-up.
    #[arg(long, env = "TWOFOLD_ENV", value_enum, default_value = "development")]
    pub env: Environment,
    /// Address to listen on.
    #[arg(long, env = "TWOFOLD_ADDR", default_value = "127.0.0.1:5555")]
    pub addr: SocketAddr,
    /// Postgres connection URL; without it Twofold runs on an in-memory store.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// NATS server URL (with JetStream); required with DATABASE_URL, since emails leave
    /// through the outbox and JetStream to the mailer.
    #[arg(long, env = "NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// Prefix of every NATS stream, subject, consumer and bucket name.
    #[arg(long, env = "TWOFOLD_NATS_PREFIX", default_value = "twofold")]
    pub nats_prefix: String,
    /// Maximum Postgres connections per instance.
    #[arg(long, env = "TWOFOLD_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// File with the Ed25519 JWT signing key (PKCS#8 PEM). Required with DATABASE_URL.
    #[arg(long, env = "TWOFOLD_JWT_KEY_FILE")]
    pub jwt_key_file: Option<PathBuf>,
    /// Sign tokens with HS256 and this shared secret (at least 32 bytes) instead of EdDSA, for
    /// clients of the original service that verify with a shared secret. Prefer EdDSA.
    #[arg(long, env = "TWOFOLD_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<SecretString>,
    /// Earlier JWT keys (PKCS#8 PEM files, comma-separated) that still verify tokens and stay
    /// in the JWKS until their tokens expire.
    #[arg(long, env = "TWOFOLD_JWT_RETIRED_KEY_FILES", value_delimiter = ',')]
    pub jwt_retired_key_files: Vec<PathBuf>,
    /// 32 random bytes, base64, sealing TOTP seeds and keying code digests. Required with
    /// DATABASE_URL.
    #[arg(long, env = "TWOFOLD_SEALING_KEY", hide_env_values = true)]
    pub sealing_key: Option<SecretString>,
    /// Sealing keys retired by a rotation, base64, comma-separated: they still open what they
    /// sealed and check the digests they keyed until `twofold keys reseal` has moved the seeds.
    #[arg(
        long,
        env = "TWOFOLD_SEALING_RETIRED_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub sealing_retired_keys: Vec<SecretString>,
    /// The `iss` claim of issued tokens.
    #[arg(long, env = "TWOFOLD_JWT_ISSUER", default_value = "twofold")]
    pub jwt_issuer: String,
    /// The `aud` claim of access tokens (refresh and pre-2FA tokens add a suffix).
    #[arg(long, env = "TWOFOLD_JWT_AUDIENCE", default_value = "twofold")]
    pub jwt_audience: String,
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
    /// Issuer shown by authenticator apps.
    #[arg(long, env = "TWOFOLD_TOTP_ISSUER", default_value = "Twofold")]
    pub totp_issuer: String,
    /// Backup codes issued when 2FA is turned on.
    #[arg(long, env = "TWOFOLD_BACKUP_CODES", default_value_t = 5)]
    pub backup_codes: usize,
    /// Argon2id memory cost, KiB.
    #[arg(long, env = "TWOFOLD_ARGON2_MEMORY_KIB", default_value_t = Argon2Params::OWASP_MINIMUM.memory_kib)]
    pub argon2_memory_kib: u32,
    /// Argon2id passes.
    #[arg(long, env = "TWOFOLD_ARGON2_ITERATIONS", default_value_t = Argon2Params::OWASP_MINIMUM.iterations)]
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    #[arg(long, env = "TWOFOLD_ARGON2_PARALLELISM", default_value_t = Argon2Params::OWASP_MINIMUM.parallelism)]
    pub argon2_parallelism: u32,
    /// Password hashing threads (default: one per core).
    #[arg(long, env = "TWOFOLD_HASH_WORKERS")]
    pub hash_workers: Option<usize>,
    /// Password hashes that may wait for a thread before requests get 503.
    #[arg(long, env = "TWOFOLD_HASH_QUEUE", default_value_t = 256)]
    pub hash_queue: usize,
    /// Where emails go in the embedded mode: `stdout`, `file:DIR` or `smtp://…` (on the real
    /// stack the mailer's own setting applies).
    #[arg(
        long,
        env = "TWOFOLD_MAIL_TRANSPORT",
        default_value = "stdout",
        hide_env_values = true
    )]
    pub mail_transport: String,
    /// The From address of emails.
    #[arg(
        long,
        env = "TWOFOLD_MAIL_FROM",
        default_value = "Twofold <twofold@localhost>"
    )]
    pub mail_from: String,
    /// Requests per minute one client address may make to the endpoints callable without a
    /// token (sign-up, login, refresh, password reset, second step); 0 disables the limit.
    #[arg(long, env = "TWOFOLD_IP_RATE_LIMIT", default_value_t = 120)]
    pub ip_rate_limit: u32,
    /// Proxies whose `X-Forwarded-For` names the client (comma-separated IP addresses).
    #[arg(long, env = "TWOFOLD_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// Origins allowed to call the API from a browser (comma-separated); none by default.
    #[arg(long, env = "TWOFOLD_CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,
    /// Log format.
    #[arg(long, env = "TWOFOLD_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    /// How long, in seconds, a stopping service waits for requests in flight to finish.
    #[arg(long, env = "TWOFOLD_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// How sign-up answers an email that already has an account: `conflict` (409, the API
    /// contract) or `conceal` (the answer a new account gets, and a notice to the owner).
    #[arg(
        long,
        env = "TWOFOLD_SIGNUP_EXISTING_EMAIL",
        value_enum,
        default_value = "conflict"
    )]
    pub signup_existing_email: ExistingEmail,

    // Connection limits (issue 11, item 1): owned with the server loop in `crate::serve`.
    /// Timeouts and the connection cap of the HTTP server.
    #[command(flatten)]
    pub connections: crate::serve::ConnectionSettings,
    /// Email addresses (comma-separated) that get the admin role: when they sign up, or at
    /// start-up if their account exists. Recorded as an event with `config` as the actor.
    #[arg(long, env = "TWOFOLD_ADMIN_EMAILS", value_delimiter = ',')]
    pub admin_emails: Vec<String>,
}

/// An RFC 3339 instant, as the audit subcommands take it.
fn parse_instant(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("`{text}` is not an RFC 3339 instant (like 2026-11-28T21:00:00Z)"))
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("env", &self.env)
            .field("addr", &self.addr)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "[redacted]"),
            )
            .field("nats_url", &self.nats_url.as_deref().map(redact_userinfo))
            .field("nats_prefix", &self.nats_prefix)
            .field("database_max_connections", &self.database_max_connections)
            .field("jwt_key_file", &self.jwt_key_file)
            .field("jwt_retired_key_files", &self.jwt_retired_key_files)
            .field(
                "jwt_hs256_secret",
                &self.jwt_hs256_secret.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "sealing_key",
                &self.sealing_key.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "sealing_retired_keys",
                &format!("[{} redacted]", self.sealing_retired_keys.len()),
            )
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field("pre_tfa_token_ttl", &self.pre_tfa_token_ttl)
            .field("refresh_reuse_grace", &self.refresh_reuse_grace)
            .field("reauth_window", &self.reauth_window)
            .field("totp_issuer", &self.totp_issuer)
            .field("backup_codes", &self.backup_codes)
            .field("argon2_memory_kib", &self.argon2_memory_kib)
            .field("argon2_iterations", &self.argon2_iterations)
            .field("argon2_parallelism", &self.argon2_parallelism)
            .field("hash_workers", &self.hash_workers)
            .field("hash_queue", &self.hash_queue)
            .field("mail_transport", &redact_userinfo(&self.mail_transport))
            .field("mail_from", &self.mail_from)
            .field("ip_rate_limit", &self.ip_rate_limit)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("cors_origins", &self.cors_origins)
            .field("log_format", &self.log_format)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("signup_existing_email", &self.signup_existing_email)
            .field("connections", &self.connections)
            .field("admin_emails", &self.admin_emails)
            .finish()
    }
}

/// `smtp://user:pass@host` with the credentials replaced, for logs.
fn redact_userinfo(spec: &str) -> String {
    match (spec.split_once("://"), spec.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://[redacted]{}", &spec[at..]),
        _ => spec.to_owned(),
    }
}

impl Config {
    /// The configuration integration tests use: port 0, cheap Argon2, keys written to (and
    /// emails delivered into) `work_dir`.
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
        Ok(Self {
            env: Environment::Development,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url,
            nats_url,
            nats_prefix: nats_prefix.to_owned(),
            database_max_connections: 20,
            jwt_key_file: Some(jwt_key_file),
            jwt_retired_key_files: Vec::new(),
            jwt_hs256_secret: None,
            sealing_key: Some(SecretString::from(SealingKey::generate().to_base64())),
            sealing_retired_keys: Vec::new(),
            jwt_issuer: "twofold".to_owned(),
            jwt_audience: "twofold".to_owned(),
            access_token_ttl: 1800,
            refresh_token_ttl: 86_400,
            pre_tfa_token_ttl: 300,
            refresh_reuse_grace: 0,
            reauth_window: 300,
            totp_issuer: "Twofold".to_owned(),
            backup_codes: 5,
            argon2_memory_kib: insecure.memory_kib,
            argon2_iterations: insecure.iterations,
            argon2_parallelism: insecure.parallelism,
            hash_workers: Some(2),
            hash_queue: 1024,
            mail_transport: format!("file:{}", work_dir.join("mail").display()),
            mail_from: "Twofold <twofold@localhost>".to_owned(),
            ip_rate_limit: 0,
            trusted_proxies: String::new(),
            cors_origins: String::new(),
            log_format: LogFormat::Pretty,
            shutdown_timeout: 30,
            signup_existing_email: ExistingEmail::Conflict,
            connections: crate::serve::ConnectionSettings::default(),
            admin_emails: Vec::new(),
        })
    }

    /// Argon2id parameters.
    pub fn argon2_params(&self) -> Argon2Params {
        Argon2Params {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_credentials_and_keys() {
        let dir = twofold_tests::scratch::ScratchDir::new("config-debug").unwrap();
        let mut config = Config::for_tests(None, None, "t", &dir).unwrap();
        config.mail_transport = "smtp://mailer:hunter2hunter2@smtp.example:587".to_owned();
        config.nats_url = Some("nats://user:natspass@127.0.0.1:4222".to_owned());
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("natspass"), "{printed}");
        assert!(
            printed.contains("smtp://[redacted]@smtp.example:587"),
            "{printed}"
        );
        let sealing =
            secrecy::ExposeSecret::expose_secret(config.sealing_key.as_ref().unwrap()).to_owned();
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
                "the redacting Debug of Config leaves out `{id}`: add it (redacted if secret)"
            );
        }
    }
}
