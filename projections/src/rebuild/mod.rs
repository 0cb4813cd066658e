//! Rebuilding the views from the log, checking them, and swapping the rebuilt ones in.
//!
//! On Postgres, the rebuild reads the log once in a single snapshot (rows below the snapshot's
//! xmin, so its end is a checkpoint), folds each user's events in memory and bulk-inserts the
//! results into shadow tables (`<view>_rebuild`), which it makes while it reads and writes
//! without waiting for their commits' flush to disk (they are scratch until a swap, whose
//! commit waits for everything before it). It then catches the shadow tables up with
//! what was committed meanwhile, compares them row by row with the live views, and with
//! `apply` swaps them in: one transaction locks the views, applies the last events committed
//! since, and renames the shadow tables into place. Requests wait for that lock for as long
//! as the last events take and never see a half-built view; a commit whose dispatch waited
//! for the lock writes to the new table, and the catch-up projector follows on as before.
//!
//! In memory (the embedded mode) the same happens on the in-memory views.

mod fold;
mod memory;
mod postgres;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use cqrs_es::persist::PersistenceError;
use serde_json::Value;

use crate::log::{database, Checkpoint, EventLog, Upcasters};
use crate::{by_user, Follower, ProjectedView, SessionsView, UserView};

pub use memory::rebuild_memory;
pub use postgres::rebuild_postgres;

/// Events read per catch-up batch.
const CATCH_UP_BATCH: usize = 5000;

/// A difference between a live view row and the rebuilt one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The user.
    pub user: String,
    /// The view.
    pub view: &'static str,
    /// The top-level field of the view, or `(row)` when one side has no row.
    pub field: String,
    /// The live value (JSON), or `absent`.
    pub live: String,
    /// The rebuilt value (JSON), or `absent`.
    pub rebuilt: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "user {} view {} field {}: live {} rebuilt {}",
            self.user, self.view, self.field, self.live, self.rebuilt
        )
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Default)]
pub struct RebuildReport {
    /// Events replayed by the snapshot scan.
    pub events: usize,
    /// Users they belong to.
    pub users: usize,
    /// How long reading, folding and writing the shadow views took.
    pub elapsed: Duration,
    /// Events committed during the rebuild and applied to the rebuilt views afterwards.
    pub caught_up: usize,
    /// Every difference between the live and the rebuilt views.
    pub differences: Vec<Difference>,
    /// Whether the rebuilt views were swapped in.
    pub applied: bool,
}

impl RebuildReport {
    /// Replay speed.
    pub fn events_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            count_as_f64(self.events) / seconds
        } else {
            0.0
        }
    }
}

#[allow(clippy::cast_precision_loss)] // a rate for people to read
fn count_as_f64(count: usize) -> f64 {
    count as f64
}

/// A rebuild that could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Another rebuild holds the lock.
    #[error("another views rebuild is running")]
    Busy,
    /// Reading or writing failed.
    #[error(transparent)]
    Store(#[from] PersistenceError),
    /// The log breaks its own rules (a sequence gap in one user's events).
    #[error("the log of user {user} jumps from sequence {after} to {found}")]
    Gap {
        /// The user.
        user: String,
        /// The last sequence seen.
        after: usize,
        /// The next one found.
        found: usize,
    },
}

impl From<sqlx::Error> for RebuildError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(database(error))
    }
}

impl From<serde_json::Error> for RebuildError {
    fn from(error: serde_json::Error) -> Self {
        Self::Store(error.into())
    }
}

/// Reads the log after `from` into `followers` until it is exhausted; returns the new
/// checkpoint and how many events it read.
async fn catch_up(
    log: &dyn EventLog,
    followers: &[&dyn Follower],
    upcasters: &Upcasters,
    mut from: Checkpoint,
) -> Result<(Checkpoint, usize), RebuildError> {
    let mut read = 0;
    loop {
        let events = log.read_after(from, CATCH_UP_BATCH).await?;
        let Some(last) = events.last().map(|event| event.checkpoint) else {
            return Ok((from, read));
        };
        read += events.len();
        let batch = by_user(events, upcasters)?;
        for follower in followers {
            follower.follow(&batch).await?;
        }
        from = last;
    }
}

/// The differences between two sets of view rows, field by field.
fn compare(
    view: &'static str,
    live: &BTreeMap<String, Value>,
    rebuilt: &BTreeMap<String, Value>,
) -> Vec<Difference> {
    let mut differences = Vec::new();
    let users: BTreeSet<&String> = live.keys().chain(rebuilt.keys()).collect();
    for user in users {
        let difference = |field: &str, live: String, rebuilt: String| Difference {
            user: user.clone(),
            view,
            field: field.to_owned(),
            live,
            rebuilt,
        };
        match (live.get(user), rebuilt.get(user)) {
            (Some(Value::Object(live)), Some(Value::Object(rebuilt))) => {
                let fields: BTreeSet<&String> = live.keys().chain(rebuilt.keys()).collect();
                for field in fields {
                    let (live, rebuilt) = (live.get(field), rebuilt.get(field));
                    if live != rebuilt {
                        differences.push(difference(field, shown(live), shown(rebuilt)));
                    }
                }
            }
            (Some(live), Some(rebuilt)) if live != rebuilt => {
                differences.push(difference("(row)", live.to_string(), rebuilt.to_string()));
            }
            (Some(live), None) => {
                differences.push(difference("(row)", live.to_string(), "absent".to_owned()));
            }
            (None, Some(rebuilt)) => {
                differences.push(difference(
                    "(row)",
                    "absent".to_owned(),
                    rebuilt.to_string(),
                ));
            }
            _ => {}
        }
    }
    differences
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "absent".to_owned(), Value::to_string)
}

/// The names of the views a rebuild covers.
pub const VIEWS: [&str; 2] = [UserView::NAME, SessionsView::NAME];

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_changed_field_a_missing_row_and_an_extra_row_are_each_a_difference() {
        let live = BTreeMap::from([
            ("a".to_owned(), json!({"email": "a@x", "is_admin": true})),
            ("b".to_owned(), json!({"email": "b@x"})),
        ]);
        let rebuilt = BTreeMap::from([
            ("a".to_owned(), json!({"email": "a@x", "is_admin": false})),
            ("c".to_owned(), json!({"email": "c@x"})),
        ]);
        let found: Vec<String> = compare("user_view", &live, &rebuilt)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "user a view user_view field is_admin: live true rebuilt false",
                r#"user b view user_view field (row): live {"email":"b@x"} rebuilt absent"#,
                r#"user c view user_view field (row): live absent rebuilt {"email":"c@x"}"#,
            ]
        );
    }
}
