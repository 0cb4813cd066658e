//! The log stays readable for ever: real rows stored at event version 1.0 (the fixture in
//! `fixtures/`, never regenerated) still load through the domain's upcasters, fold into each
//! user's state and project into the views, exactly as they did when they were written.
//!
//! The views are driven through `View::update` alone, so this holds whatever stores them.

// Test code: any step that fails should fail the test at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::{Aggregate, EventEnvelope, View};
use serde::Deserialize;
use serde_json::{json, Value};
use twofold_domain::upcasters::upcast;
use twofold_domain::user::EVENT_VERSION;
use twofold_domain::{upcasters, User};
use twofold_projections::{SessionsView, UserView};

/// Rows of the `events` table as stored at version 1.0.
const EVENTS_V1_0: &str = include_str!("fixtures/events-v1.0.json");
/// Each user's folded state and views after those rows, keyed by aggregate id.
const EXPECTED_V1_0: &str = include_str!("fixtures/expected-v1.0.json");

/// One row of the `events` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRow {
    aggregate_type: String,
    aggregate_id: String,
    sequence: usize,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
    #[allow(dead_code)] // Kept for a reader of the fixture; nothing is folded from it.
    recorded_at: String,
}

fn stored_rows() -> Vec<SerializedEvent> {
    let rows: Vec<StoredRow> = serde_json::from_str(EVENTS_V1_0).unwrap();
    rows.into_iter()
        .map(|row| {
            SerializedEvent::new(
                row.aggregate_id,
                row.sequence,
                row.aggregate_type,
                row.event_type,
                row.event_version,
                row.payload,
                row.metadata,
            )
        })
        .collect()
}

/// The rows as a reader of the store gets them, through `upcasters`: typed events, or the
/// first that does not read.
fn read(
    rows: Vec<SerializedEvent>,
    upcasters: &[Box<dyn EventUpcaster>],
) -> Result<Vec<EventEnvelope<User>>, String> {
    rows.into_iter()
        .map(|row| upcast(upcasters, row))
        .map(|row| {
            let described = format!(
                "{} {} v{}",
                row.aggregate_id, row.event_type, row.event_version
            );
            EventEnvelope::<User>::try_from(row).map_err(|error| format!("{described}: {error}"))
        })
        .collect()
}

/// Each user's state and views, folded and projected from their events in sequence order.
fn fold(events: Vec<EventEnvelope<User>>) -> BTreeMap<String, Value> {
    let mut by_user: BTreeMap<String, Vec<EventEnvelope<User>>> = BTreeMap::new();
    for event in events {
        by_user
            .entry(event.aggregate_id.clone())
            .or_default()
            .push(event);
    }
    by_user
        .into_iter()
        .map(|(id, mut events)| {
            events.sort_by_key(|event| event.sequence);
            let mut state = User::default();
            let mut user_view = UserView::default();
            let mut sessions_view = SessionsView::default();
            for event in events {
                user_view.update(&event);
                sessions_view.update(&event);
                state.apply(event.payload);
            }
            let folded = json!({
                "state": state,
                "user_view": user_view,
                "sessions_view": sessions_view,
            });
            (id, folded)
        })
        .collect()
}

#[test]
fn the_fixture_holds_every_event_type_at_version_1_0_in_unbroken_sequences() {
    let rows = stored_rows();
    let types: BTreeSet<&str> = rows.iter().map(|row| row.event_type.as_str()).collect();
    assert_eq!(types.len(), 24, "{types:?}");
    assert!(rows.iter().all(|row| row.event_version == "1.0"));
    assert!(rows.iter().all(|row| row.aggregate_type == "User"));
    let mut sequences: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for row in &rows {
        sequences
            .entry(row.aggregate_id.as_str())
            .or_default()
            .push(row.sequence);
    }
    for (id, mut numbers) in sequences {
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=numbers.len()).collect::<Vec<_>>(), "{id}");
    }
}

#[test]
fn events_stored_at_version_1_0_fold_and_project_to_the_expected_results() {
    let folded = fold(read(stored_rows(), &upcasters()).unwrap());
    let expected: BTreeMap<String, Value> = serde_json::from_str(EXPECTED_V1_0).unwrap();
    assert_eq!(
        folded.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (id, user) in &folded {
        for part in ["state", "user_view", "sessions_view"] {
            assert_eq!(user[part], expected[id][part], "{part} of user {id}");
        }
    }
}

#[test]
fn without_the_upcasters_the_1_0_rows_do_not_read() {
    assert!(read(stored_rows(), &[]).is_err());
}

#[test]
fn through_the_upcasters_every_row_reads_at_the_current_version() {
    let upcasters = upcasters();
    for row in stored_rows() {
        let current = upcast(&upcasters, row);
        assert_eq!(
            current.event_version, EVENT_VERSION,
            "{}",
            current.event_type
        );
        let times = current.payload[&current.event_type]
            .as_object()
            .unwrap()
            .values()
            .filter(|value| value.is_array() && value.as_array().unwrap().len() == 9)
            .count();
        assert_eq!(times, 0, "{} still holds a 1.0 time", current.event_type);
    }
}
