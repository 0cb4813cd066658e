//! Reading the log back: a user's own security history.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use twofold_domain::values::UserId;
use twofold_domain::{EventMetadata, UserError};
use twofold_projections::{history_entry, HistoryEntry};

use super::{App, AppError};

/// The most entries one page of history may hold.
pub const MAX_HISTORY_PAGE: usize = 200;

/// One page of a user's history, newest first.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The entries.
    pub entries: Vec<HistoryEntry>,
    /// Where the next (older) page starts; none after the oldest entry.
    pub next_cursor: Option<HistoryCursor>,
}

/// Where a page of history starts: before the event of a sequence. Clients see it as an
/// opaque string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    before_sequence: usize,
}

/// A cursor the service did not issue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a history cursor")]
pub struct BadHistoryCursor;

impl HistoryCursor {
    /// The opaque form.
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("before:{}", self.before_sequence))
    }

    /// Reads the opaque form back.
    pub fn decode(text: &str) -> Result<Self, BadHistoryCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| BadHistoryCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| BadHistoryCursor)?;
        let before_sequence = text
            .strip_prefix("before:")
            .and_then(|number| number.parse().ok())
            .ok_or(BadHistoryCursor)?;
        Ok(Self { before_sequence })
    }
}

impl App {
    /// Up to `limit` (1 to [`MAX_HISTORY_PAGE`]) entries of the user's security history,
    /// newest first, older than `cursor` if one is given.
    pub async fn history(
        &self,
        user_id: UserId,
        cursor: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<HistoryPage, AppError> {
        let events = self.users.events(user_id).await?;
        if events.is_empty() {
            return Err(UserError::UnknownUser.into());
        }
        let before = cursor.map_or(usize::MAX, |cursor| cursor.before_sequence);
        let mut entries = Vec::new();
        let mut next_cursor = None;
        let mut last_sequence = before;
        for envelope in events.iter().rev().filter(|event| event.sequence < before) {
            let Ok(metadata) = EventMetadata::from_map(&envelope.metadata) else {
                tracing::warn!(%user_id, sequence = envelope.sequence,
                    "an event's metadata names no actor; it is left out of the history");
                continue;
            };
            let Some(entry) = history_entry(user_id, &envelope.payload, &metadata) else {
                continue;
            };
            if entries.len() == limit {
                // Another entry exists: the next page starts after the last one given.
                next_cursor = Some(HistoryCursor {
                    before_sequence: last_sequence,
                });
                break;
            }
            entries.push(entry);
            last_sequence = envelope.sequence;
        }
        Ok(HistoryPage {
            entries,
            next_cursor,
        })
    }
}
