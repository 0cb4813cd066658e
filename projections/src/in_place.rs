//! Changing a stored view where it is kept, without reading it first: for a view that is a list
//! of items with ids (a user's sessions), one event adds, updates or removes an item, and the
//! store applies that change in one statement. A login or a refresh then writes its view in
//! one round trip instead of a read and a write.
//!
//! The store applies the change only if the stored view stands where the event follows: no
//! event before it that changes the view is missing from the view. It checks that against the
//! log in the same statement, so a view that lags behind only by events that do not change it
//! (a failed login, a second factor asked for) is changed in place too.
//!
//! A change can also be made by the statement that commits its event ([`PlannedChange`]): the
//! view then changes in the events' own transaction, and a refresh costs one statement less.

use std::sync::Arc;

use cqrs_es::persist::PersistenceError;
use cqrs_es::EventEnvelope;
use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::types::Json;
use sqlx::Postgres;
use twofold_domain::{User, UserEventKind};

use crate::log::sequence_to_sql;
use crate::ProjectedView;

/// How one event changes a view's list of items, each of which has an `id`.
#[derive(Debug, Clone, PartialEq)]
pub enum ListChange {
    /// Adds the item at the end.
    Append(Value),
    /// Sets these fields of the item whose id is `id`, if the list holds it.
    Update {
        /// The item's id, as the item holds it.
        id: Value,
        /// The fields to set, with their new values.
        fields: Value,
    },
    /// Removes the item whose id is `id`, if the list holds it.
    Remove {
        /// The item's id, as the item holds it.
        id: Value,
    },
    /// Removes every item.
    Clear,
}

/// A view whose changes a store can apply in place: a list of items under one key of the
/// view's JSON, changed by one [`ListChange`] per event that changes the view.
pub trait ChangedInPlace: ProjectedView {
    /// The key of the list in the view's JSON.
    const LIST: &'static str;

    /// The change `event` makes to the list (`None` for an event of a kind that does not
    /// change the view). Applied to the stored JSON it must give what
    /// [`cqrs_es::View::update`] gives; the log tests check that over random histories.
    fn list_change(event: &EventEnvelope<User>) -> Result<Option<ListChange>, serde_json::Error>;
}

impl ListChange {
    /// The values the change binds after the common ones, in order.
    fn values(&self) -> Vec<&Value> {
        match self {
            Self::Append(item) => vec![item],
            Self::Update { id, fields } => vec![id, fields],
            Self::Remove { id } => vec![id],
            Self::Clear => Vec::new(),
        }
    }

    /// Which of [`InPlace`]'s statements applies it.
    fn slot(&self) -> usize {
        match self {
            Self::Append(_) => 0,
            Self::Update { .. } => 1,
            Self::Remove { .. } => 2,
            Self::Clear => 3,
        }
    }
}

/// What a store needs to change views of one type in place, taken from the view's type when
/// the store is made, so that a store generic over views can hold it.
pub(crate) struct InPlace {
    /// The view's [`ChangedInPlace::list_change`].
    change: fn(&EventEnvelope<User>) -> Result<Option<ListChange>, serde_json::Error>,
    /// The view as `event` alone leaves it, as JSON: what a user without a view gets.
    first: fn(&EventEnvelope<User>) -> Result<Value, serde_json::Error>,
    /// Where the view is kept, and which events change it.
    place: Place,
    /// The statement of each kind of change ([`ListChange::slot`]), committed durably and
    /// lazily.
    statements: [[String; 2]; 4],
}

/// Where views of one type are kept, and which events change them.
#[derive(Debug, Clone)]
struct Place {
    /// The views' table.
    table: Arc<str>,
    /// The key of the list in the view's JSON ([`ChangedInPlace::LIST`]).
    list: &'static str,
    /// The event types (kind names) that change the view.
    changing_types: Arc<[&'static str]>,
}

/// One event's change to one user's view, planned to be made in place: by a statement of its
/// own ([`crate::ViewStore::change_in_place`]), or by the statement that commits the event,
/// where the event store writes it with the events (`common_table_expressions`).
#[derive(Debug)]
pub struct PlannedChange {
    place: Place,
    view_id: String,
    /// The sequence the view is taken to.
    last_sequence: i64,
    /// The sequence of the event that makes the change.
    event_sequence: i64,
    /// The view as the event alone leaves it: what a user without a view gets.
    first: Value,
    change: ListChange,
}

/// A statement with some of its parameters bound.
pub type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

impl PlannedChange {
    /// The common table expressions that make the change, for a statement whose parameters
    /// before `$first_parameter` are its own, and which runs them after the data-modifying
    /// common table expression `after` (the events' insert) has written its first row: every
    /// commit of a user locks the events' place first, so two commits of one user never wait
    /// for each other in opposite orders. They are named after the view's table; see
    /// [`Self::rows_written`] for what they did.
    pub fn common_table_expressions(&self, first_parameter: usize, after: &str) -> String {
        common_table_expressions(&self.place, &self.change, first_parameter, Some(after))
    }

    /// An expression of how many rows the common table expressions wrote: 1 if they made
    /// the change, 0 if the view did not stand where the event follows (the view is then
    /// to be brought up from the log, as after a dispatch).
    pub fn rows_written(&self) -> String {
        rows_written(&self.place.table)
    }

    /// How many parameters it binds: the five every change has (the view id, the sequence the
    /// view is taken to, the event's, the event types that change the view, the view as the
    /// event alone leaves it), then its own values.
    pub fn parameter_count(&self) -> usize {
        5 + self.change.values().len()
    }

    /// Binds the change's values, in the order of its parameters, after those of `query`.
    pub fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        let query = query
            .bind(&self.view_id)
            .bind(self.last_sequence)
            .bind(self.event_sequence)
            .bind(&*self.place.changing_types)
            .bind(Json(&self.first));
        self.change
            .values()
            .into_iter()
            .fold(query, |query, value| query.bind(Json(value)))
    }

    /// Which of [`InPlace`]'s own statements makes it.
    fn slot(&self) -> usize {
        self.change.slot()
    }
}

impl InPlace {
    /// Changes views of type `V`, kept in `table`; `lazy_commit` is the `FROM` item that turns
    /// `synchronous_commit` off for a lazily committed statement.
    pub fn of<V: ChangedInPlace>(table: &str, lazy_commit: &str) -> Self {
        let kinds = [
            ListChange::Append(Value::Null),
            ListChange::Update {
                id: Value::Null,
                fields: Value::Null,
            },
            ListChange::Remove { id: Value::Null },
            ListChange::Clear,
        ];
        let place = Place {
            table: table.into(),
            list: V::LIST,
            changing_types: UserEventKind::all()
                .filter(|kind| V::is_changed_by(*kind))
                .map(UserEventKind::name)
                .collect(),
        };
        Self {
            change: V::list_change,
            first: |event| {
                let mut view = V::default();
                view.update(event);
                serde_json::to_value(&view)
            },
            statements: kinds.map(|change| {
                [None, Some(lazy_commit)].map(|lazy_commit| statement(&place, &change, lazy_commit))
            }),
            place,
        }
    }

    /// The change `event` makes to view `view_id`, taking it to `last_sequence` (`None` if
    /// `event` does not change the view).
    pub fn plan(
        &self,
        view_id: &str,
        event: &EventEnvelope<User>,
        last_sequence: usize,
    ) -> Result<Option<PlannedChange>, PersistenceError> {
        let Some(change) = (self.change)(event).map_err(encoding)? else {
            return Ok(None);
        };
        Ok(Some(PlannedChange {
            place: self.place.clone(),
            view_id: view_id.to_owned(),
            last_sequence: sequence_to_sql(last_sequence)?,
            event_sequence: sequence_to_sql(event.sequence)?,
            first: (self.first)(event).map_err(encoding)?,
            change,
        }))
    }

    /// The statement of its own that makes `planned`, committed lazily or not.
    pub fn statement(&self, planned: &PlannedChange, lazy: bool) -> &str {
        &self.statements[planned.slot()][usize::from(lazy)]
    }
}

/// The statement of its own that makes a change, its parameters from `$1`; it returns how
/// many rows it wrote.
fn statement(place: &Place, change: &ListChange, lazy_commit: Option<&str>) -> String {
    let lazy_commit = lazy_commit.map_or_else(String::new, |item| format!(" FROM {item}"));
    format!(
        "WITH {} SELECT {}{lazy_commit}",
        common_table_expressions(place, change, 1, None),
        rows_written(&place.table)
    )
}

/// The common table expressions that make a change, their parameters numbered from
/// `$first`: the view id, the sequence the view is taken to, the event's sequence, the event
/// types that change the view, the view as the event alone leaves it (for a user without a
/// view), then the change's own values. With `after`, they write nothing until the common
/// table expression of that name has written a row.
///
/// They update the row if it stands before the event with no event that changes the view in
/// between, or insert one if there is none and no event before this one changes the view.
/// Both read the same snapshot, so at most one of them writes; a row written by someone else
/// meanwhile makes the update re-check its conditions against it (or the insert give way),
/// and they then change nothing.
fn common_table_expressions(
    place: &Place,
    change: &ListChange,
    first: usize,
    after: Option<&str>,
) -> String {
    let Place { table, list, .. } = place;
    let [view_id, last_sequence, event_sequence, changing_types, first_view, value, fields] =
        std::array::from_fn::<_, 7, _>(|offset| format!("${}", first + offset));
    // The stored JSON (a `json` column: its text as written) is read as `jsonb` once, as `doc`.
    let items = format!("coalesce(doc -> '{list}', '[]'::jsonb)");
    let each_item = format!("jsonb_array_elements({items}) WITH ORDINALITY AS items(item, place)");
    let new_list = match change {
        ListChange::Append(_) => format!("{items} || jsonb_build_array({value}::jsonb)"),
        ListChange::Update { .. } => format!(
            "(SELECT coalesce(jsonb_agg(CASE WHEN item -> 'id' = {value}::jsonb \
             THEN item || {fields}::jsonb ELSE item END ORDER BY place), '[]'::jsonb) \
             FROM {each_item})"
        ),
        ListChange::Remove { .. } => format!(
            "(SELECT coalesce(jsonb_agg(item ORDER BY place), '[]'::jsonb) FROM {each_item} \
             WHERE item -> 'id' IS DISTINCT FROM {value}::jsonb)"
        ),
        ListChange::Clear => "'[]'::jsonb".to_owned(),
    };
    // The last event before this one that changes the view (0: none). The primary key's
    // index is read backwards from the event and stops at the first such event, so the cost
    // does not grow with the user's history.
    let last_change = format!(
        "(SELECT coalesce(max(e.sequence), 0) FROM events AS e \
         WHERE e.aggregate_type = 'User' AND e.aggregate_id = {view_id} \
         AND e.sequence < {event_sequence} AND e.event_type = ANY({changing_types}))"
    );
    let after = after.map_or_else(String::new, |after| {
        format!(" AND EXISTS (SELECT FROM {after})")
    });
    format!(
        "{table}_updated AS (\
           UPDATE {table} AS v SET last_sequence = {last_sequence}, \
             payload = (SELECT jsonb_set(doc, '{{{list}}}', {new_list})::json \
                        FROM (SELECT v.payload::jsonb AS doc) AS stored) \
           WHERE v.view_id = {view_id} AND v.last_sequence < {event_sequence} \
             AND v.last_sequence >= {last_change}{after} \
           RETURNING 1), \
         {table}_inserted AS (\
           INSERT INTO {table} (view_id, last_sequence, payload) \
           SELECT {view_id}, {last_sequence}, {first_view}::jsonb::json \
           WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE view_id = {view_id}) \
             AND {last_change} = 0{after} \
           ON CONFLICT (view_id) DO NOTHING \
           RETURNING 1)"
    )
}

/// How many rows the common table expressions of a change to a view in `table` wrote.
fn rows_written(table: &str) -> String {
    format!("(SELECT count(*) FROM {table}_updated) + (SELECT count(*) FROM {table}_inserted)")
}

fn encoding(error: serde_json::Error) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(error))
}
