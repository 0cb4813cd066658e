//! Version 1.0 events (times as arrays of numbers) read as version 2.0 (times in RFC 3339).

use std::collections::BTreeSet;

use cqrs_es::persist::SerializedEvent;
use cqrs_es::DomainEvent;
use serde_json::{json, Value};

use super::events::one_of_each_stored_at_1_0;
use super::*;
use crate::upcasters::{upcast, upcasters, TIME_FIELDS_V1_0};
use crate::user::EVENT_VERSION;

/// The names of the payload fields of `event` (as stored now) that hold an RFC 3339 time.
fn rfc3339_fields(event: &UserEvent) -> BTreeSet<String> {
    let payload = serde_json::to_value(event).unwrap();
    payload[event.event_type()]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, value)| {
            value.as_str().is_some_and(|text| {
                OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
            })
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// `event` as version 1.0 stored it: each time in the `time` crate's default serde form.
fn stored_at_v1_0(event: &UserEvent) -> SerializedEvent {
    let event_type = event.event_type();
    let mut payload = serde_json::to_value(event).unwrap();
    for field in rfc3339_fields(event) {
        let slot = &mut payload[&event_type][&field];
        let time = OffsetDateTime::parse(
            slot.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        *slot = serde_json::to_value(time).unwrap();
    }
    row(event_type, "1.0", payload)
}

fn row(event_type: String, version: &str, payload: Value) -> SerializedEvent {
    SerializedEvent::new(
        user_id().to_string(),
        1,
        "User".to_owned(),
        event_type,
        version.to_owned(),
        payload,
        json!({ "actor": "anonymous" }),
    )
}

fn read(row: SerializedEvent) -> Result<UserEvent, serde_json::Error> {
    serde_json::from_value(row.payload)
}

#[test]
fn new_events_store_their_times_in_rfc_3339() {
    let json = serde_json::to_value(session_started(0)).unwrap();
    assert_eq!(json["SessionStarted"]["at"], "2026-01-01T00:00:00Z");
    assert_eq!(json["SessionStarted"]["expires_at"], "2026-01-31T00:00:00Z");
    assert_eq!(EVENT_VERSION, "2.0");
}

#[test]
fn a_1_0_time_is_the_nine_numbers_of_the_time_crate_and_reads_as_the_same_instant() {
    let payload = json!({ "LoggedIn": { "at": [2026, 332, 21, 4, 5, 500_000_000, 0, 0, 0] } });
    let upcast = upcast(&upcasters(), row("LoggedIn".to_owned(), "1.0", payload));
    assert_eq!(upcast.event_version, "2.0");
    assert_eq!(upcast.payload["LoggedIn"]["at"], "2026-11-28T21:04:05.5Z");
    let expected = OffsetDateTime::from_unix_timestamp_nanos(1_795_899_845_500_000_000).unwrap();
    assert_eq!(read(upcast).unwrap(), UserEvent::LoggedIn { at: expected });
}

#[test]
fn every_event_type_stored_at_1_0_reads_back_as_the_event_it_was() {
    let upcasters = upcasters();
    for event in one_of_each_stored_at_1_0() {
        let stored = stored_at_v1_0(&event);
        assert!(read(stored.clone()).is_err(), "1.0 needs the upcaster");
        let current = upcast(&upcasters, stored);
        assert_eq!(current.event_version, EVENT_VERSION);
        assert_eq!(read(current).unwrap(), event);
    }
}

#[test]
fn the_upcaster_rewrites_exactly_the_fields_that_are_times_in_every_event_type() {
    let listed: BTreeSet<(String, BTreeSet<String>)> = TIME_FIELDS_V1_0
        .iter()
        .map(|(event_type, fields)| {
            let fields = fields.iter().map(|field| (*field).to_owned()).collect();
            ((*event_type).to_owned(), fields)
        })
        .collect();
    let found: BTreeSet<(String, BTreeSet<String>)> = one_of_each_stored_at_1_0()
        .iter()
        .map(|event| (event.event_type(), rfc3339_fields(event)))
        .collect();
    assert_eq!(listed, found);
}

#[test]
fn an_event_of_the_current_version_is_read_as_it_is() {
    let upcasters = upcasters();
    for event in one_of_each_stored_at_1_0() {
        let payload = serde_json::to_value(&event).unwrap();
        let stored = row(event.event_type(), EVENT_VERSION, payload.clone());
        assert_eq!(upcast(&upcasters, stored).payload, payload);
    }
}

#[test]
fn a_1_0_time_that_is_not_a_time_is_left_for_reading_to_refuse_without_a_panic() {
    for broken in [
        json!([2026, 400, 0, 0, 0, 0, 0, 0, 0]),
        json!([2026, 332, 24, 0, 0, 0, 0, 0, 0]),
        json!([2026, 332, 0, 0]),
        json!(["2026", 332, 0, 0, 0, 0, 0, 0, 0]),
        json!("yesterday"),
    ] {
        let payload = json!({ "AdminGranted": { "at": broken.clone() } });
        let upcast = upcast(&upcasters(), row("AdminGranted".to_owned(), "1.0", payload));
        assert_eq!(upcast.payload["AdminGranted"]["at"], broken);
        assert!(read(upcast).is_err());
    }
}

#[test]
fn only_older_versions_of_known_event_types_are_upcast() {
    let upcasters = upcasters();
    let can = |event_type: &str, version: &str| {
        upcasters
            .iter()
            .any(|upcaster| upcaster.can_upcast(event_type, version))
    };
    assert!(can("SignedUp", "1.0"));
    assert!(can("SeedResealed", "1.9"));
    assert!(!can("SignedUp", "2.0"));
    assert!(!can("SignedUp", "2.1"));
    assert!(!can("SignedUp", "not a version"));
    assert!(!can("SignedUp", ""));
    assert!(!can("SomethingElse", "1.0"));
}
