//! Re-authentication before a sensitive read or the end of the user's other sessions, and the
//! confirmation codes an email-device user proves their second factor with while signed in.
//!
//! A full sign-in (the password, and the second factor when it is on) counts as
//! re-authentication for a short window after it, as a privileged session does in other
//! identity servers: the caller's session remembers when its sign-in completed, and a refresh
//! keeps that instant. After the window, the caller gives the proofs of a sensitive change
//! instead (the password, and a current second factor), checked, recorded and throttled as
//! there (ASVS 5.0 §7.5.1, §7.5.2).
//!
//! A user whose only second factor is a passkey has no proof to type: a password alone would
//! let whoever stole it and an access token add their own passkey or authenticator app, or
//! remove the owner's. Their proofs are refused (`PasskeySignInRequired`); they sign in again
//! with the passkey, and that sign-in is the re-authentication.
//!
//! An email-device user has no code at hand while signed in: login codes belong to a login
//! challenge. So they may ask for a confirmation code, mailed to them, that proves the second
//! factor once within [`CONFIRMATION_CODE_TTL`]. It is held apart from login codes: a login
//! code proves nothing here and a confirmation code completes no login. One code may be
//! issued per [`CONFIRMATION_CODE_INTERVAL`], so the request cannot flood the inbox; a new
//! code replaces the pending one.

use cqrs_es::event_sink::EventSink;
use secrecy::{ExposeSecret, SecretString};
use time::{Duration, OffsetDateTime};

use super::aggregate::User;
use super::{DeviceSecret, Reauthentication, RequestConfirmationCode, UserError, UserEvent};
use crate::services::UserServices;

/// How long a confirmation code stays valid (ASVS 5.0 §6.5.5 allows at most 10 minutes).
pub const CONFIRMATION_CODE_TTL: Duration = Duration::minutes(10);
/// The shortest time between two confirmation codes.
pub const CONFIRMATION_CODE_INTERVAL: Duration = Duration::minutes(1);

impl User {
    /// Whether the caller re-authenticated. A recent sign-in is checked against the caller's
    /// session (an error when it is too old). Proofs are checked as for a sensitive change:
    /// `Ok(false)` when one was wrong, which is recorded; a right second factor is spent.
    pub(super) async fn reauthenticate_caller(
        &mut self,
        reauthentication: &Reauthentication,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<bool, UserError> {
        self.account()?;
        match reauthentication {
            Reauthentication::RecentSignIn { session, window } => {
                let signed_in_at = self
                    .sessions
                    .iter()
                    .find(|live| live.id == *session)
                    .map(|live| live.signed_in_at)
                    .ok_or(UserError::SessionEnded)?;
                if services.clock.now() - signed_in_at > *window {
                    return Err(UserError::ReauthenticationRequired);
                }
                Ok(true)
            }
            Reauthentication::Proofs { password, code } => {
                if self.passkey_only() {
                    return Err(UserError::PasskeySignInRequired);
                }
                if self.tfa.is_some() && code.is_none() {
                    return Err(UserError::SecondFactorRequired);
                }
                if !self.check_password(password, services, sink).await? {
                    return Ok(false);
                }
                match code {
                    Some(code) if self.tfa.is_some() => {
                        self.confirm_second_factor(code, services, sink).await
                    }
                    _ => Ok(true),
                }
            }
        }
    }

    /// The re-authentication of a user who has a passkey, for a change that takes no typed
    /// second factor from them: [`User::reauthenticate_caller`], except that a sign-in too
    /// old asks for a new one with the passkey, since no other proof will do.
    pub(super) async fn reauthenticate_with_passkey(
        &mut self,
        reauthentication: &Reauthentication,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<bool, UserError> {
        match self
            .reauthenticate_caller(reauthentication, services, sink)
            .await
        {
            Err(UserError::ReauthenticationRequired) => Err(UserError::PasskeySignInRequired),
            outcome => outcome,
        }
    }

    /// Whether the user's only second factor is a passkey, for which no proof can be typed.
    pub(super) fn passkey_only(&self) -> bool {
        self.tfa.is_none() && !self.passkeys.is_empty()
    }

    /// Issues a confirmation code to an email-device user (the caller mails it).
    pub(super) async fn request_confirmation_code(
        &mut self,
        command: RequestConfirmationCode,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        self.ensure_account_open()?;
        let Some(tfa) = &self.tfa else {
            return Err(UserError::TfaNotEnabled);
        };
        if !matches!(tfa.device.secret, DeviceSecret::Email) {
            return Err(UserError::NoEmailDevice);
        }
        let at = services.clock.now();
        if let Some(sent_at) = self.confirmation_code_sent_at {
            let next = sent_at + CONFIRMATION_CODE_INTERVAL;
            if at < next {
                let wait = (next - at).whole_seconds().max(1);
                return Err(UserError::ConfirmationCodeTooSoon {
                    retry_after_secs: u64::try_from(wait).unwrap_or(1),
                });
            }
        }
        let issued = UserEvent::ConfirmationCodeIssued {
            digest: services
                .sealer
                .digest(command.code.expose_secret().trim().as_bytes()),
            expires_at: at + CONFIRMATION_CODE_TTL,
            at,
        };
        sink.write(issued, self).await;
        Ok(())
    }

    /// The confirmation-code proof: `Ok(true)` for the pending code before it expires,
    /// `Ok(false)` for anything else (no code pending, or another code). The pending code
    /// typed after its expiry is an error, not a failure, like an expired login code.
    pub(super) fn prove_confirmation_code(
        &self,
        code: &SecretString,
        services: &UserServices,
        at: OffsetDateTime,
    ) -> Result<bool, UserError> {
        let Some((digest, expires_at)) = &self.confirmation_code else {
            return Ok(false);
        };
        if !services
            .sealer
            .matches(digest, code.expose_secret().trim().as_bytes())
        {
            return Ok(false);
        }
        if at >= *expires_at {
            return Err(UserError::EmailCodeExpired);
        }
        Ok(true)
    }

    /// Whether a confirmation code is pending and unexpired: a wrong code then counts against
    /// the second factor, which is what it guesses at.
    pub(super) fn confirmation_code_pending(&self, at: OffsetDateTime) -> bool {
        self.confirmation_code
            .as_ref()
            .is_some_and(|(_, expires_at)| at < *expires_at)
    }
}
