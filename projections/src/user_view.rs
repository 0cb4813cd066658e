//! The user view: what `/auth/test-token` and the admin listing return. It holds no secret.

use cqrs_es::{EventEnvelope, View};
use serde::{Deserialize, Serialize};
use twofold_domain::values::{DeviceId, DeviceType, UserId};
use twofold_domain::{User, UserEvent, UserEventKind};

/// A user as clients see them.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    /// The user id (absent only before sign-up is projected).
    pub id: Option<UserId>,
    /// The email address.
    pub email: String,
    /// The display name.
    pub full_name: String,
    /// Whether a second factor is required at login.
    pub tfa_enabled: bool,
    /// The enrolled second-factor device.
    pub device: Option<DeviceView>,
    /// Whether the user may use the admin endpoints.
    pub is_admin: bool,
    /// Whether an admin locked the account.
    pub is_locked: bool,
}

/// A second-factor device as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceView {
    /// The device id.
    pub id: DeviceId,
    /// `email` or `code_generator`.
    pub device_type: DeviceType,
}

impl crate::ProjectedView for UserView {
    const NAME: &'static str = "user_view";

    fn is_changed_by(kind: UserEventKind) -> bool {
        match kind {
            UserEventKind::SignedUp
            | UserEventKind::TfaEnabled
            | UserEventKind::TfaDeviceChanged
            | UserEventKind::TfaDisabled
            | UserEventKind::AdminGranted
            | UserEventKind::AccountLocked
            | UserEventKind::AccountUnlocked
            | UserEventKind::UserErased => true,
            UserEventKind::LoggedIn
            | UserEventKind::SecondFactorRequired
            | UserEventKind::EmailCodeIssued
            | UserEventKind::ConfirmationCodeIssued
            | UserEventKind::LoginFailed
            | UserEventKind::TfaVerified
            | UserEventKind::BackupCodeConsumed
            | UserEventKind::FactorLocked
            | UserEventKind::SessionStarted
            | UserEventKind::SessionRefreshed
            | UserEventKind::SessionEnded
            | UserEventKind::PasswordChanged
            | UserEventKind::PasswordResetRequested
            | UserEventKind::PasswordReset
            | UserEventKind::SecondFactorConfirmed
            | UserEventKind::BackupCodesRegenerated
            | UserEventKind::SeedResealed
            | UserEventKind::SignUpAttempted
            | UserEventKind::AuditTrailRead
            | UserEventKind::PasskeyRegistered
            | UserEventKind::PasskeyRenamed
            | UserEventKind::PasskeyRemoved
            | UserEventKind::PasskeyUsed
            | UserEventKind::PasskeyCounterRegressed => false,
        }
    }
}

impl View<User> for UserView {
    fn update(&mut self, event: &EventEnvelope<User>) {
        match &event.payload {
            UserEvent::SignedUp {
                user_id,
                email,
                full_name,
                ..
            } => {
                self.id = Some(*user_id);
                self.email = email.as_str().to_owned();
                self.full_name = full_name.as_str().to_owned();
            }
            UserEvent::TfaDisabled { .. } => {
                self.tfa_enabled = false;
                self.device = None;
            }
            UserEvent::TfaEnabled { device, .. } | UserEvent::TfaDeviceChanged { device, .. } => {
                self.tfa_enabled = true;
                self.device = Some(DeviceView {
                    id: device.id,
                    device_type: device.device_type(),
                });
            }
            // What is left of an erased user is nothing: the view reads as no user at all.
            UserEvent::UserErased { .. } => *self = Self::default(),
            UserEvent::AdminGranted { .. } => self.is_admin = true,
            UserEvent::AccountLocked { .. } => self.is_locked = true,
            UserEvent::AccountUnlocked { .. } => self.is_locked = false,
            UserEvent::LoggedIn { .. }
            | UserEvent::SecondFactorRequired { .. }
            | UserEvent::EmailCodeIssued { .. }
            | UserEvent::ConfirmationCodeIssued { .. }
            | UserEvent::LoginFailed { .. }
            | UserEvent::TfaVerified { .. }
            | UserEvent::BackupCodeConsumed { .. }
            | UserEvent::FactorLocked { .. }
            | UserEvent::SessionStarted { .. }
            | UserEvent::SessionRefreshed { .. }
            | UserEvent::SessionEnded { .. }
            | UserEvent::PasswordChanged { .. }
            | UserEvent::PasswordResetRequested { .. }
            | UserEvent::PasswordReset { .. }
            | UserEvent::SecondFactorConfirmed { .. }
            | UserEvent::BackupCodesRegenerated { .. }
            | UserEvent::SeedResealed { .. }
            | UserEvent::SignUpAttempted { .. }
            | UserEvent::AuditTrailRead { .. }
            | UserEvent::PasskeyRegistered { .. }
            | UserEvent::PasskeyRenamed { .. }
            | UserEvent::PasskeyRemoved { .. }
            | UserEvent::PasskeyUsed { .. }
            | UserEvent::PasskeyCounterRegressed { .. } => {}
        }
    }
}
