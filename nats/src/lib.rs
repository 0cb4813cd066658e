//! Message schemas shared by the API (which queues mail) and the mailer (which sends it).
//! Defined once here so both sides agree on the wire shape.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One email to send, with the id its task status is tracked under.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailJob {
    /// Job id; also the task id clients poll.
    pub id: Uuid,
    /// Recipient address.
    pub to: String,
    /// What to send.
    pub mail: Mail,
}

/// The kinds of email Twofold sends.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "template", rename_all = "snake_case")]
pub enum Mail {
    /// The backup codes issued when two-factor authentication is turned on.
    BackupCodes {
        /// The codes, in clear: only the recipient may see them.
        codes: Vec<String>,
    },
    /// A login code for an email second factor.
    LoginCode {
        /// The code, in clear.
        code: String,
        /// Minutes until it expires.
        valid_minutes: u32,
    },
    /// A test email requested by the user.
    Test,
}

impl Mail {
    /// The template name, safe to log.
    pub fn template(&self) -> &'static str {
        match self {
            Self::BackupCodes { .. } => "backup_codes",
            Self::LoginCode { .. } => "login_code",
            Self::Test => "test",
        }
    }
}

impl std::fmt::Debug for MailJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print codes: only the id and template.
        write!(
            f,
            "MailJob(id={}, template={})",
            self.id,
            self.mail.template()
        )
    }
}
