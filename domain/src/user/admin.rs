//! Administrative role changes.

use cqrs_es::event_sink::EventSink;

use super::aggregate::User;
use super::{UserError, UserEvent};
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
