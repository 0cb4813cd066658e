//! Upcasters: how events stored in an older shape are read as the current one. Stored events
//! are never rewritten, so every reader of the store (the event store that loads aggregates,
//! replays, exports) applies [`upcasters()`] before deserialising a row.
//!
//! Version 1.0 → 2.0: times. Version 1.0 stored every time in the `time` crate's default serde
//! form, an array of nine numbers — year, day of the year, hour, minute, second, nanosecond,
//! and the UTC offset's hours, minutes and seconds (`[2026,332,21,4,5,500000000,0,0,0]`) —
//! which an auditor reading the table with SQL or a log tool cannot read. Version 2.0 stores
//! RFC 3339 (`"2026-11-28T21:04:05.5Z"`). The upcaster rewrites exactly the fields that are
//! times, listed per event type below; it does not guess from shapes.

use std::str::FromStr;

use cqrs_es::persist::{EventUpcaster, SemanticVersion, SerializedEvent};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Date, PrimitiveDateTime, Time, UtcOffset};

/// The version whose payloads hold times in RFC 3339.
const RFC3339_TIMES: &str = "2.0";

/// Every event type of version 1.0, with the payload fields that hold a time.
pub(crate) const TIME_FIELDS_V1_0: [(&str, &[&str]); 24] = [
    ("SignedUp", &["at"]),
    ("TfaEnabled", &["at"]),
    ("LoggedIn", &["at"]),
    ("SecondFactorRequired", &["at"]),
    ("EmailCodeIssued", &["expires_at"]),
    ("LoginFailed", &["at"]),
    ("TfaVerified", &["at"]),
    ("BackupCodeConsumed", &["at"]),
    ("FactorLocked", &["until", "at"]),
    ("SessionStarted", &["expires_at", "at"]),
    ("SessionRefreshed", &["at"]),
    ("SessionEnded", &["at"]),
    ("PasswordChanged", &["at"]),
    ("PasswordResetRequested", &["expires_at", "at"]),
    ("PasswordReset", &["at"]),
    ("SecondFactorConfirmed", &["at"]),
    ("TfaDisabled", &["at"]),
    ("TfaDeviceChanged", &["at"]),
    ("BackupCodesRegenerated", &["at"]),
    ("AccountLocked", &["at"]),
    ("AccountUnlocked", &["at"]),
    ("AdminGranted", &["at"]),
    ("SignUpAttempted", &["at"]),
    ("SeedResealed", &["at"]),
];

/// The upcasters every reader of stored `User` events must use, in the order they apply
/// (oldest version first), as `PersistedEventStore::with_upcasters` and
/// `QueryReplay::with_upcasters` take them.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(TimesToRfc3339)]
}

/// Version 1.0 → 2.0, for every event type: times become RFC 3339 strings.
///
/// cqrs-es's `SemanticVersionEventUpcaster` would do for one type, but it labels what it
/// returns `2.0.0`, while new events say `2.0`; a reader of the log should see one label.
struct TimesToRfc3339;

impl EventUpcaster for TimesToRfc3339 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        let older = match (
            SemanticVersion::from_str(RFC3339_TIMES),
            SemanticVersion::from_str(event_version),
        ) {
            (Ok(target), Ok(stored)) => target.supersedes(&stored),
            _ => false,
        };
        older && time_fields_v1_0(event_type).is_some()
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(fields) = time_fields_v1_0(&event.event_type) {
            event.payload = times_to_rfc3339(event.payload, &event.event_type, fields);
        }
        event.event_version = RFC3339_TIMES.to_owned();
        event
    }
}

/// The time fields of `event_type` at version 1.0, if it is an event type.
fn time_fields_v1_0(event_type: &str) -> Option<&'static [&'static str]> {
    TIME_FIELDS_V1_0
        .iter()
        .find(|(name, _)| *name == event_type)
        .map(|(_, fields)| *fields)
}

/// Applies `upcasters` to one stored row, as cqrs-es's event store does, for readers that
/// fetch rows themselves.
pub fn upcast(upcasters: &[Box<dyn EventUpcaster>], event: SerializedEvent) -> SerializedEvent {
    upcasters.iter().fold(event, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    })
}

/// Rewrites the named time fields of a 1.0 payload (`{"<EventType>": {fields}}`) into RFC 3339.
/// A field that is not a readable 1.0 time is left as it is, so the row then fails to
/// deserialise with an error naming it, rather than being guessed at.
fn times_to_rfc3339(mut payload: Value, event_type: &str, fields: &[&str]) -> Value {
    if let Some(body) = payload.get_mut(event_type).and_then(Value::as_object_mut) {
        for field in fields {
            if let Some(value) = body.get_mut(*field) {
                if let Some(text) = rfc3339_from_v1_0(value) {
                    *value = Value::String(text);
                }
            }
        }
    }
    payload
}

/// A version 1.0 time (the nine-number array) in RFC 3339, if it is one.
fn rfc3339_from_v1_0(value: &Value) -> Option<String> {
    let numbers: Vec<i64> = value
        .as_array()?
        .iter()
        .map(Value::as_i64)
        .collect::<Option<_>>()?;
    let [year, ordinal, hour, minute, second, nanosecond, offset_hours, offset_minutes, offset_seconds] =
        numbers.as_slice()
    else {
        return None;
    };
    let date =
        Date::from_ordinal_date(i32::try_from(*year).ok()?, u16::try_from(*ordinal).ok()?).ok()?;
    let time = Time::from_hms_nano(
        u8::try_from(*hour).ok()?,
        u8::try_from(*minute).ok()?,
        u8::try_from(*second).ok()?,
        u32::try_from(*nanosecond).ok()?,
    )
    .ok()?;
    let offset = UtcOffset::from_hms(
        i8::try_from(*offset_hours).ok()?,
        i8::try_from(*offset_minutes).ok()?,
        i8::try_from(*offset_seconds).ok()?,
    )
    .ok()?;
    PrimitiveDateTime::new(date, time)
        .assume_offset(offset)
        .format(&Rfc3339)
        .ok()
}
