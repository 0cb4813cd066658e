//! Where emails go, as configured by one spec string (`TWOFOLD_MAIL_TRANSPORT`): `stdout`,
//! `file:DIR` or `smtp://[user:pass@]host:port[?tls=starttls|tls]`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use zeroize::Zeroizing;

/// A parsed transport spec. Its `Display` is the spec without credentials, safe to log.
#[derive(Clone, PartialEq, Eq)]
pub enum Transport {
    /// A readable block (From, To, Subject and the text body) on standard output, for
    /// development.
    Stdout,
    /// One `.eml` file per email in this directory, created if missing.
    File(PathBuf),
    /// An SMTP server, with a new connection for every email.
    Smtp(SmtpSpec),
}

/// How to reach an SMTP server.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSpec {
    /// Host name or IP address.
    pub host: String,
    /// Port (by default 25 without TLS, 587 with STARTTLS, 465 with TLS).
    pub port: u16,
    /// Transport security.
    pub tls: SmtpTls,
    /// Login, if the server wants one.
    pub credentials: Option<SmtpCredentials>,
}

/// Transport security of an SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text: only for a relay on the same host or a trusted network (`smtp://host:port`).
    None,
    /// Plain connection upgraded with STARTTLS, which is required (`?tls=starttls`).
    StartTls,
    /// TLS from the first byte, "SMTPS" (`?tls=tls`).
    Tls,
}

/// SMTP login. The password is wiped on drop and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpCredentials {
    /// User name, percent-decoded from the URL.
    pub user: String,
    /// Password, percent-decoded from the URL.
    pub password: Zeroizing<String>,
}

impl fmt::Debug for SmtpCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpCredentials")
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// A transport spec that cannot be used. Messages never repeat a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportSpecError {
    /// Not one of the known forms.
    #[error(
        "TWOFOLD_MAIL_TRANSPORT must be `stdout`, `file:DIR` or \
         `smtp://[user:pass@]host:port[?tls=starttls|tls]`, not `{0}`"
    )]
    Unknown(String),
    /// `file:` without a directory.
    #[error("TWOFOLD_MAIL_TRANSPORT `file:DIR` needs a directory")]
    NoDirectory,
    /// The SMTP URL does not parse.
    #[error("TWOFOLD_MAIL_TRANSPORT is not a valid smtp:// URL: {0}")]
    InvalidUrl(String),
    /// No host in the SMTP URL.
    #[error("TWOFOLD_MAIL_TRANSPORT smtp:// URL has no host")]
    NoHost,
    /// A `tls` value other than `starttls` or `tls`.
    #[error("TWOFOLD_MAIL_TRANSPORT tls must be `starttls` or `tls`, not `{0}`")]
    Tls(String),
    /// A query parameter other than `tls`, or `tls` given twice.
    #[error("TWOFOLD_MAIL_TRANSPORT smtp:// URL has an unexpected parameter `{0}`")]
    Parameter(String),
    /// A path or fragment after the port.
    #[error("TWOFOLD_MAIL_TRANSPORT smtp:// URL must end after the port and the parameters")]
    Path,
    /// A user without a password or the reverse.
    #[error("TWOFOLD_MAIL_TRANSPORT smtp:// URL needs both a user and a password, or neither")]
    Credentials,
    /// A `%` escape in the user or password that is not valid percent-encoded UTF-8.
    #[error("TWOFOLD_MAIL_TRANSPORT smtp:// URL has an invalid %-escape in its credentials")]
    PercentEncoding,
}

impl Transport {
    /// Parses a transport spec.
    pub fn parse(spec: &str) -> Result<Self, TransportSpecError> {
        let spec = spec.trim();
        if spec == "stdout" {
            return Ok(Self::Stdout);
        }
        if let Some(dir) = spec.strip_prefix("file:") {
            if dir.is_empty() {
                return Err(TransportSpecError::NoDirectory);
            }
            return Ok(Self::File(PathBuf::from(dir)));
        }
        if spec.starts_with("smtp://") {
            return parse_smtp(spec).map(Self::Smtp);
        }
        // Only the scheme is repeated: the rest could hold a password.
        let scheme = spec.split_once(':').map_or(spec, |(scheme, _)| scheme);
        Err(TransportSpecError::Unknown(scheme.to_owned()))
    }
}

impl FromStr for Transport {
    type Err = TransportSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        Self::parse(spec)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::File(dir) => write!(f, "file:{}", dir.display()),
            Self::Smtp(smtp) => {
                f.write_str("smtp://")?;
                if let Some(credentials) = &smtp.credentials {
                    write!(f, "{}:[redacted]@", credentials.user)?;
                }
                if smtp.host.contains(':') {
                    write!(f, "[{}]:{}", smtp.host, smtp.port)?;
                } else {
                    write!(f, "{}:{}", smtp.host, smtp.port)?;
                }
                match smtp.tls {
                    SmtpTls::None => Ok(()),
                    SmtpTls::StartTls => f.write_str("?tls=starttls"),
                    SmtpTls::Tls => f.write_str("?tls=tls"),
                }
            }
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Transport({self})")
    }
}

impl fmt::Debug for SmtpSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSpec")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("credentials", &self.credentials)
            .finish()
    }
}

fn parse_smtp(spec: &str) -> Result<SmtpSpec, TransportSpecError> {
    let url = url::Url::parse(spec).map_err(|error| {
        // `url`'s messages never quote the input.
        TransportSpecError::InvalidUrl(error.to_string())
    })?;
    let host = match url.host() {
        Some(url::Host::Domain(domain)) if !domain.is_empty() => domain.to_owned(),
        Some(url::Host::Ipv4(address)) => address.to_string(),
        Some(url::Host::Ipv6(address)) => address.to_string(),
        _ => return Err(TransportSpecError::NoHost),
    };
    if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
        return Err(TransportSpecError::Path);
    }
    let mut tls = None;
    for (name, value) in url.query_pairs() {
        if name != "tls" || tls.is_some() {
            return Err(TransportSpecError::Parameter(name.into_owned()));
        }
        tls = Some(match value.as_ref() {
            "starttls" => SmtpTls::StartTls,
            "tls" => SmtpTls::Tls,
            other => return Err(TransportSpecError::Tls(other.to_owned())),
        });
    }
    let tls = tls.unwrap_or(SmtpTls::None);
    let port = url.port().unwrap_or(match tls {
        SmtpTls::None => 25,
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
    });
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        ("", Some(_)) | (_, None) => return Err(TransportSpecError::Credentials),
        (user, Some(password)) => Some(SmtpCredentials {
            user: percent_decode(user)?.to_string(),
            password: percent_decode(password)?,
        }),
    };
    Ok(SmtpSpec {
        host,
        port,
        tls,
        credentials,
    })
}

/// Decodes `%XX` escapes (the URL keeps the user and password encoded).
fn percent_decode(encoded: &str) -> Result<Zeroizing<String>, TransportSpecError> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(encoded.len()));
    let mut rest = encoded.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail
                .get(..2)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or(TransportSpecError::PercentEncoding)?;
            bytes.push(hex);
            rest = tail.get(2..).unwrap_or_default();
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    std::str::from_utf8(&bytes)
        .map(|decoded| Zeroizing::new(decoded.to_owned()))
        .map_err(|_| TransportSpecError::PercentEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(spec: &str) -> SmtpSpec {
        match Transport::parse(spec) {
            Ok(Transport::Smtp(smtp)) => smtp,
            other => panic!("{spec} parsed as {other:?}"),
        }
    }

    #[test]
    fn stdout_and_file_specs_parse() {
        assert_eq!(Transport::parse("stdout"), Ok(Transport::Stdout));
        assert_eq!(
            Transport::parse("file:/tmp/mail"),
            Ok(Transport::File(PathBuf::from("/tmp/mail")))
        );
        assert_eq!(
            "file:relative/dir".parse::<Transport>(),
            Ok(Transport::File(PathBuf::from("relative/dir")))
        );
        assert_eq!(
            Transport::parse("file:"),
            Err(TransportSpecError::NoDirectory)
        );
    }

    #[test]
    fn a_plain_smtp_url_has_no_tls_and_no_credentials() {
        let spec = smtp("smtp://127.0.0.1:2525");
        assert_eq!(spec.host, "127.0.0.1");
        assert_eq!(spec.port, 2525);
        assert_eq!(spec.tls, SmtpTls::None);
        assert_eq!(spec.credentials, None);
        assert_eq!(smtp("smtp://mail.example.com").port, 25);
        assert_eq!(smtp("smtp://[::1]:25").host, "::1");
    }

    #[test]
    fn the_tls_parameter_chooses_starttls_or_tls_with_their_default_ports() {
        let starttls = smtp("smtp://mail.example.com?tls=starttls");
        assert_eq!((starttls.tls, starttls.port), (SmtpTls::StartTls, 587));
        let tls = smtp("smtp://mail.example.com?tls=tls");
        assert_eq!((tls.tls, tls.port), (SmtpTls::Tls, 465));
        assert_eq!(smtp("smtp://mail.example.com:2465?tls=tls").port, 2465);
    }

    #[test]
    fn smtp_credentials_are_percent_decoded() {
        let spec = smtp("smtp://ada%40example.com:p%3As%2Fs%20w%C3%B6rd@mail.example.com:587");
        let credentials = spec.credentials.unwrap();
        assert_eq!(credentials.user, "ada@example.com");
        assert_eq!(credentials.password.as_str(), "p:s/s w\u{f6}rd");
    }

    #[test]
    fn the_password_is_never_displayed_nor_debugged() {
        let transport = Transport::parse("smtp://ada:hunter2@mail.example.com:25").unwrap();
        assert_eq!(
            transport.to_string(),
            "smtp://ada:[redacted]@mail.example.com:25"
        );
        assert!(!format!("{transport:?}").contains("hunter2"));
        let Transport::Smtp(spec) = transport else {
            panic!("not smtp")
        };
        assert!(!format!("{spec:?}").contains("hunter2"));
        let ipv6 = Transport::Smtp(smtp("smtp://[::1]:2525?tls=starttls"));
        assert_eq!(ipv6.to_string(), "smtp://[::1]:2525?tls=starttls");
    }

    #[test]
    fn malformed_specs_are_refused_with_a_reason() {
        let cases = [
            ("smtp", TransportSpecError::Unknown("smtp".to_owned())),
            ("", TransportSpecError::Unknown(String::new())),
            (
                "http://ada:secret@host",
                TransportSpecError::Unknown("http".to_owned()),
            ),
            ("smtp://", TransportSpecError::NoHost),
            (
                "smtp://host:25?tls=ssl",
                TransportSpecError::Tls("ssl".to_owned()),
            ),
            (
                "smtp://host:25?tls=tls&tls=tls",
                TransportSpecError::Parameter("tls".to_owned()),
            ),
            (
                "smtp://host:25?pool=1",
                TransportSpecError::Parameter("pool".to_owned()),
            ),
            ("smtp://host:25/ehlo", TransportSpecError::Path),
            ("smtp://ada@host:25", TransportSpecError::Credentials),
            ("smtp://:secret@host:25", TransportSpecError::Credentials),
            (
                "smtp://ada:bad%zz@host:25",
                TransportSpecError::PercentEncoding,
            ),
            (
                "smtp://ada:%ff@host:25",
                TransportSpecError::PercentEncoding,
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(Transport::parse(spec), Err(expected), "{spec}");
        }
        assert!(matches!(
            Transport::parse("smtp://host:99999"),
            Err(TransportSpecError::InvalidUrl(_))
        ));
        let error = Transport::parse("ftp://ada:secret@host").unwrap_err();
        assert!(!error.to_string().contains("secret"));
    }
}
