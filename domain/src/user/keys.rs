//! Sealing-key rotation: secrets sealed under a retired key move to the current one.
//!
//! Only the TOTP seed can move: it is encrypted, so it can be opened and sealed again. Backup
//! codes, emailed codes and reset tokens are kept as keyed digests, which cannot be re-keyed;
//! they stay checkable while their key is configured as retired, and a regenerated set (or
//! the short life of the others) moves them to the current key.

use std::collections::BTreeSet;

use cqrs_es::event_sink::EventSink;
use secrecy::ExposeSecret;

use super::aggregate::User;
use super::{DeviceSecret, UserError, UserEvent};
use crate::services::UserServices;

impl User {
    /// The ids of the sealing keys this user's live secrets are under: the TOTP seed, unused
    /// backup codes, a pending reset token and open emailed codes. A retired key may be
    /// dropped from the configuration once no user holds it.
    pub fn sealing_key_ids(&self) -> BTreeSet<&str> {
        let seed = self.tfa.iter().filter_map(|tfa| match &tfa.device.secret {
            DeviceSecret::CodeGenerator { seed } => Some(seed.key_id.as_str()),
            DeviceSecret::Email => None,
        });
        let backup_codes = self
            .tfa
            .iter()
            .flat_map(|tfa| tfa.backup_codes.iter().flatten());
        let email_codes = self
            .challenges
            .iter()
            .filter_map(|challenge| challenge.email_code.as_ref().map(|(digest, _)| digest));
        let reset = self.password_reset.iter().map(|(digest, _)| digest);
        seed.chain(
            backup_codes
                .chain(email_codes)
                .chain(reset)
                .map(|digest| digest.key_id.as_str()),
        )
        .collect()
    }

    /// Reseals the TOTP seed under the current key. A user with no seed, or whose seed is
    /// already under the current key, records nothing, so the command can be run again.
    pub(super) async fn reseal_secrets(
        &mut self,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.account()?;
        let Some(DeviceSecret::CodeGenerator { seed }) =
            self.tfa.as_ref().map(|tfa| &tfa.device.secret)
        else {
            return Ok(());
        };
        if seed.key_id == services.sealer.current_key_id() {
            return Ok(());
        }
        let opened = services
            .sealer
            .open(seed)
            .map_err(|_| UserError::SecretUnreadable)?;
        let seed = services.sealer.seal(opened.expose_secret());
        let at = services.clock.now();
        sink.write(UserEvent::SeedResealed { seed, at }, self).await;
        Ok(())
    }
}
