//! The wire shape of mail jobs and task statuses, defined once for both sides.

use serde::{Deserialize, Serialize};
use twofold_domain::values::{DeviceType, Email, UserId};
use uuid::Uuid;

/// One email to send. Its id is the task id clients poll and the `Nats-Msg-Id` it is
/// published under, so a re-publish is dropped by JetStream's duplicate window.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailJob {
    /// Job id.
    pub id: Uuid,
    /// The user the email is for; only they (or an admin) may see its status.
    pub owner: UserId,
    /// Recipient address.
    pub to: Email,
    /// The request that caused it, linking a log line, a stored event and an email.
    pub request_id: Option<String>,
    /// What to send.
    pub mail: Mail,
}

/// The kinds of email Twofold sends. Codes travel sealed: only the mailer, holding the key,
/// opens them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "template", rename_all = "snake_case")]
pub enum Mail {
    /// The backup codes issued when two-factor authentication is turned on.
    BackupCodes {
        /// The codes, sealed as a JSON array of strings.
        codes: SealedText,
    },
    /// A login code for an email second factor.
    LoginCode {
        /// The code, sealed.
        code: SealedText,
        /// Minutes until it expires.
        valid_minutes: u32,
    },
    /// A confirmation code an email-device user asked for while signed in: it proves the
    /// second factor for a sensitive change or a re-authentication, never a login.
    ConfirmationCode {
        /// The code, sealed.
        code: SealedText,
        /// Minutes until it expires.
        valid_minutes: u32,
    },
    /// A password reset token.
    PasswordReset {
        /// The token, sealed.
        token: SealedText,
        /// Minutes until it expires.
        valid_minutes: u32,
    },
    /// A test email the user asked for.
    Test,
    /// Security notice: two-factor authentication was turned on.
    TfaEnabled {
        /// The device turned on.
        device_type: DeviceType,
    },
    /// Security notice: two-factor authentication was turned off.
    TfaDisabled,
    /// Security notice: the password was changed (`reset` when by a reset token).
    PasswordChanged {
        /// Whether it was a reset rather than a change.
        reset: bool,
    },
    /// Security notice: a backup code was used to log in.
    BackupCodeUsed {
        /// Unused codes left.
        remaining: usize,
    },
    /// Notice: someone tried to sign up with an address that already has an account (sent
    /// when sign-up conceals existing accounts).
    SignUpAttempted,
    /// Security notice: a passkey was added to the account.
    PasskeyAdded,
    /// Security notice: a passkey was removed from the account.
    PasskeyRemoved,
    /// Security notice: a passkey sign-in was refused because the passkey's sign counter went
    /// back: the authenticator may have been copied.
    PasskeyCounterRegressed,
}

impl Mail {
    /// The template name: safe to log, and the last token of the subject.
    pub fn template(&self) -> &'static str {
        match self {
            Self::BackupCodes { .. } => "backup_codes",
            Self::LoginCode { .. } => "login_code",
            Self::ConfirmationCode { .. } => "confirmation_code",
            Self::PasswordReset { .. } => "password_reset",
            Self::Test => "test",
            Self::TfaEnabled { .. } => "tfa_enabled",
            Self::TfaDisabled => "tfa_disabled",
            Self::PasswordChanged { .. } => "password_changed",
            Self::BackupCodeUsed { .. } => "backup_code_used",
            Self::SignUpAttempted => "sign_up_attempted",
            Self::PasskeyAdded => "passkey_added",
            Self::PasskeyRemoved => "passkey_removed",
            Self::PasskeyCounterRegressed => "passkey_counter_regressed",
        }
    }
}

impl std::fmt::Debug for MailJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MailJob(id={}, template={})",
            self.id,
            self.mail.template()
        )
    }
}

/// Secret text sealed with XChaCha20-Poly1305 under the mail key (see [`crate::MailSealer`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedText {
    /// Fingerprint of the key that sealed it.
    pub key_id: String,
    /// Nonce and ciphertext, base64.
    pub ciphertext: String,
}

impl std::fmt::Debug for SealedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedText(key_id={})", self.key_id)
    }
}

/// Task states, with the names of the original service (Celery's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskState {
    /// Queued, not yet handed to a transport.
    Pending,
    /// Handed to the transport.
    Success,
    /// Given up on after the retries (dead-lettered).
    Failure,
}

/// What the mailer records about a job, in the status key-value bucket under the job id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The state.
    pub state: TaskState,
    /// Delivery attempts so far.
    pub attempts: u32,
}
