//! Personal data in the log, sealed so that it can be forgotten. What identifies a person in
//! stored events — the email address and full name of a sign-up, the client address and user
//! agent in every event's metadata — is sealed (XChaCha20-Poly1305) under a data key of that
//! person's own, with their user id and the field's name as associated data. The keys live
//! outside the log, sealed in turn under the sealing key; erasing a person destroys theirs,
//! and from then on those fields read as [`ERASED`] while the events themselves, their order
//! and their chain stay whole.
//!
//! Stored form: a sign-up whose personal fields are sealed is stored at version
//! [`SEALED_SIGN_UP_VERSION`] with each field a string `sealed:v1:<base64 nonce+ciphertext>`;
//! [`KeyRing::open`] turns it back into the current version's shape. A sealed metadata value
//! has the same form. Readers of stored events open them with the keys of the users they read
//! ([`PersonalData::keys`]) before anything else reads them.

use std::collections::HashMap;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use cqrs_es::persist::{PersistenceError, SerializedEvent};
use serde_json::Value;
use zeroize::Zeroizing;

/// What a personal field reads as once its person's key is destroyed.
pub const ERASED: &str = "[erased]";
/// The stored version of a sign-up whose email and full name are sealed.
pub const SEALED_SIGN_UP_VERSION: &str = "3.0";
/// The version a sealed sign-up reads as once opened: the event's current shape.
const OPENED_SIGN_UP_VERSION: &str = "2.0";
/// The event whose payload holds personal fields, and the fields.
const SIGN_UP: &str = "SignedUp";
const SIGN_UP_FIELDS: [&str; 2] = ["email", "full_name"];
/// The events that hold a passkey's name, which is personal data too (people name their
/// keys after themselves, their employer or their devices). Their name is sealed from the
/// first version on, so no version marks it.
const PASSKEY_NAMED: [&str; 2] = ["PasskeyRegistered", "PasskeyRenamed"];
/// The payload field of a passkey's name, and the field name its seal is bound to.
const PASSKEY_NAME: &str = "name";
const PASSKEY_NAME_FIELD: &str = "passkey_name";
/// The metadata keys that hold personal data.
const METADATA_FIELDS: [&str; 2] = ["ip", "user_agent"];
/// The prefix of a sealed value.
const SEALED: &str = "sealed:v1:";
const NONCE_BYTES: usize = 24;

/// A person's data key, in clear: only ever in memory.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// The key `bytes`.
    pub fn new(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_ref().into())
    }

    /// `plaintext` sealed as field `field` of user `user`, with a fresh `nonce`.
    pub fn seal(
        &self,
        user: &str,
        field: &str,
        plaintext: &str,
        nonce: [u8; NONCE_BYTES],
    ) -> String {
        let aad = associated_data(user, field);
        // Encryption with a valid key only fails for plaintexts over 256 GiB.
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut sealed = nonce.to_vec();
        sealed.extend(ciphertext);
        format!("{SEALED}{}", STANDARD.encode(sealed))
    }

    /// The plaintext of `sealed`, field `field` of user `user`; `None` if it does not open.
    fn open(&self, user: &str, field: &str, sealed: &str) -> Option<String> {
        let bytes = STANDARD.decode(sealed.strip_prefix(SEALED)?).ok()?;
        if bytes.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let plaintext = self
            .cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &associated_data(user, field),
                },
            )
            .ok()?;
        String::from_utf8(plaintext).ok()
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Field `field` of `user`'s, `sealed`, opened with `key`; [`ERASED`] without the key (or
/// when it does not open).
fn opened(key: Option<&DataKey>, user: &str, field: &str, sealed: &str) -> String {
    key.and_then(|key| key.open(user, field, sealed))
        .unwrap_or_else(|| ERASED.to_owned())
}

fn associated_data(user: &str, field: &str) -> Vec<u8> {
    format!("twofold personal data v1\n{user}\n{field}").into_bytes()
}

/// Whether stored JSON text holds a sealed value (and must be opened before it is read).
pub fn holds_sealed(text: &str) -> bool {
    text.contains(SEALED)
}

/// The data keys of some users, opened, for reading or writing their events.
#[derive(Default, Debug, Clone)]
pub struct KeyRing {
    keys: HashMap<String, DataKey>,
}

impl KeyRing {
    /// Adds `user`'s key.
    pub fn insert(&mut self, user: String, key: DataKey) {
        self.keys.insert(user, key);
    }

    /// `user`'s key, if it exists (it does not once they are erased).
    pub fn get(&self, user: &str) -> Option<&DataKey> {
        self.keys.get(user)
    }

    /// `event` with its personal fields opened; where its user's key is gone, they read as
    /// [`ERASED`]. Fields stored in clear (before sealing existed) are left as they are.
    pub fn open(&self, mut event: SerializedEvent) -> SerializedEvent {
        let key = self.keys.get(&event.aggregate_id);
        let user = event.aggregate_id.clone();
        let sealed_sign_up = is_sign_up_at(&event, SEALED_SIGN_UP_VERSION);
        for_each_personal_field(&mut event, SEALED_SIGN_UP_VERSION, |field, value| {
            if let Some(sealed) = value.as_str().filter(|text| text.starts_with(SEALED)) {
                *value = Value::String(opened(key, &user, field, sealed));
            }
        });
        if sealed_sign_up {
            event.event_version = OPENED_SIGN_UP_VERSION.to_owned();
        }
        if let Some(value) = passkey_name(&mut event) {
            if let Some(sealed) = value.as_str().filter(|text| text.starts_with(SEALED)) {
                *value = Value::String(opened(key, &user, PASSKEY_NAME_FIELD, sealed));
            }
        }
        event
    }

    /// `value`, as stored in metadata field `field` (`ip` or `user_agent`) of one of `user`'s
    /// events, opened in place if it is sealed; where `user`'s key is gone it reads as
    /// [`ERASED`], as [`KeyRing::open`] reads it.
    pub fn open_metadata_value(&self, user: &str, field: &str, value: &mut String) {
        debug_assert!(
            METADATA_FIELDS.contains(&field),
            "{field} is no personal field"
        );
        if value.starts_with(SEALED) {
            *value = opened(self.keys.get(user), user, field, value);
        }
    }

    /// Seals the personal fields of `event` (of the current version, in clear) under its
    /// user's key, drawing each nonce from `nonce`. An event of a user without a key here is
    /// left as it is: the writer makes sure every user it writes for has one.
    pub fn seal(&self, event: &mut SerializedEvent, mut nonce: impl FnMut() -> [u8; NONCE_BYTES]) {
        let Some(key) = self.keys.get(&event.aggregate_id) else {
            return;
        };
        let user = event.aggregate_id.clone();
        let open_sign_up = is_sign_up_at(event, OPENED_SIGN_UP_VERSION);
        for_each_personal_field(event, OPENED_SIGN_UP_VERSION, |field, value| {
            if let Some(text) = value.as_str().filter(|text| !text.starts_with(SEALED)) {
                *value = Value::String(key.seal(&user, field, text, nonce()));
            }
        });
        if open_sign_up {
            event.event_version = SEALED_SIGN_UP_VERSION.to_owned();
        }
        // Sealed whatever it reads like (a name may start like a sealed value), unless it is
        // this user's sealed name already.
        if let Some(value) = passkey_name(event) {
            if let Some(text) = value
                .as_str()
                .filter(|text| key.open(&user, PASSKEY_NAME_FIELD, text).is_none())
            {
                *value = Value::String(key.seal(&user, PASSKEY_NAME_FIELD, text, nonce()));
            }
        }
    }
}

/// The name field of a passkey event's payload, if `event` is one that has it.
fn passkey_name(event: &mut SerializedEvent) -> Option<&mut Value> {
    let kind = PASSKEY_NAMED
        .iter()
        .find(|kind| **kind == event.event_type)?;
    event.payload.get_mut(*kind)?.get_mut(PASSKEY_NAME)
}

/// Whether `event` is a sign-up stored at `version`.
fn is_sign_up_at(event: &SerializedEvent, version: &str) -> bool {
    event.event_type == SIGN_UP && event.event_version == version
}

/// Calls `each` with the name and value of every personal field of `event`: the sign-up's
/// address and name when it is a sign-up at `sign_up_version`, and the metadata's client
/// address and user agent.
fn for_each_personal_field(
    event: &mut SerializedEvent,
    sign_up_version: &str,
    mut each: impl FnMut(&str, &mut Value),
) {
    if is_sign_up_at(event, sign_up_version) {
        if let Some(fields) = event
            .payload
            .get_mut(SIGN_UP)
            .and_then(Value::as_object_mut)
        {
            for field in SIGN_UP_FIELDS {
                if let Some(value) = fields.get_mut(field) {
                    each(field, value);
                }
            }
        }
    }
    if let Some(metadata) = event.metadata.as_object_mut() {
        for field in METADATA_FIELDS {
            if let Some(value) = metadata.get_mut(field) {
                each(field, value);
            }
        }
    }
}

/// Removes the personal fields from the metadata of an event that has no key to be sealed
/// under (one recorded after its user was erased, such as a read of their audit trail).
pub fn strip_personal_metadata(event: &mut SerializedEvent) {
    if let Some(metadata) = event.metadata.as_object_mut() {
        for field in METADATA_FIELDS {
            metadata.remove(field);
        }
    }
}

/// Where the data keys are kept (outside the log), for the readers of stored events.
#[async_trait]
pub trait PersonalData: Send + Sync {
    /// The keys of `users` that still exist.
    async fn keys(&self, users: &[&str]) -> Result<KeyRing, PersistenceError>;
    /// The keys of every user that still exists (for a whole replay).
    async fn all_keys(&self) -> Result<KeyRing, PersistenceError>;
}

/// No keys at all: sealed fields read as erased, fields in clear as they are. For readers of
/// logs that hold no sealed data (tests of the log itself, tools).
pub struct NoKeys;

#[async_trait]
impl PersonalData for NoKeys {
    async fn keys(&self, _: &[&str]) -> Result<KeyRing, PersistenceError> {
        Ok(KeyRing::default())
    }

    async fn all_keys(&self) -> Result<KeyRing, PersistenceError> {
        Ok(KeyRing::default())
    }
}

/// `logged` opened with the keys of their users, read from `personal` at once.
pub async fn open_logged(
    personal: &dyn PersonalData,
    logged: Vec<crate::log::LoggedEvent>,
) -> Result<Vec<crate::log::LoggedEvent>, PersistenceError> {
    let ring = ring_of(personal, logged.iter().map(|logged| &logged.event)).await?;
    Ok(logged
        .into_iter()
        .map(|logged| crate::log::LoggedEvent {
            event: ring.open(logged.event),
            ..logged
        })
        .collect())
}

/// `events` opened with the keys of their users, read from `personal` at once.
pub async fn open_events(
    personal: &dyn PersonalData,
    events: Vec<SerializedEvent>,
) -> Result<Vec<SerializedEvent>, PersistenceError> {
    let ring = ring_of(personal, events.iter()).await?;
    Ok(events.into_iter().map(|event| ring.open(event)).collect())
}

/// The keys of the users of `events`, read from `personal` in one call.
async fn ring_of<'a>(
    personal: &dyn PersonalData,
    events: impl Iterator<Item = &'a SerializedEvent>,
) -> Result<KeyRing, PersistenceError> {
    let mut users: Vec<&str> = events.map(|event| event.aggregate_id.as_str()).collect();
    if users.is_empty() {
        // No round trip for no keys: an idle projector's every poll reads no events.
        return Ok(KeyRing::default());
    }
    users.sort_unstable();
    users.dedup();
    personal.keys(&users).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(byte: u8) -> DataKey {
        DataKey::new(Zeroizing::new([byte; 32]))
    }

    fn sign_up(user: &str) -> SerializedEvent {
        SerializedEvent {
            aggregate_id: user.to_owned(),
            sequence: 1,
            aggregate_type: "User".to_owned(),
            event_type: "SignedUp".to_owned(),
            event_version: "2.0".to_owned(),
            payload: json!({"SignedUp": {"user_id": user, "email": "ada@example.com",
                "full_name": "Ada Lovelace", "password_hash": "h", "at": "2026-01-01T00:00:00Z"}}),
            metadata: json!({"actor": "anonymous", "ip": "203.0.113.7", "user_agent": "curl/8",
                "request_id": "r"}),
        }
    }

    fn counter() -> impl FnMut() -> [u8; NONCE_BYTES] {
        let mut n = 0u8;
        move || {
            n += 1;
            [n; NONCE_BYTES]
        }
    }

    #[test]
    fn sealed_fields_hold_nothing_of_the_person_and_open_back_with_the_key() {
        let mut ring = KeyRing::default();
        ring.insert("u1".to_owned(), key(7));
        let mut event = sign_up("u1");
        ring.seal(&mut event, counter());
        assert_eq!(event.event_version, SEALED_SIGN_UP_VERSION);
        let stored = serde_json::to_string(&(&event.payload, &event.metadata)).unwrap();
        for clear in ["ada@example.com", "Ada Lovelace", "203.0.113.7", "curl/8"] {
            assert!(!stored.contains(clear), "{stored}");
        }
        assert!(
            stored.contains("\"request_id\":\"r\""),
            "not personal, not sealed"
        );
        assert_eq!(ring.open(event), sign_up("u1"));
    }

    #[test]
    fn without_the_key_the_fields_read_as_erased_and_the_rest_is_kept() {
        let mut ring = KeyRing::default();
        ring.insert("u1".to_owned(), key(7));
        let mut event = sign_up("u1");
        ring.seal(&mut event, counter());
        let opened = KeyRing::default().open(event);
        assert_eq!(opened.event_version, "2.0");
        assert_eq!(opened.payload["SignedUp"]["email"], ERASED);
        assert_eq!(opened.payload["SignedUp"]["full_name"], ERASED);
        assert_eq!(opened.payload["SignedUp"]["password_hash"], "h");
        assert_eq!(opened.metadata["ip"], ERASED);
        assert_eq!(opened.metadata["user_agent"], ERASED);
        assert_eq!(opened.metadata["actor"], "anonymous");
    }

    #[test]
    fn a_sealed_field_opens_only_for_its_user_and_field() {
        let mut ring = KeyRing::default();
        ring.insert("u1".to_owned(), key(7));
        ring.insert("u2".to_owned(), key(7));
        let mut event = sign_up("u1");
        ring.seal(&mut event, counter());
        // Moved to another user's stream, or from the email field to the name field, it does
        // not open (the same key notwithstanding).
        let mut moved = event.clone();
        moved.aggregate_id = "u2".to_owned();
        assert_eq!(ring.open(moved).payload["SignedUp"]["email"], ERASED);
        let mut swapped = event.clone();
        let email = swapped.payload["SignedUp"]["email"].clone();
        swapped.payload["SignedUp"]["full_name"] = email;
        assert_eq!(ring.open(swapped).payload["SignedUp"]["full_name"], ERASED);
    }

    fn passkey_registered(user: &str) -> SerializedEvent {
        SerializedEvent {
            aggregate_id: user.to_owned(),
            sequence: 2,
            aggregate_type: "User".to_owned(),
            event_type: "PasskeyRegistered".to_owned(),
            event_version: "2.0".to_owned(),
            payload: json!({"PasskeyRegistered": {"passkey_id": "p", "credential_id": "c",
                "credential": {}, "counter": 0, "name": "Ada's phone",
                "at": "2026-01-01T00:00:00Z"}}),
            metadata: json!({"actor": "anonymous"}),
        }
    }

    #[test]
    fn a_passkeys_name_is_sealed_and_reads_as_erased_without_the_key() {
        let mut ring = KeyRing::default();
        ring.insert("u1".to_owned(), key(7));
        let mut event = passkey_registered("u1");
        ring.seal(&mut event, counter());
        let stored = event.payload.to_string();
        assert!(!stored.contains("Ada's phone"), "{stored}");
        assert_eq!(event.event_version, "2.0");
        assert_eq!(ring.open(event.clone()), passkey_registered("u1"));
        let opened = KeyRing::default().open(event);
        assert_eq!(opened.payload["PasskeyRegistered"]["name"], ERASED);
        assert_eq!(opened.payload["PasskeyRegistered"]["credential_id"], "c");
    }

    /// Keys that fail to be read: a reader that asks for them fails.
    struct Unreadable;

    #[async_trait]
    impl PersonalData for Unreadable {
        async fn keys(&self, _: &[&str]) -> Result<KeyRing, PersistenceError> {
            Err(PersistenceError::UnknownError(
                "the keys were asked for".into(),
            ))
        }

        async fn all_keys(&self) -> Result<KeyRing, PersistenceError> {
            Err(PersistenceError::UnknownError(
                "the keys were asked for".into(),
            ))
        }
    }

    #[tokio::test]
    async fn no_events_are_opened_without_asking_for_keys() {
        let opened = open_events(&Unreadable, Vec::new()).await;
        assert!(opened.is_ok_and(|events| events.is_empty()));
        let asked = open_events(&Unreadable, vec![sign_up("u1")]).await;
        assert!(asked.is_err());
    }

    #[test]
    fn fields_stored_in_clear_before_sealing_read_as_they_are() {
        assert_eq!(KeyRing::default().open(sign_up("u1")), sign_up("u1"));
    }
}
