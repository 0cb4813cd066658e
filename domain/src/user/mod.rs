//! The `User` aggregate: one user's account, credentials and second-factor state, folded from
//! its events.

mod admin;
mod aggregate;
mod commands;
mod erasure;
mod error;
mod events;
mod keys;
mod login;
mod manage;
mod outcome;
mod passkeys;
mod password;
mod proofs;
mod reauth;
mod sessions;
mod signup;
#[cfg(test)]
mod tests;
mod tfa;
mod throttle;

pub use aggregate::{User, SNAPSHOT_VERSION};
pub use commands::{
    ChangePassword, DisableTfa, EnableTfa, EndOtherSessions, EndSession, EraseOwnAccount, LogIn,
    NewDevice, PasskeyAssertion, PasskeyStep, Reauthentication, RefreshSession,
    RegenerateBackupCodes, RegisterPasskey, RemovePasskey, RenamePasskey, RequestConfirmationCode,
    RequestPasswordReset, ResetPassword, SignUp, SwitchTfaDevice, TfaEnrolment, UseBackupCode,
    UsePasskey, UserCommand, VerifyTfaCode,
};
pub use error::UserError;
pub use events::{
    AuditScope, Device, DeviceSecret, Factor, UserEvent, UserEventKind, EVENT_VERSION,
};
pub use outcome::{ChangeOutcome, LoginOutcome, NoDecision, RefreshOutcome, Refusal, SessionGrant};
pub use passkeys::{RegisteredPasskey, MAX_PASSKEYS};
pub use password::{RESET_EMAILS_PER_DAY, RESET_EMAIL_INTERVAL, RESET_TOKEN_TTL};
pub use reauth::{CONFIRMATION_CODE_INTERVAL, CONFIRMATION_CODE_TTL};
pub use sessions::{SessionEndReason, MAX_SESSIONS, SESSION_MAX_AGE};
pub use throttle::{Throttle, ThrottledFactor, FIRST_LOCK, LOCK_AFTER_FAILURES, MAX_LOCK};

/// The shortest time between two notices of sign-up attempts with a user's address, so that
/// repeated attempts cannot flood the owner's inbox or their event stream.
pub const SIGN_UP_NOTICE_INTERVAL: time::Duration = time::Duration::hours(1);
/// How long an emailed login code stays valid (OWASP ASVS 5.0 §6.5.5 allows at most 10 minutes).
pub const EMAIL_CODE_TTL: time::Duration = time::Duration::minutes(10);
/// Wrong second-factor attempts after which a login challenge (and its pre-2FA token) is dead.
pub const MAX_CHALLENGE_FAILURES: u32 = 5;
/// Login challenges kept open at once; a newer login pushes out the oldest. Each one cost a
/// correct password, so the bound only keeps the state small.
pub const MAX_OPEN_CHALLENGES: usize = 64;
