//! Commands: what a caller asks of a `User`. They hold parsed values, never raw wire data.

use secrecy::{SecretSlice, SecretString};

use super::{AuditScope, SessionEndReason};
use crate::values::{
    ChallengeId, Email, FullName, NewPassword, PasskeyCredential, PasskeyId, PasskeyName,
    RefreshTokenId, SessionId, UserId,
};

/// Everything a `User` can be asked to do.
#[derive(Debug, Clone)]
pub enum UserCommand {
    /// Create the account.
    SignUp(SignUp),
    /// Turn on two-factor authentication for an account that has none.
    EnableTfa(EnableTfa),
    /// First step of a login: the password.
    LogIn(LogIn),
    /// Second step of a login: a code from the authenticator app or the email.
    VerifyTfaCode(VerifyTfaCode),
    /// Second step of a login with a single-use backup code instead of the device.
    UseBackupCode(UseBackupCode),
    /// Exchange a session's refresh token for a new one.
    RefreshSession(RefreshSession),
    /// End one session.
    EndSession(EndSession),
    /// End every session but one.
    EndOtherSessions(EndOtherSessions),
    /// Change the password, knowing the current one.
    ChangePassword(ChangePassword),
    /// Issue a password reset token (it is emailed).
    RequestPasswordReset(RequestPasswordReset),
    /// Set a new password with a reset token.
    ResetPassword(ResetPassword),
    /// Turn two-factor authentication off (password and a current second factor).
    DisableTfa(DisableTfa),
    /// Replace the second-factor device (password and a current second factor).
    SwitchTfaDevice(SwitchTfaDevice),
    /// Replace the backup codes (a current second factor).
    RegenerateBackupCodes(RegenerateBackupCodes),
    /// Give the user the admin role.
    GrantAdmin,
    /// Lock the account (an admin's action).
    LockAccount,
    /// Unlock the account (an admin's action).
    UnlockAccount,
    /// End every session of the user (an admin's action).
    EndAllSessions,
    /// Move the sealed TOTP seed to the current sealing key (after a key rotation).
    ResealSecrets,
    /// Someone tried to sign up with this user's address (sign-up conceals existing
    /// accounts): tell the owner, at most once per [`super::SIGN_UP_NOTICE_INTERVAL`].
    NoteSignUpAttempt,
    /// Record that someone other than the user read the user's audit trail.
    RecordAuditRead(AuditScope),
    /// The user erases their own account.
    EraseOwnAccount(EraseOwnAccount),
    /// Erase the account (an admin's or operator's action).
    EraseAccount,
    /// Prove who the caller is before a sensitive read (the authenticator app's QR code):
    /// a recent full sign-in, or the proofs of a sensitive change. Records nothing but a
    /// proof's use or failure.
    Reauthenticate(Reauthentication),
    /// Email a code that proves the second factor of an email-device user for a sensitive
    /// change or a re-authentication.
    RequestConfirmationCode(RequestConfirmationCode),
    /// Record a passkey whose registration ceremony finished (the caller re-authenticated
    /// before the ceremony started).
    RegisterPasskey(RegisterPasskey),
    /// Give a passkey another name.
    RenamePasskey(RenamePasskey),
    /// Remove a passkey, after a re-authentication.
    RemovePasskey(RemovePasskey),
    /// Complete a login step with a passkey assertion the caller verified (or record its
    /// refusal).
    UsePasskey(UsePasskey),
}

/// A passkey whose registration ceremony the caller verified. Its id is drawn by the
/// aggregate.
#[derive(Debug, Clone)]
pub struct RegisterPasskey {
    /// The WebAuthn credential id, base64url.
    pub credential_id: String,
    /// The public credential, as the WebAuthn library serialised it.
    pub credential: PasskeyCredential,
    /// The sign counter at registration.
    pub counter: u32,
    /// The owner's name for it.
    pub name: PasskeyName,
}

/// Renames a passkey.
#[derive(Debug, Clone)]
pub struct RenamePasskey {
    /// Which passkey.
    pub passkey_id: PasskeyId,
    /// The new name.
    pub name: PasskeyName,
}

/// Removes a passkey.
#[derive(Debug, Clone)]
pub struct RemovePasskey {
    /// Which passkey.
    pub passkey_id: PasskeyId,
    /// How the caller re-authenticated.
    pub reauthentication: Reauthentication,
}

/// Which login step a passkey assertion answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasskeyStep {
    /// The second factor of the password login that opened this challenge.
    SecondFactor {
        /// The challenge the pre-2FA token names.
        challenge_id: ChallengeId,
    },
    /// A login with the passkey alone (a discoverable credential, with user verification).
    Passwordless,
}

/// What the caller's verification of an assertion found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasskeyAssertion {
    /// The signature, challenge, origin and user verification held. The counter is checked
    /// by the aggregate, against the highest one it accepted.
    Verified {
        /// The assertion's sign counter.
        counter: u32,
        /// Whether the credential is backed up (synced), as the authenticator says.
        backup_state: bool,
    },
    /// The assertion did not verify.
    Refused,
}

/// A passkey assertion for a login step.
#[derive(Debug, Clone)]
pub struct UsePasskey {
    /// The step it answers.
    pub step: PasskeyStep,
    /// The credential id the assertion names, base64url.
    pub credential_id: String,
    /// What verifying it found.
    pub assertion: PasskeyAssertion,
}

/// How a caller proves, again, that they are the user, before a sensitive read or the end
/// of their other sessions.
#[derive(Debug, Clone)]
pub enum Reauthentication {
    /// The caller's session began with a full sign-in (password and, with two-factor
    /// authentication on, the second factor) at most `window` ago. A refresh keeps the
    /// session's sign-in instant: it does not renew it.
    RecentSignIn {
        /// The caller's session.
        session: SessionId,
        /// How long after its sign-in a session counts as re-authenticated.
        window: time::Duration,
    },
    /// The proofs of a sensitive change, given now.
    Proofs {
        /// The current password.
        password: SecretString,
        /// A current second factor; required when two-factor authentication is on.
        code: Option<SecretString>,
    },
}

/// Issues a confirmation code for an email device. The caller generates it (it must mail it);
/// only its digest is kept.
#[derive(Debug, Clone)]
pub struct RequestConfirmationCode {
    /// The code in clear.
    pub code: SecretString,
}

/// Erases the caller's own account, with the proofs of a sensitive change.
#[derive(Debug, Clone)]
pub struct EraseOwnAccount {
    /// The current password.
    pub password: SecretString,
    /// A current second factor; required when two-factor authentication is on.
    pub code: Option<SecretString>,
    /// The caller's sign-in: checked only when the user's only second factor is a passkey,
    /// which stands in for the code it cannot give.
    pub sign_in: Reauthentication,
}

/// Creates the account, optionally with two-factor authentication already on.
#[derive(Debug, Clone)]
pub struct SignUp {
    /// The new user's id; the aggregate id.
    pub user_id: UserId,
    /// The login name.
    pub email: Email,
    /// The display name.
    pub full_name: FullName,
    /// A password that passed the policy; only its hash is kept.
    pub password: NewPassword,
    /// Second-factor enrolment, when the user asked for it at sign-up.
    pub tfa: Option<TfaEnrolment>,
}

/// Turns on two-factor authentication.
#[derive(Debug, Clone)]
pub struct EnableTfa {
    /// The device and backup codes to enrol.
    pub enrolment: TfaEnrolment,
    /// Checked only when the user already has a second factor, a passkey: adding an
    /// authenticator app or an email device beside it is then a change of their second
    /// factor, proven as registering another passkey is.
    pub reauthentication: Reauthentication,
}

/// What enrolling a second factor brings. The caller generates the secrets (it must show or
/// mail them); the aggregate keeps only sealed or digested forms.
#[derive(Debug, Clone)]
pub struct TfaEnrolment {
    /// The device.
    pub device: NewDevice,
    /// Fresh backup codes in clear.
    pub backup_codes: Vec<SecretString>,
}

/// A device to enrol.
#[derive(Debug, Clone)]
pub enum NewDevice {
    /// Codes are emailed at login.
    Email,
    /// An authenticator app, enrolled with this seed.
    CodeGenerator {
        /// The TOTP seed in clear, sealed before it is recorded.
        seed: SecretSlice<u8>,
    },
}

/// A password login.
#[derive(Debug, Clone)]
pub struct LogIn {
    /// The password as typed.
    pub password: SecretString,
    /// A fresh one-time code, recorded (digested) and mailed only if the user's second factor
    /// is email. Generated by the caller because the caller must mail it.
    pub email_code: SecretString,
}

/// A second-factor code for an open login challenge.
#[derive(Debug, Clone)]
pub struct VerifyTfaCode {
    /// The challenge the pre-2FA token names.
    pub challenge_id: ChallengeId,
    /// The code as typed.
    pub code: SecretString,
}

/// A backup code for an open login challenge.
#[derive(Debug, Clone)]
pub struct UseBackupCode {
    /// The challenge the pre-2FA token names.
    pub challenge_id: ChallengeId,
    /// The backup code as typed.
    pub code: SecretString,
}

/// A refresh: the session and refresh token the presented refresh JWT names.
#[derive(Debug, Clone)]
pub struct RefreshSession {
    /// The session.
    pub session_id: SessionId,
    /// The refresh token presented.
    pub refresh_id: RefreshTokenId,
    /// How long the previous refresh token stays acceptable after a rotation, for clients
    /// that refresh twice at once.
    pub reuse_grace: time::Duration,
}

/// Ends a session.
#[derive(Debug, Clone)]
pub struct EndSession {
    /// The session.
    pub session_id: SessionId,
    /// Logout, or the user ending it from elsewhere.
    pub reason: SessionEndReason,
    /// For a session other than the caller's, how the caller re-authenticated; `None` for a
    /// logout of the caller's own session.
    pub reauthentication: Option<Reauthentication>,
}

/// Ends all sessions but one.
#[derive(Debug, Clone)]
pub struct EndOtherSessions {
    /// The session to keep (the caller's).
    pub keep: SessionId,
    /// How the caller re-authenticated.
    pub reauthentication: Reauthentication,
}

/// Changes the password.
#[derive(Debug, Clone)]
pub struct ChangePassword {
    /// The current password, as typed.
    pub current: SecretString,
    /// The new password.
    pub new: NewPassword,
    /// The caller's session, which stays; every other session ends.
    pub keep_session: Option<SessionId>,
}

/// Issues a reset token. The caller generates it (it must mail it); only its digest is kept.
#[derive(Debug, Clone)]
pub struct RequestPasswordReset {
    /// The token in clear.
    pub token: SecretString,
}

/// Resets the password with an emailed token.
#[derive(Debug, Clone)]
pub struct ResetPassword {
    /// The token, as typed or linked.
    pub token: SecretString,
    /// The new password.
    pub new: NewPassword,
}

/// Turns two-factor authentication off.
#[derive(Debug, Clone)]
pub struct DisableTfa {
    /// The password.
    pub password: SecretString,
    /// A current TOTP code, an emailed confirmation code or a backup code.
    pub code: SecretString,
}

/// Replaces the device; a new set of backup codes comes with it.
#[derive(Debug, Clone)]
pub struct SwitchTfaDevice {
    /// The password.
    pub password: SecretString,
    /// A current TOTP code, an emailed confirmation code or a backup code.
    pub code: SecretString,
    /// The new device and backup codes.
    pub enrolment: TfaEnrolment,
}

/// Replaces the backup codes; the old ones stop working.
#[derive(Debug, Clone)]
pub struct RegenerateBackupCodes {
    /// A current TOTP code, an emailed confirmation code or a backup code.
    pub code: SecretString,
    /// The new codes in clear (the caller mails them).
    pub codes: Vec<SecretString>,
}
