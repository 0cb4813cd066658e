//! The email templates (`templates/<name>.txt` and `templates/<name>.html`, embedded at build
//! time) and rendering a mail job from them. The first line of a `.txt` template is the
//! subject; `{placeholder}`s are filled in one pass, so a value can never inject another
//! placeholder, and values are HTML-escaped in the HTML part.

use std::fmt;

use twofold_domain::values::DeviceType;
use twofold_nats::{Mail, MailJob, MailSealer, OpenFailed};
use zeroize::{Zeroize, Zeroizing};

/// One template: its plain-text source (subject line first) and its HTML source.
struct Template {
    text: &'static str,
    html: &'static str,
}

macro_rules! template {
    ($name:literal) => {
        Template {
            text: include_str!(concat!("../templates/", $name, ".txt")),
            html: include_str!(concat!("../templates/", $name, ".html")),
        }
    };
}

const BACKUP_CODES: Template = template!("backup_codes");
const LOGIN_CODE: Template = template!("login_code");
const CONFIRMATION_CODE: Template = template!("confirmation_code");
const TEST: Template = template!("test");
const TFA_ENABLED: Template = template!("tfa_enabled");
const BACKUP_CODE_USED: Template = template!("backup_code_used");
const PASSWORD_RESET: Template = template!("password_reset");
const TFA_DISABLED: Template = template!("tfa_disabled");
const PASSWORD_CHANGED: Template = template!("password_changed");
const SIGN_UP_ATTEMPTED: Template = template!("sign_up_attempted");
const PASSKEY_ADDED: Template = template!("passkey_added");
const PASSKEY_REMOVED: Template = template!("passkey_removed");
const PASSKEY_COUNTER_REGRESSED: Template = template!("passkey_counter_regressed");

/// An email ready to send. Its subject and bodies may hold codes: its `Debug` shows only the
/// recipient's domain and the subject's length, and the text is wiped from memory on drop.
pub struct RenderedEmail {
    /// Recipient address.
    pub to: String,
    /// Subject line (a login code's email carries the code in it).
    pub subject: String,
    /// Plain-text body: ASCII, lines under 76 characters.
    pub text: String,
    /// HTML body.
    pub html: String,
}

impl fmt::Debug for RenderedEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = self.to.rsplit_once('@').map_or("?", |(_, domain)| domain);
        f.debug_struct("RenderedEmail")
            .field("to", &format_args!("..@{domain}"))
            .field("subject", &format_args!("[{} chars]", self.subject.len()))
            .field("text", &format_args!("[{} chars]", self.text.len()))
            .field("html", &format_args!("[{} chars]", self.html.len()))
            .finish()
    }
}

impl Drop for RenderedEmail {
    fn drop(&mut self) {
        self.subject.zeroize();
        self.text.zeroize();
        self.html.zeroize();
    }
}

/// A job could not be rendered. Retrying will not help: the job is dead-lettered at once.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A sealed code could not be opened (wrong key, or altered).
    #[error("cannot open the sealed codes of the {template} email: {source}")]
    Sealed {
        /// The template being rendered.
        template: &'static str,
        /// Why opening failed.
        #[source]
        source: OpenFailed,
    },
}

/// Renders `job` from its template, opening its sealed codes with `sealer`. The codes end up
/// only in the returned email: they are never logged.
pub fn render(job: &MailJob, sealer: &MailSealer) -> Result<RenderedEmail, RenderError> {
    let template_name = job.mail.template();
    let sealed = |source| RenderError::Sealed {
        template: template_name,
        source,
    };
    let (template, values) = match &job.mail {
        Mail::BackupCodes { codes } => {
            let codes = sealer
                .open_codes(codes, job.to.as_str(), job.id)
                .map_err(sealed)?;
            let text = Zeroizing::new(
                codes
                    .iter()
                    .map(|code| format!("    {}", ascii_only(code)))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            let html = Zeroizing::new(
                codes
                    .iter()
                    .map(|code| format!("<li><code>{}</code></li>", escape_html(code)))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            (&BACKUP_CODES, vec![Value::prepared("codes", text, html)])
        }
        Mail::LoginCode {
            code,
            valid_minutes,
        }
        | Mail::ConfirmationCode {
            code,
            valid_minutes,
        } => {
            let code = sealer.open(code, job.to.as_str(), job.id).map_err(sealed)?;
            let validity = match valid_minutes {
                1 => "1 minute".to_owned(),
                minutes => format!("{minutes} minutes"),
            };
            let template = match job.mail {
                Mail::ConfirmationCode { .. } => &CONFIRMATION_CODE,
                _ => &LOGIN_CODE,
            };
            (
                template,
                vec![
                    Value::plain("code", &code),
                    Value::plain("validity", &validity),
                ],
            )
        }
        Mail::PasswordReset {
            token,
            valid_minutes,
        } => {
            let token = sealer
                .open(token, job.to.as_str(), job.id)
                .map_err(sealed)?;
            let validity = format!("{valid_minutes} minutes");
            (
                &PASSWORD_RESET,
                vec![
                    Value::plain("token", &token),
                    Value::plain("validity", &validity),
                ],
            )
        }
        Mail::Test => (&TEST, Vec::new()),
        Mail::TfaDisabled => (&TFA_DISABLED, Vec::new()),
        Mail::SignUpAttempted => (&SIGN_UP_ATTEMPTED, Vec::new()),
        Mail::PasskeyAdded => (&PASSKEY_ADDED, Vec::new()),
        Mail::PasskeyRemoved => (&PASSKEY_REMOVED, Vec::new()),
        Mail::PasskeyCounterRegressed => (&PASSKEY_COUNTER_REGRESSED, Vec::new()),
        Mail::PasswordChanged { reset } => {
            let how = if *reset {
                "reset with an emailed token"
            } else {
                "changed"
            };
            (&PASSWORD_CHANGED, vec![Value::plain("how", how)])
        }
        Mail::TfaEnabled { device_type } => {
            let device = match device_type {
                DeviceType::Email => "a code sent to this email address",
                DeviceType::CodeGenerator => "an authenticator app",
            };
            (&TFA_ENABLED, vec![Value::plain("device", device)])
        }
        Mail::BackupCodeUsed { remaining } => {
            let remaining = match remaining {
                0 => "no unused backup codes".to_owned(),
                1 => "1 unused backup code".to_owned(),
                many => format!("{many} unused backup codes"),
            };
            (
                &BACKUP_CODE_USED,
                vec![Value::plain("remaining", &remaining)],
            )
        }
    };
    let text = Zeroizing::new(fill(template.text, &values, Format::Text));
    let (subject, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    let mut html_values = values;
    html_values.push(Value::plain("subject", subject));
    let html = fill(template.html, &html_values, Format::Html);
    Ok(RenderedEmail {
        to: job.to.as_str().to_owned(),
        subject: subject.trim_end().to_owned(),
        text: body.to_owned(),
        html,
    })
}

/// A placeholder's value, in each output format.
struct Value {
    name: &'static str,
    text: Zeroizing<String>,
    html: Zeroizing<String>,
}

impl Value {
    /// A value that is made ASCII for the text part and escaped for the HTML part.
    fn plain(name: &'static str, value: &str) -> Self {
        Self {
            name,
            text: Zeroizing::new(ascii_only(value)),
            html: Zeroizing::new(escape_html(value)),
        }
    }

    /// A value already prepared (and escaped) for each format.
    fn prepared(name: &'static str, text: Zeroizing<String>, html: Zeroizing<String>) -> Self {
        Self { name, text, html }
    }
}

#[derive(Clone, Copy)]
enum Format {
    Text,
    Html,
}

/// Replaces each `{name}` in `template` by its value in one pass; an unknown `{name}` is kept
/// as it is (the unit tests make sure no template has one).
fn fill(template: &str, values: &[Value], format: Format) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let (before, from_brace) = rest.split_at(open);
        out.push_str(before);
        let value = from_brace.find('}').and_then(|close| {
            let name = from_brace.get(1..close)?;
            let value = values.iter().find(|value| value.name == name)?;
            Some((close, value))
        });
        match value {
            Some((close, value)) => {
                out.push_str(match format {
                    Format::Text => &value.text,
                    Format::Html => &value.html,
                });
                rest = from_brace.get(close + 1..).unwrap_or_default();
            }
            None => {
                out.push('{');
                rest = from_brace.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

/// Keeps the plain-text part pure ASCII (so it travels as 7bit and stays greppable): any
/// other character, and any control character, becomes `?`.
fn ascii_only(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Escapes `value` for HTML text and attribute values.
pub(crate) fn escape_html(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use twofold_domain::values::{Email, UserId};
    use twofold_nats::MailKey;

    use super::*;

    const CODES: [&str; 2] = [
        "ABCD-EFGH-JKLM-NPQR-STUV-WXYZ",
        "2345-6789-ABCD-EFGH-JKLM-NPQR",
    ];

    fn sealer() -> MailSealer {
        MailSealer::new(MailKey::derive(&[42u8; 32]))
    }

    fn job(mail: Mail) -> MailJob {
        MailJob {
            id: uuid::Uuid::nil(),
            owner: UserId::from_uuid(uuid::Uuid::nil()),
            to: Email::parse("ada@example.com").unwrap(),
            request_id: Some("req-1".to_owned()),
            mail,
        }
    }

    fn every_mail(sealer: &MailSealer) -> Vec<Mail> {
        let codes: Vec<String> = CODES.iter().map(|code| (*code).to_owned()).collect();
        vec![
            Mail::BackupCodes {
                codes: sealer.seal_codes(&codes, "ada@example.com", uuid::Uuid::nil()),
            },
            Mail::LoginCode {
                code: sealer.seal("123456", "ada@example.com", uuid::Uuid::nil()),
                valid_minutes: 10,
            },
            Mail::PasswordReset {
                token: sealer.seal("a-reset-token", "ada@example.com", uuid::Uuid::nil()),
                valid_minutes: 15,
            },
            Mail::Test,
            Mail::ConfirmationCode {
                code: sealer.seal("424242", "ada@example.com", uuid::Uuid::nil()),
                valid_minutes: 10,
            },
            Mail::TfaDisabled,
            Mail::SignUpAttempted,
            Mail::PasskeyAdded,
            Mail::PasskeyRemoved,
            Mail::PasskeyCounterRegressed,
            Mail::PasswordChanged { reset: true },
            Mail::TfaEnabled {
                device_type: DeviceType::CodeGenerator,
            },
            Mail::BackupCodeUsed { remaining: 3 },
            Mail::TfaEnabled {
                device_type: DeviceType::Email,
            },
            Mail::BackupCodeUsed { remaining: 0 },
            Mail::BackupCodeUsed {
                remaining: usize::MAX,
            },
            Mail::LoginCode {
                code: sealer.seal("123456", "ada@example.com", uuid::Uuid::nil()),
                valid_minutes: u32::MAX,
            },
        ]
    }

    #[test]
    fn every_template_renders_a_subject_a_text_and_an_html_part_with_no_placeholder_left() {
        let sealer = sealer();
        for mail in every_mail(&sealer) {
            let template = mail.template();
            let email = render(&job(mail), &sealer).unwrap();
            assert!(!email.subject.is_empty(), "{template}: empty subject");
            assert!(!email.text.trim().is_empty(), "{template}: empty text");
            assert!(email.html.contains("<html"), "{template}: no html");
            for part in [&email.subject, &email.text, &email.html] {
                assert!(!part.contains('{'), "{template}: placeholder left");
                assert!(!part.contains('}'), "{template}: placeholder left");
            }
            assert_eq!(email.to, "ada@example.com");
        }
    }

    #[test]
    fn the_text_part_is_ascii_with_lines_under_76_characters() {
        let sealer = sealer();
        for mail in every_mail(&sealer) {
            let template = mail.template();
            let email = render(&job(mail), &sealer).unwrap();
            for part in [&email.subject, &email.text, &email.html] {
                assert!(part.is_ascii(), "{template}: not ASCII");
                for line in part.lines() {
                    assert!(line.len() < 76, "{template}: long line `{line}`");
                }
            }
        }
    }

    #[test]
    fn each_backup_code_stands_alone_on_an_indented_line_of_the_text_part() {
        let sealer = sealer();
        let email = render(&job(every_mail(&sealer).remove(0)), &sealer).unwrap();
        assert_eq!(email.subject, "Your Twofold backup codes");
        for code in CODES {
            assert!(email.text.lines().any(|line| line == format!("    {code}")));
            assert!(email
                .html
                .contains(&format!("<li><code>{code}</code></li>")));
            // Only the text part has the code alone on a line.
            assert!(!email.html.lines().any(|line| line.trim() == code));
        }
    }

    #[test]
    fn the_login_code_is_in_the_subject_and_the_body() {
        let sealer = sealer();
        let email = render(&job(every_mail(&sealer).remove(1)), &sealer).unwrap();
        assert_eq!(email.subject, "Your Twofold login code: 123456");
        assert!(email.text.contains("    123456\n"));
        assert!(email.text.contains("expires in 10 minutes"));
        assert!(email.html.contains("123456"));
    }

    #[test]
    fn the_confirmation_code_is_in_the_subject_and_the_body_and_is_not_called_a_login_code() {
        let sealer = sealer();
        let email = render(&job(every_mail(&sealer).remove(4)), &sealer).unwrap();
        assert_eq!(email.subject, "Your Twofold confirmation code: 424242");
        assert!(email.text.contains("    424242\n"));
        assert!(email.text.contains("expires in 10 minutes"));
        assert!(!email.text.contains("log"), "{}", email.text);
        assert!(email.html.contains("424242"));
    }

    #[test]
    fn the_security_notices_say_what_happened_and_what_to_do() {
        let sealer = sealer();
        let enabled = render(
            &job(Mail::TfaEnabled {
                device_type: DeviceType::Email,
            }),
            &sealer,
        )
        .unwrap();
        assert!(enabled.text.contains("turned on"));
        assert!(enabled.text.contains("a code sent to this email address"));
        assert!(enabled.text.contains("If this was not you"));

        let used = render(&job(Mail::BackupCodeUsed { remaining: 1 }), &sealer).unwrap();
        assert!(used.subject.contains("backup code was used"));
        assert!(used.text.contains("1 unused backup code left"));
        let none = render(&job(Mail::BackupCodeUsed { remaining: 0 }), &sealer).unwrap();
        assert!(none.text.contains("no unused backup codes left"));
    }

    #[test]
    fn substituted_values_are_escaped_in_html_and_made_ascii_in_text() {
        let values = [Value::plain("device", "<script>\u{e9}{code}")];
        let html = fill("<p>{device}</p>", &values, Format::Html);
        assert!(html.contains("&lt;script&gt;\u{e9}{code}"));
        assert!(!html.contains("<script>"));
        let text = fill("{device}", &values, Format::Text);
        assert!(text.contains("<script>?{code}"));
    }

    #[test]
    fn a_sealed_code_moved_into_another_job_to_the_same_address_is_a_render_error() {
        let sealer = sealer();
        let first = job(Mail::LoginCode {
            code: sealer.seal("123456", "ada@example.com", uuid::Uuid::nil()),
            valid_minutes: 10,
        });
        assert!(render(&first, &sealer).is_ok());
        let resent = MailJob {
            id: uuid::Uuid::new_v4(),
            ..first
        };
        let error = render(&resent, &sealer).unwrap_err();
        assert!(matches!(error, RenderError::Sealed { .. }));
    }

    #[test]
    fn a_code_sealed_under_another_key_is_a_render_error() {
        let other = MailSealer::new(MailKey::derive(&[1u8; 32]));
        let mail = Mail::LoginCode {
            code: other.seal("123456", "ada@example.com", uuid::Uuid::nil()),
            valid_minutes: 5,
        };
        let error = render(&job(mail), &sealer()).unwrap_err();
        assert!(matches!(error, RenderError::Sealed { .. }));
        assert!(!error.to_string().contains("123456"));
    }

    #[test]
    fn the_debug_of_a_rendered_email_hides_the_address_and_the_bodies() {
        let sealer = sealer();
        let email = render(&job(every_mail(&sealer).remove(1)), &sealer).unwrap();
        let debug = format!("{email:?}");
        assert!(!debug.contains("123456"));
        assert!(!debug.contains("ada@"));
    }
}
