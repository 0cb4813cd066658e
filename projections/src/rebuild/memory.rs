//! The rebuild in memory (the embedded mode).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use cqrs_es::Aggregate;
use serde::Serialize;
use serde_json::Value;
use twofold_domain::User;

use super::fold::{Folder, StoredRow};
use super::{catch_up, compare, Difference, RebuildError, RebuildReport, CATCH_UP_BATCH};
use crate::log::{Checkpoint, EventLog, Upcasters};
use crate::personal::KeyRing;
use crate::store::{MemViewStore, StoredView};
use crate::{Follower, ProjectedView, Projection, SessionsView, UserView};

/// Rebuilds the in-memory views from the in-memory log, reports how they differ from the live
/// ones, and with `apply` puts the rebuilt ones in their place.
pub async fn rebuild_memory(
    log: Arc<dyn EventLog>,
    upcasters: Upcasters,
    user_views: &Arc<MemViewStore<UserView>>,
    session_views: &Arc<MemViewStore<SessionsView>>,
    apply: bool,
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    // The log opens the personal data of what it reads.
    let mut folder = Folder::new(Arc::clone(&upcasters), Arc::new(KeyRing::default()));
    let mut from = Checkpoint::ORIGIN;
    loop {
        let events = log.read_after(from, CATCH_UP_BATCH).await?;
        let Some(last) = events.last().map(|event| event.checkpoint) else {
            break;
        };
        for logged in events {
            let event = logged.event;
            if event.aggregate_type != User::TYPE {
                continue;
            }
            folder.take(StoredRow {
                aggregate_id: &event.aggregate_id,
                sequence: event.sequence,
                event_type: &event.event_type,
                event_version: &event.event_version,
                payload: &event.payload.to_string(),
                metadata: &event.metadata.to_string(),
            })?;
        }
        from = last;
    }
    folder.finish()?;
    let rebuilt_users = Arc::new(MemViewStore::default());
    rebuilt_users.replace_all(stored(
        folder
            .user_views()
            .map(|(id, view, last)| (id, view.clone(), last)),
    ))?;
    let rebuilt_sessions = Arc::new(MemViewStore::default());
    rebuilt_sessions.replace_all(stored(folder.session_views()))?;
    let mut report = RebuildReport {
        events: folder.events,
        users: folder.users.len(),
        elapsed: started.elapsed(),
        ..RebuildReport::default()
    };
    drop(folder);
    let users = Projection::<UserView>::new(
        Arc::clone(&rebuilt_users) as _,
        Arc::clone(&log),
        Arc::clone(&upcasters),
    );
    let sessions = Projection::<SessionsView>::new(
        Arc::clone(&rebuilt_sessions) as _,
        Arc::clone(&log),
        Arc::clone(&upcasters),
    );
    let followers: [&dyn Follower; 2] = [&users, &sessions];
    let (from, caught_up) = catch_up(&*log, &followers, &upcasters, from).await?;
    report.caught_up = caught_up;
    report.differences = compare_memory(UserView::NAME, user_views, &rebuilt_users)?;
    report.differences.extend(compare_memory(
        SessionsView::NAME,
        session_views,
        &rebuilt_sessions,
    )?);
    if apply {
        user_views.replace_all(rebuilt_users.all()?.into_iter().collect())?;
        session_views.replace_all(rebuilt_sessions.all()?.into_iter().collect())?;
        // What was committed between the catch-up and the swap.
        let live_users = Projection::<UserView>::new(
            Arc::clone(user_views) as _,
            Arc::clone(&log),
            Arc::clone(&upcasters),
        );
        let live_sessions = Projection::<SessionsView>::new(
            Arc::clone(session_views) as _,
            Arc::clone(&log),
            Arc::clone(&upcasters),
        );
        let (_, read) = catch_up(&*log, &[&live_users, &live_sessions], &upcasters, from).await?;
        report.caught_up += read;
        report.applied = true;
    }
    Ok(report)
}

fn compare_memory<V: Clone + Serialize>(
    view: &'static str,
    live: &MemViewStore<V>,
    rebuilt: &MemViewStore<V>,
) -> Result<Vec<Difference>, RebuildError> {
    let rows = |store: &MemViewStore<V>| -> Result<BTreeMap<String, Value>, RebuildError> {
        store
            .all()?
            .into_iter()
            .map(|(id, stored)| Ok((id, serde_json::to_value(&stored.view)?)))
            .collect()
    };
    Ok(compare(view, &rows(live)?, &rows(rebuilt)?))
}

/// Views as a view store keeps them, by user.
fn stored<'a, V>(
    views: impl Iterator<Item = (&'a String, V, usize)>,
) -> HashMap<String, StoredView<V>> {
    views
        .map(|(id, view, last_sequence)| {
            (
                id.clone(),
                StoredView {
                    view,
                    last_sequence,
                },
            )
        })
        .collect()
}
