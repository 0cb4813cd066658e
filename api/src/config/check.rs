//! Start-up validation: every problem of a configuration is collected, one message each, so an
//! operator fixes them all in one round. Messages name the setting and never repeat a secret.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::HeaderValue;
use secrecy::ExposeSecret;
use twofold_domain::values::Email;

use super::{Config, Environment};
use crate::adapters::SealingKey;
use crate::http::jwt::{JwtKey, Lifetimes};

/// Everything wrong with a configuration, one problem per entry.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigProblems(pub Vec<String>);

impl std::fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigProblems {}

impl ConfigProblems {
    /// Notes the problem of `result`, if any, and returns its value otherwise.
    fn note<T>(&mut self, result: Result<T, String>) -> Option<T> {
        result.map_err(|problem| self.0.push(problem)).ok()
    }
}

/// Keys, either configured or generated for this process only.
pub struct Keys {
    /// Signs tokens.
    pub jwt: JwtKey,
    /// Verify tokens signed before a rotation.
    pub retired_jwt: Vec<JwtKey>,
    /// Seals seeds and keys digests.
    pub sealing: SealingKey,
    /// Open and check what was sealed and digested before a rotation.
    pub retired_sealing: Vec<SealingKey>,
    /// Whether they were generated at start-up (embedded mode).
    pub ephemeral: bool,
}

/// The settings validation turns into the values the service runs with.
pub struct Checked {
    /// Signing and sealing keys.
    pub keys: Keys,
    /// Token lifetimes.
    pub lifetimes: Lifetimes,
    /// Origins allowed by CORS.
    pub cors_origins: Vec<HeaderValue>,
    /// Proxies whose `X-Forwarded-For` counts.
    pub trusted_proxies: Vec<IpAddr>,
    /// The WebAuthn relying party.
    pub webauthn: std::sync::Arc<webauthn_rs::prelude::Webauthn>,
}

impl Config {
    /// Checks every setting that needs no network, collecting all problems. Whether the
    /// database answers is checked by [`crate::startup::validate`].
    pub fn check(&self) -> Result<Checked, ConfigProblems> {
        let mut problems = ConfigProblems::default();
        let keys = self.checked_keys(&mut problems);
        let lifetimes = self.checked_lifetimes(&mut problems);
        let cors_origins =
            problems.note(crate::http::hygiene::parse_origins(&self.http.cors_origins));
        let trusted_proxies = problems.note(crate::http::rate_limit::parse_proxies(
            &self.http.trusted_proxies,
        ));
        let webauthn = problems.note(self.relying_party());
        self.check_stores(&mut problems);
        problems.note(self.admin_emails());
        problems.note(self.nats.topology());
        problems.note(self.http.connections.check());
        problems.note(
            argon2::Params::new(
                self.argon2.memory_kib,
                self.argon2.iterations,
                self.argon2.parallelism,
                None,
            )
            .map_err(|error| format!("TWOFOLD_ARGON2_*: {error}")),
        );
        if !(0..=19).contains(&self.argon2.nice) {
            problems
                .0
                .push("TWOFOLD_HASH_NICE must be between 0 and 19".to_owned());
        }
        if self.argon2.workers == Some(0) {
            problems
                .0
                .push("TWOFOLD_HASH_WORKERS must be at least 1".to_owned());
        }
        match (keys, lifetimes, cors_origins, trusted_proxies, webauthn) {
            (
                Some(keys),
                Some(lifetimes),
                Some(cors_origins),
                Some(trusted_proxies),
                Some(webauthn),
            ) if problems.0.is_empty() => Ok(Checked {
                keys,
                lifetimes,
                cors_origins,
                trusted_proxies,
                webauthn: std::sync::Arc::new(webauthn),
            }),
            _ => Err(problems),
        }
    }

    /// The WebAuthn relying party of `TWOFOLD_WEBAUTHN_RP_ID` and `TWOFOLD_WEBAUTHN_ORIGINS`:
    /// each origin an `http` or `https` URL with no path, whose host is the RP id or a
    /// subdomain of it (a passkey is bound to the RP id, and a browser only lets pages of
    /// that domain use it).
    pub fn relying_party(&self) -> Result<webauthn_rs::prelude::Webauthn, String> {
        let rp_id = self.webauthn.webauthn_rp_id.trim().to_ascii_lowercase();
        if rp_id.is_empty() || rp_id.contains(['/', ':', ' ']) {
            return Err(format!(
                "TWOFOLD_WEBAUTHN_RP_ID: `{rp_id}` is not a domain name (like `example.com`)"
            ));
        }
        let mut origins = Vec::new();
        for origin in self
            .webauthn
            .webauthn_origins
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
        {
            let url = url::Url::parse(origin).map_err(|_| {
                format!(
                    "TWOFOLD_WEBAUTHN_ORIGINS: `{origin}` is not a URL (like `https://{rp_id}`)"
                )
            })?;
            let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
            let on_rp_id = host == rp_id || host.ends_with(&format!(".{rp_id}"));
            if !matches!(url.scheme(), "http" | "https") || !on_rp_id || url.path() != "/" {
                return Err(format!(
                    "TWOFOLD_WEBAUTHN_ORIGINS: `{origin}` must be an http(s) origin whose host \
                     is `{rp_id}` (TWOFOLD_WEBAUTHN_RP_ID) or a subdomain of it"
                ));
            }
            origins.push(url);
        }
        crate::app::passkeys::relying_party(&rp_id, &origins)
    }

    /// The addresses of `TWOFOLD_ADMIN_EMAILS` (blank entries skipped), each a valid address.
    pub fn admin_emails(&self) -> Result<Vec<Email>, String> {
        self.accounts
            .admin_emails
            .iter()
            .map(|address| address.trim())
            .filter(|address| !address.is_empty())
            .map(|address| {
                Email::parse(address).map_err(|_| {
                    format!("TWOFOLD_ADMIN_EMAILS: `{address}` is not a valid email address")
                })
            })
            .collect()
    }

    /// Token lifetimes, after checking none is zero.
    pub fn lifetimes(&self) -> Result<Lifetimes, String> {
        let mut problems = ConfigProblems::default();
        self.checked_lifetimes(&mut problems)
            .ok_or_else(|| problems.to_string())
    }

    /// The configured keys; with no database and no keys, fresh ephemeral ones (outside
    /// production). With a database, keys must be configured so every instance shares them.
    pub fn keys(&self) -> Result<Keys, String> {
        let mut problems = ConfigProblems::default();
        self.checked_keys(&mut problems)
            .ok_or_else(|| problems.to_string())
    }

    fn checked_lifetimes(&self, problems: &mut ConfigProblems) -> Option<Lifetimes> {
        let before = problems.0.len();
        for (name, value) in [
            ("TWOFOLD_ACCESS_TOKEN_TTL", self.lifetimes.access_token_ttl),
            (
                "TWOFOLD_REFRESH_TOKEN_TTL",
                self.lifetimes.refresh_token_ttl,
            ),
            (
                "TWOFOLD_PRE_2FA_TOKEN_TTL",
                self.lifetimes.pre_tfa_token_ttl,
            ),
        ] {
            if value == 0 {
                problems.0.push(format!("{name} must be at least 1 second"));
            }
        }
        (problems.0.len() == before).then(|| Lifetimes {
            access: Duration::from_secs(self.lifetimes.access_token_ttl),
            refresh: Duration::from_secs(self.lifetimes.refresh_token_ttl),
            pre_tfa: Duration::from_secs(self.lifetimes.pre_tfa_token_ttl),
        })
    }

    /// The store settings: a database goes with NATS, and production needs both.
    fn check_stores(&self, problems: &mut ConfigProblems) {
        match (&self.database.url, &self.nats.url) {
            (Some(url), nats) => {
                problems.note(database_target(url.expose_secret()));
                if nats.is_none() {
                    problems.0.push(
                        "with DATABASE_URL set, NATS_URL must be set too: emails leave through \
                         the outbox and NATS JetStream to the mailer (twofold-mailer)"
                            .to_owned(),
                    );
                }
            }
            (None, Some(_)) => problems
                .0
                .push("NATS_URL needs DATABASE_URL: the mail outbox lives in Postgres".to_owned()),
            (None, None) if self.env == Environment::Production => problems.0.push(
                "TWOFOLD_ENV=production refuses the embedded in-memory store: set DATABASE_URL \
                 and NATS_URL"
                    .to_owned(),
            ),
            (None, None) => {
                problems.note(
                    self.mail
                        .transport()
                        .map(drop)
                        .map_err(|error| error.to_string()),
                );
            }
        }
    }

    fn checked_keys(&self, problems: &mut ConfigProblems) -> Option<Keys> {
        let before = problems.0.len();
        let ephemeral = self.jwt.key_file.is_none() && self.sealing.key.is_none();
        if ephemeral && self.env == Environment::Production {
            problems.0.push(
                "TWOFOLD_ENV=production refuses ephemeral keys: set TWOFOLD_JWT_KEY_FILE and \
                 TWOFOLD_SEALING_KEY (`twofold keys generate` makes a pair)"
                    .to_owned(),
            );
        } else if ephemeral && self.database.url.is_some() {
            problems.0.push(
                "with DATABASE_URL set, both TWOFOLD_JWT_KEY_FILE and TWOFOLD_SEALING_KEY must be \
                 set, so that every instance signs and seals with the same keys \
                 (`twofold keys generate` makes a pair)"
                    .to_owned(),
            );
        }
        for (missing, name, other) in [
            (
                self.jwt.key_file.is_none(),
                "TWOFOLD_JWT_KEY_FILE",
                "TWOFOLD_SEALING_KEY",
            ),
            (
                self.sealing.key.is_none(),
                "TWOFOLD_SEALING_KEY",
                "TWOFOLD_JWT_KEY_FILE",
            ),
        ] {
            if missing && !ephemeral {
                problems.0.push(format!(
                    "{name} is not set: it goes with {other}, set both or neither (neither \
                     generates keys for this process only, without a database)"
                ));
            }
        }
        let jwt = match &self.jwt.key_file {
            Some(path) => problems.note(read_jwt_key("TWOFOLD_JWT_KEY_FILE", path)),
            None if ephemeral => problems.note(JwtKey::generate()),
            None => None,
        };
        let retired_jwt: Vec<_> = self
            .jwt
            .retired_key_files
            .iter()
            .map(|path| problems.note(read_jwt_key("TWOFOLD_JWT_RETIRED_KEY_FILES", path)))
            .collect();
        let sealing = match &self.sealing.key {
            Some(key) => problems.note(SealingKey::from_base64(key.expose_secret())),
            None => Some(SealingKey::generate()),
        };
        let retired_sealing: Vec<_> = self
            .sealing
            .retired_keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                problems.note(
                    SealingKey::from_base64(key.expose_secret()).map_err(|error| {
                        format!(
                            "{} (key {} of the list)",
                            error.replace("TWOFOLD_SEALING_KEY", "TWOFOLD_SEALING_RETIRED_KEYS"),
                            index + 1
                        )
                    }),
                )
            })
            .collect();
        let hs256 = self
            .jwt
            .hs256_secret
            .as_ref()
            .map(|secret| problems.note(JwtKey::hs256(secret.expose_secret().as_bytes())));
        if problems.0.len() != before {
            return None;
        }
        let mut keys = Keys {
            jwt: jwt?,
            retired_jwt: retired_jwt.into_iter().collect::<Option<_>>()?,
            sealing: sealing?,
            retired_sealing: retired_sealing.into_iter().collect::<Option<_>>()?,
            ephemeral,
        };
        if let Some(hs256) = hs256 {
            // The EdDSA key, configured or generated, still verifies (it may have signed before).
            let eddsa = std::mem::replace(&mut keys.jwt, hs256?);
            keys.retired_jwt.push(eddsa);
        }
        Some(keys)
    }
}

fn read_jwt_key(setting: &str, path: &std::path::Path) -> Result<JwtKey, String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|error| format!("{setting}: {} cannot be read: {error}", path.display()))?;
    JwtKey::from_pem(&pem).map_err(|error| format!("{setting}: {}: {error}", path.display()))
}

/// Where `DATABASE_URL` points, without its credentials, for messages: `host:port/database`.
pub fn database_target(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url)
        .map_err(|error| format!("DATABASE_URL is not a valid URL: {error}"))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "DATABASE_URL must start with postgres:// or postgresql://, not {}://",
            parsed.scheme()
        ));
    }
    Ok(format!(
        "{}:{}{}",
        parsed.host_str().unwrap_or("localhost"),
        parsed.port().unwrap_or(5432),
        parsed.path()
    ))
}
