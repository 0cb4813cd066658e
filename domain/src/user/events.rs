//! Events: the facts a `User` is folded from. Once stored, an event's shape never changes in
//! place; a new shape gets a new version and an upcaster.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::values::{
    ChallengeId, DeviceId, DeviceType, Email, FullName, KeyedDigest, PasskeyCredential, PasskeyId,
    PasskeyName, PasswordHash, RefreshTokenId, SealedSecret, SessionId, UserId,
};

/// The version every event type is at. Version 2.0 writes times in RFC 3339 (1.0 wrote the
/// `time` crate's default form, an array of numbers); [`crate::upcasters()`] reads 1.0 events.
pub const EVENT_VERSION: &str = "2.0";

/// Which factor an authentication step used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    /// The password.
    Password,
    /// A TOTP code from an authenticator app.
    Totp,
    /// A code sent by email.
    EmailCode,
    /// A single-use backup code.
    BackupCode,
    /// A passkey (a WebAuthn assertion), as the second factor or alone. Since version 2.0.
    Passkey,
}

/// An enrolled second-factor device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The device id.
    pub id: DeviceId,
    /// What kind of device, with its sealed secret if it has one.
    pub secret: DeviceSecret,
}

impl Device {
    /// The kind of device.
    pub fn device_type(&self) -> DeviceType {
        match self.secret {
            DeviceSecret::Email => DeviceType::Email,
            DeviceSecret::CodeGenerator { .. } => DeviceType::CodeGenerator,
        }
    }
}

/// A device's kind and stored secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "device_type", rename_all = "snake_case")]
pub enum DeviceSecret {
    /// Email: the secret is a fresh code per login.
    Email,
    /// Authenticator app: the TOTP seed, sealed.
    CodeGenerator {
        /// The sealed seed.
        seed: SealedSecret,
    },
}

/// Everything that can happen to a user. Its kinds, [`UserEventKind`], are its variants without
/// their fields; a kind's name is the event type the event is stored under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::EnumDiscriminants)]
#[strum_discriminants(
    name(UserEventKind),
    vis(pub),
    derive(Hash, strum::EnumIter, strum::IntoStaticStr),
    doc = "The kind of a [`UserEvent`]: its variant without the fields."
)]
pub enum UserEvent {
    /// The account was created.
    SignedUp {
        /// The user id.
        user_id: UserId,
        /// The login name.
        email: Email,
        /// The display name.
        full_name: FullName,
        /// The Argon2id hash of the password.
        password_hash: PasswordHash,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Two-factor authentication was turned on.
    TfaEnabled {
        /// The enrolled device.
        device: Device,
        /// Keyed digests of the backup codes, in the order they were issued.
        backup_codes: Vec<KeyedDigest>,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A password login completed; no second factor is required.
    LoggedIn {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The password was right and the login waits for the second factor.
    SecondFactorRequired {
        /// The challenge the pre-2FA token will name.
        challenge_id: ChallengeId,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A login code was issued for an email device (it is mailed, never stored in clear).
    EmailCodeIssued {
        /// The challenge it answers.
        challenge_id: ChallengeId,
        /// The keyed digest of the code.
        digest: KeyedDigest,
        /// When it stops being accepted.
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    /// An authentication step failed.
    LoginFailed {
        /// The factor that was wrong.
        factor: Factor,
        /// The login challenge, for a second-factor failure.
        challenge_id: Option<ChallengeId>,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The second factor was verified and the login completed.
    TfaVerified {
        /// The challenge completed.
        challenge_id: ChallengeId,
        /// Which factor: `totp` or `email_code`.
        factor: Factor,
        /// For TOTP, the time step of the accepted code: it and every earlier step are spent.
        totp_step: Option<u64>,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A backup code completed a login and is spent.
    BackupCodeConsumed {
        /// The challenge completed.
        challenge_id: ChallengeId,
        /// Which code (position in the issued set).
        index: usize,
        /// How many unused codes remain.
        remaining: usize,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Too many consecutive failures locked a factor until `until`.
    FactorLocked {
        /// The factor locked.
        factor: super::ThrottledFactor,
        /// When the lock expires by itself.
        #[serde(with = "time::serde::rfc3339")]
        until: OffsetDateTime,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A completed login started a session, with its first refresh token.
    SessionStarted {
        /// The session.
        session_id: SessionId,
        /// The refresh token issued.
        refresh_id: RefreshTokenId,
        /// The session's absolute end.
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A refresh rotated the session's refresh token.
    SessionRefreshed {
        /// The session.
        session_id: SessionId,
        /// The new refresh token.
        refresh_id: RefreshTokenId,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A session ended.
    SessionEnded {
        /// The session.
        session_id: SessionId,
        /// Why.
        reason: super::SessionEndReason,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The user changed their password.
    PasswordChanged {
        /// The Argon2id hash of the new password.
        password_hash: PasswordHash,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A password reset token was issued (and mailed).
    PasswordResetRequested {
        /// The keyed digest of the token.
        digest: KeyedDigest,
        /// When it stops working.
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The password was set with a reset token, which is spent.
    PasswordReset {
        /// The Argon2id hash of the new password.
        password_hash: PasswordHash,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A current second factor was proven for a sensitive change or a re-authentication (and
    /// is spent).
    SecondFactorConfirmed {
        /// `totp`, `backup_code`, or `email_code` (a confirmation code).
        factor: Factor,
        /// For TOTP, the accepted step: it and every earlier step are spent.
        totp_step: Option<u64>,
        /// For a backup code, which one (it is consumed).
        backup_code_index: Option<usize>,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Two-factor authentication was turned off; its device and backup codes are gone.
    TfaDisabled {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The second-factor device was replaced, with a new set of backup codes.
    TfaDeviceChanged {
        /// The new device.
        device: Device,
        /// Keyed digests of the new backup codes.
        backup_codes: Vec<KeyedDigest>,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The backup codes were replaced; the old ones no longer work.
    BackupCodesRegenerated {
        /// Keyed digests of the new codes.
        backup_codes: Vec<KeyedDigest>,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// An admin locked the account.
    AccountLocked {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// An admin unlocked the account.
    AccountUnlocked {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The user was made an admin.
    AdminGranted {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Someone tried to sign up with the user's address, and the owner is told by email.
    /// Attempts within [`super::SIGN_UP_NOTICE_INTERVAL`] of a notice record nothing.
    SignUpAttempted {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The TOTP seed was sealed again under the current sealing key, after a key rotation.
    SeedResealed {
        /// The same seed, under the new key.
        seed: SealedSecret,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The account was erased: the person's key is destroyed, so what identified them in
    /// earlier events reads as erased, and the stream is closed. Who and why are in the
    /// metadata; the event itself holds no personal data. Since version 2.0.
    UserErased {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A confirmation code was issued to an email-device user who asked for one while signed
    /// in (it is mailed, never stored in clear). It proves the second factor once, for a
    /// sensitive change or a re-authentication, never for a login. Since version 2.0.
    ConfirmationCodeIssued {
        /// The keyed digest of the code.
        digest: KeyedDigest,
        /// When it stops being accepted.
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Someone other than the user read the user's audit trail; the metadata names who and
    /// in which request, so that the auditors are audited too. Since version 2.0.
    AuditTrailRead {
        /// What was read.
        scope: AuditScope,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A passkey was registered (its registration ceremony finished). Since version 2.0.
    PasskeyRegistered {
        /// Twofold's id for it.
        passkey_id: PasskeyId,
        /// The WebAuthn credential id, base64url: what an assertion names.
        credential_id: String,
        /// The public credential as the WebAuthn library serialised it (no private key).
        credential: PasskeyCredential,
        /// The sign counter the authenticator reported at registration.
        counter: u32,
        /// The owner's name for it; personal data, sealed in the log.
        name: PasskeyName,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A passkey was renamed. Since version 2.0.
    PasskeyRenamed {
        /// Which passkey.
        passkey_id: PasskeyId,
        /// The new name; personal data, sealed in the log.
        name: PasskeyName,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A passkey was removed; it no longer signs in. Since version 2.0.
    PasskeyRemoved {
        /// Which passkey.
        passkey_id: PasskeyId,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A passkey's assertion was verified and accepted; its sign counter and backup state
    /// move on. Since version 2.0.
    PasskeyUsed {
        /// Which passkey.
        passkey_id: PasskeyId,
        /// The sign counter of the assertion (0 for authenticators that do not count).
        counter: u32,
        /// Whether the authenticator says the credential is backed up (synced).
        backup_state: bool,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A passkey's assertion had a valid signature but a sign counter that did not advance:
    /// the authenticator may have been cloned. The assertion was refused. Since version 2.0.
    PasskeyCounterRegressed {
        /// Which passkey.
        passkey_id: PasskeyId,
        /// The counter the assertion carried.
        counter: u32,
        /// The highest counter accepted before.
        stored_counter: u32,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

/// What part of a user's audit trail was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuditScope {
    /// The stored events, with their metadata.
    Events,
    /// The user's state as of an instant, folded from the events.
    StateAsOf,
    /// The readable timeline of the events (`twofold audit history`).
    Timeline,
}

impl UserEvent {
    /// What kind of event this is.
    pub fn kind(&self) -> UserEventKind {
        self.into()
    }
}

impl UserEventKind {
    /// The event type events of this kind are stored under (the variant's name).
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Every kind.
    pub fn all() -> impl Iterator<Item = Self> {
        <Self as strum::IntoEnumIterator>::iter()
    }
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        self.kind().name().to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_owned()
    }
}
