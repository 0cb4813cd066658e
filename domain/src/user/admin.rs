//! What admins and operators do to a user: the admin role, locks, ending sessions, and the
//! record of reading the user's audit trail.

use cqrs_es::event_sink::EventSink;

use super::aggregate::User;
use super::{AuditScope, SessionEndReason, UserError, UserEvent};
use crate::services::UserServices;

impl User {
    /// Granting a role the user already has records nothing.
    pub(super) async fn grant_admin(
        &mut self,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        if !self.is_admin {
            let at = services.clock.now();
            sink.write(UserEvent::AdminGranted { at }, self).await;
        }
        Ok(())
    }
}

impl User {
    /// Records a read of the user's audit trail by someone else (the metadata says who). An
    /// erased user's trail stays readable, so this is the one command their closed stream
    /// still takes.
    pub(super) async fn record_audit_read(
        &mut self,
        scope: AuditScope,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self.erased {
            self.account()?;
        }
        let at = services.clock.now();
        sink.write(UserEvent::AuditTrailRead { scope, at }, self)
            .await;
        Ok(())
    }

    /// Locks the account: no login completes and every session ends, until an admin unlocks
    /// it. Locking a locked account records nothing.
    pub(super) async fn lock_account(
        &mut self,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        if self.account_locked {
            return Ok(());
        }
        let at = services.clock.now();
        sink.write(UserEvent::AccountLocked { at }, self).await;
        self.end_all_sessions(SessionEndReason::EndedByAdmin, at, sink)
            .await;
        Ok(())
    }

    /// Unlocks the account. Unlocking an unlocked account records nothing.
    pub(super) async fn unlock_account(
        &mut self,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        if self.account_locked {
            let at = services.clock.now();
            sink.write(UserEvent::AccountUnlocked { at }, self).await;
        }
        Ok(())
    }

    /// Ends every session of the user (an admin's action).
    pub(super) async fn end_all_sessions_by_admin(
        &mut self,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        let at = services.clock.now();
        self.end_all_sessions(SessionEndReason::EndedByAdmin, at, sink)
            .await;
        Ok(())
    }

    pub(super) async fn end_all_sessions(
        &mut self,
        reason: SessionEndReason,
        at: time::OffsetDateTime,
        sink: &EventSink<Self>,
    ) {
        let ending: Vec<_> = self.sessions.iter().map(|session| session.id).collect();
        for session_id in ending {
            let ended = UserEvent::SessionEnded {
                session_id,
                reason,
                at,
            };
            sink.write(ended, self).await;
        }
    }

    /// Refuses a login step for a locked account.
    pub(super) fn ensure_account_open(&self) -> Result<(), UserError> {
        if self.account_locked {
            Err(UserError::AccountLocked)
        } else {
            Ok(())
        }
    }
}
