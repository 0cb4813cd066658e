//! Reading the log back: a user's own security history; for admins and operators, a user's
//! stored events, their state as of an instant and their timeline (each read recorded in the
//! user's stream); and the export of every event in log order.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cqrs_es::View;
use time::OffsetDateTime;
use twofold_domain::user::AuditScope;
use twofold_domain::values::UserId;
use twofold_domain::{EventMetadata, UserCommand, UserError};
use twofold_projections::log::{envelope, Checkpoint};
use twofold_projections::{audited, history_entry, AuditedEvent, HistoryEntry, UserView};

use super::mail_policy::MailSecrets;
use super::views::upcasters;
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

/// The most events one page of a user's audit trail may hold.
pub const MAX_EVENTS_PAGE: usize = 1000;

/// Events read per step of an export.
const EXPORT_BATCH: usize = 1000;

impl App {
    /// Up to `limit` of user `user_id`'s stored events after sequence `after`, in sequence
    /// order, as an auditor reads them. The read itself is recorded first, in the user's
    /// stream, with `metadata` naming the reader: the auditors are audited.
    pub async fn audit_events(
        &self,
        user_id: UserId,
        after: usize,
        limit: usize,
        metadata: &EventMetadata,
    ) -> Result<Vec<AuditedEvent>, AppError> {
        self.record_audit_read(user_id, AuditScope::Events, metadata)
            .await?;
        let upcasters = upcasters();
        self.log
            .user_log(&user_id.to_string(), after, limit)
            .await?
            .into_iter()
            .map(|logged| audited(logged, &upcasters).map_err(AppError::from))
            .collect()
    }

    /// User `user_id` as they were at `at`, folded from the events committed by then (not
    /// stored anywhere); `None` if they had not signed up yet. The read is recorded first.
    pub async fn user_as_of(
        &self,
        user_id: UserId,
        at: OffsetDateTime,
        metadata: &EventMetadata,
    ) -> Result<Option<UserView>, AppError> {
        self.record_audit_read(user_id, AuditScope::StateAsOf, metadata)
            .await?;
        let upcasters = upcasters();
        let mut view = UserView::default();
        for logged in self
            .log
            .user_log(&user_id.to_string(), 0, usize::MAX)
            .await?
        {
            if logged.recorded_at > at {
                break;
            }
            view.update(&envelope(logged.event, &upcasters)?);
        }
        Ok(view.id.is_some().then_some(view))
    }

    /// Every stored event of user `user_id` committed up to `until` (all of them without it),
    /// for a timeline; the read is recorded first.
    pub async fn audit_timeline(
        &self,
        user_id: UserId,
        until: Option<OffsetDateTime>,
        metadata: &EventMetadata,
    ) -> Result<Vec<AuditedEvent>, AppError> {
        self.record_audit_read(user_id, AuditScope::Timeline, metadata)
            .await?;
        let upcasters = upcasters();
        self.log
            .user_log(&user_id.to_string(), 0, usize::MAX)
            .await?
            .into_iter()
            .filter(|logged| until.is_none_or(|until| logged.recorded_at <= until))
            .map(|logged| audited(logged, &upcasters).map_err(AppError::from))
            .collect()
    }

    /// Every stored event after `after` and committed up to `until`, in log order, handed
    /// to `each` as it is read (a batch at a time, so an export of any size runs in bounded
    /// memory). Returns how many were exported.
    pub async fn export_events(
        &self,
        after: Checkpoint,
        until: Option<OffsetDateTime>,
        mut each: impl FnMut(AuditedEvent) -> Result<(), AppError>,
    ) -> Result<u64, AppError> {
        let upcasters = upcasters();
        let mut after = after;
        let mut exported = 0;
        loop {
            let batch = self.log.read_after(after, EXPORT_BATCH).await?;
            let Some(last) = batch.last() else {
                return Ok(exported);
            };
            after = last.checkpoint;
            for logged in batch {
                if until.is_some_and(|until| logged.recorded_at > until) {
                    return Ok(exported);
                }
                each(audited(logged, &upcasters)?)?;
                exported += 1;
            }
        }
    }

    async fn record_audit_read(
        &self,
        user_id: UserId,
        scope: AuditScope,
        metadata: &EventMetadata,
    ) -> Result<(), AppError> {
        self.users
            .execute(
                user_id,
                UserCommand::RecordAuditRead(scope),
                metadata,
                &MailSecrets::none(),
            )
            .await?;
        tracing::info!(target: "security", actor = %metadata.actor, %user_id, ?scope,
            "audit trail read");
        Ok(())
    }
}
