//! Renders mail jobs from the templates in `templates/` and hands them to a transport.

use std::io::Write;
use std::path::PathBuf;

use twofold_nats::{Mail, MailJob};

const BACKUP_CODES: &str = include_str!("../templates/backup_codes.txt");
const LOGIN_CODE: &str = include_str!("../templates/login_code.txt");
const TEST: &str = include_str!("../templates/test.txt");

/// An email ready to send. Its body may hold codes: never log it.
pub struct RenderedEmail {
    /// Recipient.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
}

/// Renders `job` from its template: the first line of a template is the subject.
pub fn render(job: &MailJob) -> RenderedEmail {
    let filled = match &job.mail {
        Mail::BackupCodes { codes } => {
            let list: Vec<String> = codes.iter().map(|code| format!("    {code}")).collect();
            BACKUP_CODES.replace("{codes}", &list.join("\n"))
        }
        Mail::LoginCode {
            code,
            valid_minutes,
        } => LOGIN_CODE
            .replace("{code}", code)
            .replace("{valid_minutes}", &valid_minutes.to_string()),
        Mail::Test => TEST.to_owned(),
    };
    let (subject, text) = filled.split_once('\n').unwrap_or((filled.as_str(), ""));
    RenderedEmail {
        to: job.to.clone(),
        subject: subject.to_owned(),
        text: text.to_owned(),
    }
}

/// Where rendered emails go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A readable block on standard output, like the original service.
    Stdout,
    /// One `.eml` file per email in a directory.
    Directory(PathBuf),
}

/// A transport could not take an email.
#[derive(Debug, thiserror::Error)]
#[error("the {transport} transport failed: {source}")]
pub struct DeliveryError {
    transport: &'static str,
    #[source]
    source: std::io::Error,
}

impl Transport {
    /// Parses `stdout` or `file:DIR`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        match spec.split_once(':') {
            None if spec == "stdout" => Ok(Self::Stdout),
            Some(("file", dir)) if !dir.is_empty() => Ok(Self::Directory(PathBuf::from(dir))),
            _ => Err(format!(
                "TWOFOLD_MAIL_TRANSPORT must be `stdout` or `file:DIR`, not `{spec}`"
            )),
        }
    }

    /// Sends one email. Blocking: call it off the async runtime.
    pub fn deliver(
        &self,
        id: uuid::Uuid,
        from: &str,
        email: &RenderedEmail,
    ) -> Result<(), DeliveryError> {
        match self {
            Self::Stdout => {
                let block = format!(
                    "\n======================== email {id} ========================\n\
                     From: {from}\nTo: {}\nSubject: {}\n\n{}\
                     ==============================================================================\n",
                    email.to, email.subject, email.text
                );
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(block.as_bytes())
                    .and_then(|()| stdout.flush())
                    .map_err(|source| DeliveryError {
                        transport: "stdout",
                        source,
                    })
            }
            Self::Directory(dir) => {
                let message = format!(
                    "Message-ID: <{id}@twofold>\r\nFrom: {from}\r\nTo: {}\r\nSubject: {}\r\n\
                     Content-Type: text/plain; charset=utf-8\r\n\r\n{}",
                    email.to,
                    email.subject,
                    email.text.replace('\n', "\r\n")
                );
                std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::write(dir.join(format!("{id}.eml")), message))
                    .map_err(|source| DeliveryError {
                        transport: "file",
                        source,
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(mail: Mail) -> MailJob {
        MailJob {
            id: uuid::Uuid::nil(),
            to: "ada@example.com".to_owned(),
            mail,
        }
    }

    #[test]
    fn every_template_renders_a_subject_and_fills_every_placeholder() {
        for mail in [
            Mail::BackupCodes {
                codes: vec!["AAAA-BBBB".to_owned(), "CCCC-DDDD".to_owned()],
            },
            Mail::LoginCode {
                code: "123456".to_owned(),
                valid_minutes: 10,
            },
            Mail::Test,
        ] {
            let email = render(&job(mail));
            assert!(!email.subject.is_empty());
            assert!(!email.text.contains('{'), "{}", email.text);
        }
        let codes = render(&job(Mail::BackupCodes {
            codes: vec!["AAAA-BBBB".to_owned()],
        }));
        assert!(codes.text.contains("AAAA-BBBB"));
    }

    #[test]
    fn transports_parse_from_their_spec() {
        assert_eq!(Transport::parse("stdout"), Ok(Transport::Stdout));
        assert_eq!(
            Transport::parse("file:/tmp/mail"),
            Ok(Transport::Directory(PathBuf::from("/tmp/mail")))
        );
        assert!(Transport::parse("smtp").is_err());
        assert!(Transport::parse("file:").is_err());
    }

    #[test]
    fn the_file_transport_writes_one_eml_per_email() {
        let dir = std::env::temp_dir().join(format!("twofold-mail-{}", uuid::Uuid::new_v4()));
        let transport = Transport::Directory(dir.clone());
        let email = render(&job(Mail::Test));
        transport
            .deliver(uuid::Uuid::nil(), "twofold@localhost", &email)
            .unwrap();
        let written =
            std::fs::read_to_string(dir.join(format!("{}.eml", uuid::Uuid::nil()))).unwrap();
        assert!(written.contains("To: ada@example.com\r\n"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
