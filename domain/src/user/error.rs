//! Why a `User` command was refused. Each variant has a stable code clients can rely on.

/// A refused command. Failed login attempts are not errors: they are recorded as
/// `LoginFailed` events, because an error would discard them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The email address is malformed.
    #[error("the email address is not valid")]
    InvalidEmail,
    /// The full name is empty, too long or has control characters.
    #[error("the full name must be 1 to 200 characters without control characters")]
    InvalidFullName,
    /// The password is shorter than the policy allows.
    #[error("the password must have at least 8 characters")]
    PasswordTooShort,
    /// The password is longer than the policy allows.
    #[error("the password must have at most 128 characters")]
    PasswordTooLong,
    /// The password is on the list of common passwords.
    #[error("this password is too common; choose another")]
    PasswordTooCommon,
    /// The password is only spaces, or one character repeated: long enough, and still guessed
    /// at once.
    #[error("the password is only spaces or one repeated character; choose another")]
    PasswordTooWeak,
    /// Two-factor authentication was asked for without a device.
    #[error("a device is required when two-factor authentication is enabled")]
    DeviceRequired,
    /// Another account already uses this email address (in any letter case).
    #[error("an account with this email address already exists")]
    EmailTaken,
    /// This aggregate already holds a user.
    #[error("the user already exists")]
    AlreadyRegistered,
    /// No user has this id.
    #[error("no such user")]
    UnknownUser,
    /// Two-factor authentication is already on.
    #[error("two-factor authentication is already enabled")]
    TfaAlreadyEnabled,
    /// Two-factor authentication is off.
    #[error("two-factor authentication is not enabled")]
    TfaNotEnabled,
    /// The user's second factor is not an authenticator app.
    #[error("the user has no code generator device")]
    NoCodeGenerator,
    /// The login challenge is unknown, already completed, or dead after too many wrong codes.
    #[error("the login challenge is not open; log in again")]
    ChallengeClosed,
    /// The code belongs to a time step that was already used (RFC 6238 §5.2).
    #[error("this code was already used; wait for the next one")]
    TfaCodeReplayed,
    /// The emailed code has expired.
    #[error("the emailed code has expired; log in again")]
    EmailCodeExpired,
    /// Every backup code has been used.
    #[error("no backup codes are left")]
    NoBackupCodesLeft,
    /// Too many consecutive failures locked this factor for a while.
    #[error("too many failed attempts; retry in {retry_after_secs} seconds")]
    Locked {
        /// Seconds until the lock expires.
        retry_after_secs: u64,
    },
    /// An admin locked the account.
    #[error("this account is locked; contact an administrator")]
    AccountLocked,
    /// Erasing an account with two-factor authentication on needs a current second factor.
    #[error("a current second factor (`code`) is required for this account")]
    SecondFactorRequired,
    /// The reset token is wrong, spent or expired.
    #[error("the reset token is not valid; request a new one")]
    ResetTokenInvalid,
    /// The session has ended (or never existed): log in again.
    #[error("the session has ended; log in again")]
    SessionEnded,
    /// The user has no such session.
    #[error("no such session")]
    UnknownSession,
    /// The caller's sign-in is too old for this: prove the password and the second factor.
    #[error(
        "this needs a recent sign-in: log in again, or call the POST form of this operation \
         with `password` and, with two-factor authentication on, `code` (a current TOTP code, \
         an emailed confirmation code or a backup code)"
    )]
    ReauthenticationRequired,
    /// The account's only second factor is a passkey, which cannot be typed into a form: its
    /// owner proves it by signing in with it, and the change then rides on that sign-in.
    #[error(
        "this account's second factor is a passkey: sign in again with it, then repeat this \
         within the re-authentication window without `password` and `code`"
    )]
    PasskeySignInRequired,
    /// The user's second factor is not email, so no code can be emailed.
    #[error("the user's second factor is not email")]
    NoEmailDevice,
    /// A confirmation code was emailed too recently.
    #[error("a code was emailed moments ago; retry in {retry_after_secs} seconds")]
    ConfirmationCodeTooSoon {
        /// Seconds until another code may be emailed.
        retry_after_secs: u64,
    },
    /// The password hasher is saturated; retry shortly.
    #[error("the service is busy; retry shortly")]
    HasherSaturated,
    /// The password hasher failed.
    #[error("the password could not be checked")]
    HasherFailed,
    /// A sealed secret could not be opened (missing key or corrupt data).
    #[error("a stored secret could not be read")]
    SecretUnreadable,
    /// The passkey's name is empty, too long or has control characters.
    #[error("a passkey's name must be 1 to 64 characters without control characters")]
    InvalidPasskeyName,
    /// Another of the user's passkeys has this name (in any letter case).
    #[error("another of your passkeys has this name")]
    PasskeyNameTaken,
    /// The user has as many passkeys as are allowed.
    #[error("no more than 10 passkeys per account; remove one first")]
    PasskeyLimitReached,
    /// This authenticator's credential is already registered.
    #[error("this passkey is already registered")]
    PasskeyAlreadyRegistered,
    /// The user has no passkey with this id.
    #[error("no such passkey")]
    UnknownPasskey,
}

impl UserError {
    /// The stable machine-readable code (`area.snake_case`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidEmail => "user.invalid_email",
            Self::InvalidFullName => "user.invalid_full_name",
            Self::PasswordTooShort => "user.password_too_short",
            Self::PasswordTooLong => "user.password_too_long",
            Self::PasswordTooCommon => "user.password_too_common",
            Self::PasswordTooWeak => "user.password_too_weak",
            Self::DeviceRequired => "tfa.device_required",
            Self::EmailTaken => "user.email_taken",
            Self::AlreadyRegistered => "user.already_registered",
            Self::UnknownUser => "user.not_found",
            Self::TfaAlreadyEnabled => "tfa.already_enabled",
            Self::TfaNotEnabled => "tfa.not_enabled",
            Self::NoCodeGenerator => "tfa.no_code_generator",
            Self::ChallengeClosed => "tfa.challenge_closed",
            Self::TfaCodeReplayed => "tfa.code_replayed",
            Self::EmailCodeExpired => "tfa.email_code_expired",
            Self::NoBackupCodesLeft => "tfa.no_backup_codes_left",
            Self::Locked { .. } => "auth.locked",
            Self::SessionEnded => "auth.session_ended",
            Self::ResetTokenInvalid => "auth.reset_token_invalid",
            Self::SecondFactorRequired => "tfa.code_required",
            Self::AccountLocked => "auth.account_locked",
            Self::UnknownSession => "auth.session_not_found",
            Self::ReauthenticationRequired => "reauthentication.required",
            Self::PasskeySignInRequired => "reauthentication.passkey_required",
            Self::NoEmailDevice => "tfa.no_email_device",
            Self::ConfirmationCodeTooSoon { .. } => "tfa.email_code_too_soon",
            Self::HasherSaturated => "service.busy",
            Self::HasherFailed | Self::SecretUnreadable => "internal",
            Self::InvalidPasskeyName => "passkey.invalid_name",
            Self::PasskeyNameTaken => "passkey.name_taken",
            Self::PasskeyLimitReached => "passkey.limit_reached",
            Self::PasskeyAlreadyRegistered => "passkey.already_registered",
            Self::UnknownPasskey => "passkey.not_found",
        }
    }
}

impl From<crate::services::HasherError> for UserError {
    fn from(error: crate::services::HasherError) -> Self {
        match error {
            crate::services::HasherError::Saturated => Self::HasherSaturated,
            crate::services::HasherError::Failed => Self::HasherFailed,
        }
    }
}
