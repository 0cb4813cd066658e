//! Sending one mail job: render it, build a multipart/alternative message (plain text and
//! HTML) with `Message-ID: <JOB-ID@twofold>`, and hand it to the configured transport.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::net::TcpStream;
use twofold_nats::{MailJob, MailSealer};

use crate::templates::{render, RenderError, RenderedEmail};
use crate::transport::{SmtpSpec, SmtpTls, Transport};

/// The `From` of emails unless configured otherwise.
pub const DEFAULT_FROM: &str = "Twofold <twofold@localhost>";

/// How long one SMTP command (connecting included) may take. Well under JetStream's ack wait,
/// so a hung server is a failed attempt rather than a redelivery to another mailer.
const SMTP_COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// A sender could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// `TWOFOLD_MAIL_FROM` is not a mailbox such as `Twofold <twofold@example.com>`.
    #[error("TWOFOLD_MAIL_FROM `{from}` is not a valid mailbox: {reason}")]
    From {
        /// The configured value.
        from: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The `file:` directory cannot be created.
    #[error("cannot create the mail directory {}: {source}", dir.display())]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The SMTP transport cannot be built (for TLS, an invalid host name).
    #[error("cannot set up SMTP to {host}: {reason}")]
    Smtp {
        /// The server.
        host: String,
        /// Why.
        reason: String,
    },
}

/// One email could not be sent. Messages and `Debug` name no address, code or server reply
/// text (which may quote the address), so they are safe to log.
#[derive(thiserror::Error)]
pub enum SendError {
    /// The job cannot be rendered (its sealed codes do not open).
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The recipient address is not a valid email address.
    #[error("the recipient address is invalid")]
    Recipient,
    /// The message cannot be built.
    #[error("cannot build the message: {0}")]
    Build(String),
    /// Writing to standard output or to the mail directory failed.
    #[error("the {transport} transport failed: {reason}")]
    Io {
        /// `stdout` or `file`.
        transport: &'static str,
        /// The I/O error.
        reason: String,
    },
    /// The transport did not finish in time.
    #[error("the transport did not finish within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The SMTP server could not be reached, or refused the message.
    #[error("SMTP delivery failed: {description}")]
    Smtp {
        /// What went wrong, without the server's reply text.
        description: String,
        /// Whether the server refused the message for good (a 5xx reply).
        permanent: bool,
    },
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SendError({self})")
    }
}

impl SendError {
    /// Whether trying again cannot help: the job is then dead-lettered without retries.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Render(_) | Self::Recipient | Self::Build(_) => true,
            Self::Io { .. } | Self::Timeout(_) => false,
            Self::Smtp { permanent, .. } => *permanent,
        }
    }

    fn smtp(error: &lettre::transport::smtp::Error) -> Self {
        // A reply's text may quote the recipient: keep only its code.
        let description = match error.status() {
            Some(code) if error.is_permanent() => format!("permanent error ({code})"),
            Some(code) => format!("transient error ({code})"),
            None => error.to_string(),
        };
        Self::Smtp {
            description,
            permanent: error.is_permanent(),
        }
    }
}

/// Sends mail jobs through one transport, from one address. Cheap to share behind an `Arc`;
/// every SMTP email opens its own connection, so a server that comes up (or back) later is
/// used as soon as it is there.
pub struct Sender {
    from: Mailbox,
    delivery: Delivery,
}

enum Delivery {
    Stdout,
    File {
        dir: PathBuf,
        transport: AsyncFileTransport<Tokio1Executor>,
    },
    Smtp(SmtpServer),
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let delivery = match &self.delivery {
            Delivery::Stdout => "stdout",
            Delivery::File { .. } => "file",
            Delivery::Smtp(_) => "smtp",
        };
        f.debug_struct("Sender")
            .field("from", &self.from.to_string())
            .field("delivery", &delivery)
            .finish()
    }
}

impl Sender {
    /// A sender through `transport` with `from` (such as [`DEFAULT_FROM`]) as the sender. It
    /// creates a `file:` directory now; it does not connect to an SMTP server yet.
    pub fn new(transport: &Transport, from: &str) -> Result<Self, SenderError> {
        let from = from.parse::<Mailbox>().map_err(|error| SenderError::From {
            from: from.to_owned(),
            reason: error.to_string(),
        })?;
        let delivery = match transport {
            Transport::Stdout => Delivery::Stdout,
            Transport::File(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| SenderError::Directory {
                    dir: dir.clone(),
                    source,
                })?;
                Delivery::File {
                    dir: dir.clone(),
                    transport: AsyncFileTransport::new(dir),
                }
            }
            Transport::Smtp(spec) => Delivery::Smtp(SmtpServer::new(spec)?),
        };
        Ok(Self { from, delivery })
    }

    /// Renders `job` (opening its codes with `sealer`) and hands it to the transport. Returns
    /// once the transport has it: written out, or accepted by the SMTP server.
    pub async fn send(&self, job: &MailJob, sealer: &MailSealer) -> Result<(), SendError> {
        let email = render(job, sealer)?;
        let message = self.message(job, &email)?;
        match &self.delivery {
            Delivery::Stdout => {
                let block = stdout_block(job, &self.from, &email);
                tokio::task::spawn_blocking(move || write_stdout(block.as_bytes()))
                    .await
                    .map_err(|error| io_error("stdout", &error))?
                    .map_err(|error| io_error("stdout", &error))
            }
            Delivery::File { dir, transport } => {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|error| io_error("file", &error))?;
                transport
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|error| io_error("file", &error))
            }
            Delivery::Smtp(server) => server.send(&message).await,
        }
    }

    /// The message for `job`: multipart/alternative, plain text then HTML, with the job id in
    /// its `Message-ID` and the id of the request that caused it in `X-Request-Id`.
    fn message(&self, job: &MailJob, email: &RenderedEmail) -> Result<Message, SendError> {
        let to = email
            .to
            .parse::<Mailbox>()
            .map_err(|_| SendError::Recipient)?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(message_id(job)));
        if let Some(request_id) = &job.request_id {
            builder = builder.header(RequestId(request_id.clone()));
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|error| SendError::Build(error.to_string()))
    }
}

/// The `X-Request-Id` header: the request id that is also in the log lines and the stored
/// events of the request that sent the email.
#[derive(Clone)]
struct RequestId(String);

impl Header for RequestId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Request-Id")
    }

    fn parse(value: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(value.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `<JOB-ID@twofold>`: ties an email to its job (and so to its request and events).
pub fn message_id(job: &MailJob) -> String {
    format!("<{}@twofold>", job.id)
}

/// An SMTP server, reached with a connection of its own for each email.
///
/// The connection is opened here rather than by lettre's transport so that it can turn
/// Nagle's algorithm off (`TCP_NODELAY`), which lettre 0.11.23 leaves on. lettre writes a
/// message's body and then its closing `.` in two writes before it waits for the reply; with
/// Nagle on, the short second write waits until the server acknowledges the first, and a
/// server that has nothing to send delays that acknowledgement (40 ms on Linux). Every email
/// took 40 ms longer: the benchmark's SMTP sink saw 41–43 ms between its `354` and the end of
/// the message. With implicit TLS (`?tls=tls`) lettre still opens the connection, since the
/// TLS session must begin before the server's greeting, which lettre reads as it connects.
struct SmtpServer {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    /// The name the mailer greets the server with: this host's name.
    hello: ClientId,
}

/// How an SMTP connection is secured, with how the server's certificate is checked.
enum Security {
    None,
    StartTls(TlsParameters),
    Tls(TlsParameters),
}

impl SmtpServer {
    fn new(spec: &SmtpSpec) -> Result<Self, SenderError> {
        let parameters = || {
            TlsParameters::new(spec.host.clone()).map_err(|error| SenderError::Smtp {
                host: spec.host.clone(),
                reason: error.to_string(),
            })
        };
        let security = match spec.tls {
            SmtpTls::None => Security::None,
            SmtpTls::StartTls => Security::StartTls(parameters()?),
            SmtpTls::Tls => Security::Tls(parameters()?),
        };
        Ok(Self {
            host: spec.host.clone(),
            port: spec.port,
            security,
            credentials: spec.credentials.as_ref().map(|credentials| {
                Credentials::new(credentials.user.clone(), credentials.password.to_string())
            }),
            hello: ClientId::default(),
        })
    }

    /// Connects, greets the server, upgrades with STARTTLS where configured, and logs in.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let server = (self.host.as_str(), self.port);
        let mut connection = match &self.security {
            Security::Tls(parameters) => AsyncSmtpConnection::connect_tokio1(
                server,
                Some(SMTP_COMMAND_TIMEOUT),
                &self.hello,
                Some(parameters.clone()),
                None,
            )
            .await
            .map_err(|error| SendError::smtp(&error))?,
            Security::None | Security::StartTls(_) => {
                let stream = tokio::time::timeout(SMTP_COMMAND_TIMEOUT, TcpStream::connect(server))
                    .await
                    .map_err(|_| SendError::Timeout(SMTP_COMMAND_TIMEOUT))?
                    .and_then(|stream| stream.set_nodelay(true).map(|()| stream))
                    .map_err(|error| SendError::Smtp {
                        description: format!("cannot connect: {error}"),
                        permanent: false,
                    })?;
                let greeted =
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello);
                let mut connection = tokio::time::timeout(SMTP_COMMAND_TIMEOUT, greeted)
                    .await
                    .map_err(|_| SendError::Timeout(SMTP_COMMAND_TIMEOUT))?
                    .map_err(|error| SendError::smtp(&error))?;
                if let Security::StartTls(parameters) = &self.security {
                    connection
                        .starttls(parameters.clone(), &self.hello)
                        .await
                        .map_err(|error| SendError::smtp(&error))?;
                }
                connection
            }
        };
        if let Some(credentials) = &self.credentials {
            connection
                .auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(|error| SendError::smtp(&error))?;
        }
        Ok(connection)
    }

    /// Sends `message` on a connection of its own, then says `QUIT`.
    async fn send(&self, message: &Message) -> Result<(), SendError> {
        let mut connection = self.connect().await?;
        let sent = connection
            .send(message.envelope(), &message.formatted())
            .await;
        connection.abort().await;
        sent.map(|_| ()).map_err(|error| SendError::smtp(&error))
    }
}

fn stdout_block(job: &MailJob, from: &Mailbox, email: &RenderedEmail) -> String {
    let rule = "=".repeat(72);
    format!(
        "{rule}\nFrom: {from}\nTo: {}\nSubject: {}\nMessage-ID: {}\n\n{}{}\n",
        email.to,
        email.subject,
        message_id(job),
        email.text,
        rule,
    )
}

fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

fn io_error(transport: &'static str, error: &dyn std::error::Error) -> SendError {
    SendError::Io {
        transport,
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use twofold_domain::values::{Email, UserId};
    use twofold_nats::{Mail, MailKey};

    use super::*;

    fn job(mail: Mail) -> MailJob {
        job_sealed(|_| mail)
    }

    /// A job whose mail is made knowing the job's id (sealed codes are bound to it).
    fn job_sealed(mail: impl FnOnce(uuid::Uuid) -> Mail) -> MailJob {
        let id = uuid::Uuid::new_v4();
        MailJob {
            id,
            owner: UserId::new_random(),
            to: Email::parse("ada@example.com").unwrap(),
            request_id: None,
            mail: mail(id),
        }
    }

    /// A fresh scratch folder path: if a test fails before removing it, the sweep in
    /// `scripts/test` does.
    fn temp_dir() -> PathBuf {
        twofold_tests::scratch::dir_path("mailer-unit")
    }

    fn read_only_email(dir: &std::path::Path) -> String {
        let files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].extension().unwrap(), "eml");
        std::fs::read_to_string(&files[0]).unwrap()
    }

    #[tokio::test]
    async fn the_file_transport_creates_its_directory_and_writes_one_eml_per_email() {
        let dir = temp_dir().join("nested");
        let sender = Sender::new(&Transport::File(dir.clone()), DEFAULT_FROM).unwrap();
        let sealer = MailSealer::new(MailKey::derive(&[3u8; 32]));
        let codes = vec!["ABCD-EFGH-JKLM-NPQR-STUV-WXYZ".to_owned()];
        let job = job_sealed(|id| Mail::BackupCodes {
            codes: sealer.seal_codes(&codes, "ada@example.com", id),
        });

        sender.send(&job, &sealer).await.unwrap();

        let email = read_only_email(&dir);
        assert!(email.contains(&format!("\r\nMessage-ID: <{}@twofold>\r\n", job.id)));
        assert!(email.contains("\r\nTo: ada@example.com\r\n"));
        assert!(email.contains("From: Twofold <twofold@localhost>\r\n"));
        assert!(email.contains("Subject: Your Twofold backup codes\r\n"));
        assert!(email.contains("Content-Type: multipart/alternative;"));
        assert!(email.contains("Content-Type: text/plain; charset=utf-8"));
        assert!(email.contains("Content-Type: text/html; charset=utf-8"));
        assert!(!email.contains("quoted-printable") && !email.contains("base64"));
        assert!(email.contains("\r\n    ABCD-EFGH-JKLM-NPQR-STUV-WXYZ\r\n"));
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn the_file_transport_recreates_a_directory_removed_after_start_up() {
        let dir = temp_dir();
        let sender = Sender::new(&Transport::File(dir.clone()), "Ops <ops@example.com>").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        let job = job(Mail::Test);
        sender
            .send(&job, &MailSealer::new(MailKey::derive(&[3u8; 32])))
            .await
            .unwrap();

        let email = read_only_email(&dir);
        assert!(email.contains("From: Ops <ops@example.com>\r\n"));
        assert!(email.contains("Subject: Twofold test email\r\n"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_stdout_transport_sends() {
        let sender = Sender::new(&Transport::Stdout, DEFAULT_FROM).unwrap();
        sender
            .send(
                &job(Mail::Test),
                &MailSealer::new(MailKey::derive(&[3u8; 32])),
            )
            .await
            .unwrap();
    }

    #[test]
    fn the_stdout_block_has_from_to_subject_and_the_text_body() {
        let job = job(Mail::Test);
        let sealer = MailSealer::new(MailKey::derive(&[3u8; 32]));
        let email = render(&job, &sealer).unwrap();
        let from: Mailbox = DEFAULT_FROM.parse().unwrap();
        let block = stdout_block(&job, &from, &email);
        assert!(block.contains("\nFrom: Twofold <twofold@localhost>\n"));
        assert!(block.contains("\nTo: ada@example.com\n"));
        assert!(block.contains("\nSubject: Twofold test email\n"));
        assert!(block.contains("email delivery works"));
    }

    #[tokio::test]
    async fn an_invalid_recipient_or_sealed_code_is_a_permanent_failure() {
        let sender = Sender::new(&Transport::Stdout, DEFAULT_FROM).unwrap();
        let sealer = MailSealer::new(MailKey::derive(&[3u8; 32]));
        let mut bad_address = job(Mail::Test);
        // A job arrives as JSON; nothing but its sender vouches for the address.
        bad_address.to = serde_json::from_value(serde_json::json!("not an address")).unwrap();
        let error = sender.send(&bad_address, &sealer).await.unwrap_err();
        assert!(error.is_permanent());
        assert!(!error.to_string().contains("not an address"));

        let other_key = MailSealer::new(MailKey::derive(&[4u8; 32]));
        let sealed = job_sealed(|id| Mail::LoginCode {
            code: other_key.seal("123456", "ada@example.com", id),
            valid_minutes: 5,
        });
        let error = sender.send(&sealed, &sealer).await.unwrap_err();
        assert!(error.is_permanent());
    }

    #[tokio::test]
    async fn an_smtp_server_that_is_not_there_is_a_transient_failure() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let transport = Transport::parse(&format!("smtp://127.0.0.1:{port}")).unwrap();
        let sender = Sender::new(&transport, DEFAULT_FROM).unwrap();
        let error = sender
            .send(
                &job(Mail::Test),
                &MailSealer::new(MailKey::derive(&[3u8; 32])),
            )
            .await
            .unwrap_err();
        assert!(!error.is_permanent(), "{error}");
    }

    #[test]
    fn a_sender_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Sender>();
        shareable::<SendError>();
    }

    #[test]
    fn an_invalid_from_is_refused_at_start_up() {
        let error = Sender::new(&Transport::Stdout, "not a mailbox").unwrap_err();
        assert!(error.to_string().contains("TWOFOLD_MAIL_FROM"));
    }

    #[test]
    fn tls_transports_build_without_connecting() {
        for spec in [
            "smtp://user:pass@mail.example.com?tls=starttls",
            "smtp://mail.example.com?tls=tls",
        ] {
            let transport = Transport::parse(spec).unwrap();
            Sender::new(&transport, DEFAULT_FROM).unwrap();
        }
    }
}
