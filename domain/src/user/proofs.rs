//! The proof of each second factor, written once for every flow that checks it: the second
//! step of a login, and the re-authentication a sensitive change asks for.
//!
//! A typed code is read the same way whichever flow it comes through: whitespace around it,
//! as copy-paste leaves, is ignored. Backup codes are read more forgivingly still, in their
//! canonical form ([`backup_codes::canonical`]: no separators or spaces, any case, confusable
//! letters as digits), and are stored only as keyed digests of that form.

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::aggregate::{Challenge, User};
use super::UserError;
use crate::services::UserServices;
use crate::values::{KeyedDigest, SealedSecret};
use crate::{backup_codes, totp};

impl User {
    /// The TOTP proof. Opens the sealed seed and finds the time step whose code `code` is,
    /// among the current step and one either side (RFC 6238 §5.2 allows at most one, for clock
    /// drift and typing time). A step at or before the last accepted one is a replay, refused
    /// whether it comes to log in or to confirm a change: the step is spent either way.
    ///
    /// `Ok(Some(step))` for a right code, `Ok(None)` for a wrong one.
    pub(super) fn prove_totp(
        &self,
        seed: &SealedSecret,
        code: &SecretString,
        services: &UserServices,
        at: OffsetDateTime,
    ) -> Result<Option<u64>, UserError> {
        let seed = services
            .sealer
            .open(seed)
            .map_err(|_| UserError::SecretUnreadable)?;
        let Some(step) = totp::matching_step(&seed, code.expose_secret().trim(), at) else {
            return Ok(None);
        };
        if self.last_totp_step.is_some_and(|last| step <= last) {
            return Err(UserError::TfaCodeReplayed);
        }
        Ok(Some(step))
    }

    /// The backup-code proof: the position of the unused backup code `code` is, if any.
    /// Codes are compared by keyed digest, so none is ever held in clear.
    pub(super) fn find_backup_code(
        &self,
        code: &SecretString,
        services: &UserServices,
    ) -> Option<usize> {
        let typed = backup_codes::canonical(code);
        self.tfa.as_ref()?.backup_codes.iter().position(|slot| {
            slot.as_ref().is_some_and(|digest| {
                services
                    .sealer
                    .matches(digest, typed.expose_secret().as_bytes())
            })
        })
    }
}

impl Challenge {
    /// The emailed-code proof: the code mailed for this challenge, before it expires. Whether
    /// it is right (a wrong code is the caller's recorded failure).
    pub(super) fn prove_email_code(
        &self,
        code: &SecretString,
        services: &UserServices,
        at: OffsetDateTime,
    ) -> Result<bool, UserError> {
        let Some((digest, expires_at)) = &self.email_code else {
            return Err(UserError::ChallengeClosed);
        };
        if at >= *expires_at {
            return Err(UserError::EmailCodeExpired);
        }
        Ok(services
            .sealer
            .matches(digest, code.expose_secret().trim().as_bytes()))
    }
}

/// Backup codes as they are stored: the keyed digest of each one's canonical form, in the
/// order they were issued.
pub(super) fn backup_code_digests(
    codes: &[SecretString],
    services: &UserServices,
) -> Vec<KeyedDigest> {
    codes
        .iter()
        .map(|code| {
            services
                .sealer
                .digest(backup_codes::canonical(code).expose_secret().as_bytes())
        })
        .collect()
}
