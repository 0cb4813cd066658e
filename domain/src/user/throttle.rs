//! Brute-force throttling, one counter per kind of factor, so that failing one factor never
//! locks another (a single shared counter lets an attacker who knows the password lock a user
//! out of backup-code recovery by failing TOTP codes).
//!
//! After [`LOCK_AFTER_FAILURES`] consecutive failures of a factor it is locked for
//! [`FIRST_LOCK`]; every further failure (once the lock has expired) locks it again for twice
//! as long, up to [`MAX_LOCK`]. Locks expire by themselves and a success resets the count.
//! A locked attempt is refused before any check, so it reveals nothing about the secret.

use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::aggregate::User;
use super::{Factor, UserError, UserEvent};
use crate::values::ChallengeId;

/// Consecutive failures of one factor that lock it.
pub const LOCK_AFTER_FAILURES: u32 = 5;
/// The first lock's length.
pub const FIRST_LOCK: Duration = Duration::minutes(1);
/// The longest lock.
pub const MAX_LOCK: Duration = Duration::hours(1);

/// The kinds of factor that are throttled separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottledFactor {
    /// The password.
    Password,
    /// TOTP and emailed codes.
    SecondFactor,
    /// Backup codes.
    BackupCode,
    /// Passkey assertions. Since version 2.0.
    Passkey,
}

impl From<Factor> for ThrottledFactor {
    fn from(factor: Factor) -> Self {
        match factor {
            Factor::Password => Self::Password,
            Factor::Totp | Factor::EmailCode => Self::SecondFactor,
            Factor::BackupCode => Self::BackupCode,
            Factor::Passkey => Self::Passkey,
        }
    }
}

/// The failure count and lock of one factor, or of logins to an address no account has.
///
/// Keeping the second kind under the same policy makes a lockout answer the same whether or
/// not the account exists: without it, only real accounts would ever answer 429.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    /// Consecutive failures.
    pub failures: u32,
    /// Locked until then.
    #[serde(with = "time::serde::rfc3339::option")]
    pub locked_until: Option<OffsetDateTime>,
}

impl Throttle {
    /// Refuses an attempt while locked, saying when to retry.
    pub fn check(&self, now: OffsetDateTime) -> Result<(), UserError> {
        match self.locked_until {
            Some(until) if until > now => {
                let seconds = (until - now).whole_seconds().max(1);
                Err(UserError::Locked {
                    retry_after_secs: u64::try_from(seconds).unwrap_or(1),
                })
            }
            _ => Ok(()),
        }
    }

    /// The lock that the `failures`-th consecutive failure, at `at`, sets, if any.
    pub fn lock_after(failures: u32, at: OffsetDateTime) -> Option<OffsetDateTime> {
        (failures >= LOCK_AFTER_FAILURES).then(|| at + lock_length(failures))
    }

    /// Records a failure at `at`, locking when it crosses the threshold.
    pub fn record_failure(&mut self, at: OffsetDateTime) {
        self.failures += 1;
        if let Some(until) = Self::lock_after(self.failures, at) {
            self.locked_until = Some(until);
        }
    }
}

/// A throttle per kind of factor.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Throttles {
    password: Throttle,
    second_factor: Throttle,
    backup_code: Throttle,
    #[serde(default)]
    passkey: Throttle,
}

impl Throttles {
    pub(super) fn get(&self, factor: ThrottledFactor) -> &Throttle {
        match factor {
            ThrottledFactor::Password => &self.password,
            ThrottledFactor::SecondFactor => &self.second_factor,
            ThrottledFactor::BackupCode => &self.backup_code,
            ThrottledFactor::Passkey => &self.passkey,
        }
    }

    pub(super) fn get_mut(&mut self, factor: ThrottledFactor) -> &mut Throttle {
        match factor {
            ThrottledFactor::Password => &mut self.password,
            ThrottledFactor::SecondFactor => &mut self.second_factor,
            ThrottledFactor::BackupCode => &mut self.backup_code,
            ThrottledFactor::Passkey => &mut self.passkey,
        }
    }
}

/// How long the `failures`-th consecutive failure locks a factor.
fn lock_length(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(LOCK_AFTER_FAILURES).min(16);
    let length = FIRST_LOCK * 2_i32.pow(doublings);
    if length > MAX_LOCK {
        MAX_LOCK
    } else {
        length
    }
}

impl User {
    /// Refuses an attempt at a locked factor, saying when to retry.
    pub(super) fn ensure_unlocked(
        &self,
        factor: ThrottledFactor,
        now: OffsetDateTime,
    ) -> Result<(), UserError> {
        self.throttles.get(factor).check(now)
    }

    /// Records a failure of `factor`, and locks it if that failure crosses the threshold.
    pub(super) async fn record_failure(
        &mut self,
        factor: Factor,
        challenge_id: Option<ChallengeId>,
        at: OffsetDateTime,
        sink: &EventSink<Self>,
    ) {
        let failed = UserEvent::LoginFailed {
            factor,
            challenge_id,
            at,
        };
        sink.write(failed, self).await;
        let throttled = ThrottledFactor::from(factor);
        if let Some(until) = Throttle::lock_after(self.throttles.get(throttled).failures, at) {
            let locked = UserEvent::FactorLocked {
                factor: throttled,
                until,
                at,
            };
            sink.write(locked, self).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_start_at_a_minute_double_and_stop_at_an_hour() {
        assert_eq!(lock_length(5), Duration::minutes(1));
        assert_eq!(lock_length(6), Duration::minutes(2));
        assert_eq!(lock_length(8), Duration::minutes(8));
        assert_eq!(lock_length(11), Duration::minutes(60));
        assert_eq!(lock_length(40), Duration::hours(1));
    }

    #[test]
    fn a_standalone_throttle_follows_the_same_policy() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let mut throttle = Throttle::default();
        for _ in 0..LOCK_AFTER_FAILURES - 1 {
            throttle.record_failure(at);
            assert_eq!(throttle.check(at), Ok(()));
        }
        throttle.record_failure(at);
        assert_eq!(
            throttle.check(at + Duration::seconds(1)),
            Err(UserError::Locked {
                retry_after_secs: 59
            })
        );
        assert_eq!(throttle.check(at + FIRST_LOCK), Ok(()));
        throttle.record_failure(at + FIRST_LOCK);
        assert_eq!(throttle.locked_until, Some(at + FIRST_LOCK * 3));
    }
}
