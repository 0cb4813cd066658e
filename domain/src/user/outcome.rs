//! What a command decided, read from the events it recorded.
//!
//! Some refusals are facts, not errors: a wrong password must be stored (it counts toward a
//! lock), and so must a reused refresh token (it revokes the session). cqrs-es drops the events
//! of a command that returns an error, so such a command succeeds and records the refusal.
//! The types here turn a command's events back into one decision per flow, so that the rule
//! "which refusal was it" lives beside the commands that record it, not with their callers.

use super::{Factor, SessionEndReason, User, UserEvent};
use crate::values::{ChallengeId, RefreshTokenId, SessionId, UserId};

/// A refusal a command records as an event rather than returns as an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The password was wrong.
    WrongPassword,
    /// A TOTP or emailed code was wrong (in a sensitive change, any second-factor proof).
    WrongCode,
    /// A backup code was wrong or already used (second login step).
    WrongBackupCode,
    /// A passkey assertion was refused: not verified, of no passkey of the user, or with a
    /// sign counter that did not advance.
    WrongPasskey,
    /// A rotated refresh token was presented again: its session is revoked.
    RefreshTokenReused,
    /// The session reached its absolute lifetime.
    SessionExpired,
}

/// The session a completed login started, or a refresh rotated: what its tokens name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionGrant {
    /// Whose session.
    pub user_id: UserId,
    /// The session.
    pub session_id: SessionId,
    /// Its current refresh token.
    pub refresh_id: RefreshTokenId,
}

/// The events of a command held none of the facts its flow decides by: a bug, never an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the command recorded no decision of its flow")]
pub struct NoDecision;

/// What a login step decided (`LogIn`, `VerifyTfaCode`, `UseBackupCode`, `UsePasskey`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The login completed and started a session.
    LoggedIn(SessionGrant),
    /// The password was right; the challenge waits for the second factor.
    SecondFactorRequired {
        /// Whose login.
        user_id: UserId,
        /// The challenge the pre-2FA token names.
        challenge_id: ChallengeId,
    },
    /// The step was refused, and the failure recorded.
    Refused(Refusal),
}

impl LoginOutcome {
    /// The decision of the login step that recorded `events` for user `user_id`.
    pub fn read(user_id: UserId, events: &[UserEvent]) -> Result<Self, NoDecision> {
        events
            .iter()
            .find_map(|event| match event {
                UserEvent::SessionStarted {
                    session_id,
                    refresh_id,
                    ..
                } => Some(Self::LoggedIn(SessionGrant {
                    user_id,
                    session_id: *session_id,
                    refresh_id: *refresh_id,
                })),
                UserEvent::SecondFactorRequired { challenge_id, .. } => {
                    Some(Self::SecondFactorRequired {
                        user_id,
                        challenge_id: *challenge_id,
                    })
                }
                UserEvent::LoginFailed { factor, .. } => Some(Self::Refused(match factor {
                    Factor::Password => Refusal::WrongPassword,
                    Factor::Totp | Factor::EmailCode => Refusal::WrongCode,
                    Factor::BackupCode => Refusal::WrongBackupCode,
                    Factor::Passkey => Refusal::WrongPasskey,
                })),
                _ => None,
            })
            .ok_or(NoDecision)
    }
}

/// What a refresh decided (`RefreshSession`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The refresh token was rotated.
    Refreshed(SessionGrant),
    /// The session ended instead: revoked on reuse, or expired.
    Refused(Refusal),
}

impl RefreshOutcome {
    /// The decision of the refresh that recorded `events` for user `user_id`.
    pub fn read(user_id: UserId, events: &[UserEvent]) -> Result<Self, NoDecision> {
        events
            .iter()
            .find_map(|event| match event {
                UserEvent::SessionRefreshed {
                    session_id,
                    refresh_id,
                    ..
                } => Some(Self::Refreshed(SessionGrant {
                    user_id,
                    session_id: *session_id,
                    refresh_id: *refresh_id,
                })),
                UserEvent::SessionEnded { reason, .. } => Some(Self::Refused(match reason {
                    SessionEndReason::Expired => Refusal::SessionExpired,
                    _ => Refusal::RefreshTokenReused,
                })),
                _ => None,
            })
            .ok_or(NoDecision)
    }

    /// The decision of a refresh of `session_id` that recorded `events` and left the user in
    /// state `user`. A refresh that recorded nothing repeated one already decided within the
    /// grace period: it gets the successor already issued, the session's current token.
    pub fn decided(
        user: &User,
        user_id: UserId,
        session_id: SessionId,
        events: &[UserEvent],
    ) -> Result<Self, NoDecision> {
        if !events.is_empty() {
            return Self::read(user_id, events);
        }
        user.current_refresh_token(session_id)
            .map(|refresh_id| {
                Self::Refreshed(SessionGrant {
                    user_id,
                    session_id,
                    refresh_id,
                })
            })
            .ok_or(NoDecision)
    }
}

/// What a sensitive change decided (change password, turn 2FA off, switch device, regenerate
/// backup codes): each first checks the proofs it needs, and records a wrong one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// Every proof held and the change is recorded.
    Changed,
    /// A proof was wrong: the password, or the second factor.
    Refused(Refusal),
}

impl ChangeOutcome {
    /// The decision of the change that recorded `events`.
    pub fn read(events: &[UserEvent]) -> Self {
        let failed = events.iter().find_map(|event| match event {
            UserEvent::LoginFailed { factor, .. } => Some(*factor),
            _ => None,
        });
        match failed {
            None => Self::Changed,
            Some(Factor::Password) => Self::Refused(Refusal::WrongPassword),
            Some(_) => Self::Refused(Refusal::WrongCode),
        }
    }
}
