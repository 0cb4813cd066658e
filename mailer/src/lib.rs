//! Twofold's mailer: consumes mail jobs from NATS JetStream ([`run`]), renders them from the
//! templates in `templates/` ([`render`]) and sends them over stdout, `.eml` files or SMTP
//! ([`Sender`]). The API uses [`Sender`] directly in its embedded mode.
//!
//! Codes reach the mailer sealed and are opened only while rendering: no log line, error
//! message or `Debug` output of this crate holds a code, an address or an email body.

mod sender;
mod settings;
mod templates;
mod transport;
mod worker;

pub use sender::{message_id, SendError, Sender, SenderError, DEFAULT_FROM};
pub use settings::{
    refuse_root_keys, LogFormat, MailSettings, MailerArgs, MailerSettings, SettingsError,
    DEFAULT_CONCURRENCY, DEFAULT_RETRY_BASE, DEFAULT_RETRY_MAX, ROOT_KEY_SETTINGS,
};
pub use templates::{render, RenderError, RenderedEmail};
pub use transport::{SmtpCredentials, SmtpSpec, SmtpTls, Transport, TransportSpecError};
pub use worker::{retry_delay, run, Mailer, MailerStats, FAILURE_HEADER, UNPARSEABLE};
