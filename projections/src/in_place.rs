//! Changing a stored view where it is kept, without reading it first: for a view that is a list
//! of items with ids (a user's sessions), one event adds, updates or removes an item, and the
//! store applies that change in one statement. A login or a refresh then writes its view in
//! one round trip instead of a read and a write.
//!
//! The store applies the change only if the stored view stands where the event follows: no
//! event before it that changes the view is missing from the view. It checks that against the
//! log in the same statement, so a view that lags behind only by events that do not change it
//! (a failed login, a second factor asked for) is changed in place too.

use cqrs_es::persist::PersistenceError;
use cqrs_es::EventEnvelope;
use serde_json::Value;
use twofold_domain::{User, UserEventKind};

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
    /// The event types (kind names) that change the view.
    changing_types: Vec<&'static str>,
    /// The statement of each kind of change ([`ListChange::slot`]), committed durably and
    /// lazily.
    statements: [[String; 2]; 4],
}

/// A change in place, ready to run: its statement and values.
pub(crate) struct Planned<'a> {
    pub statement: &'a str,
    pub changing_types: &'a [&'static str],
    pub first: Value,
    pub change: ListChange,
}

impl Planned<'_> {
    /// The change's own values, bound after the common ones.
    pub fn values(&self) -> Vec<&Value> {
        self.change.values()
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
        Self {
            change: V::list_change,
            first: |event| {
                let mut view = V::default();
                view.update(event);
                serde_json::to_value(&view)
            },
            changing_types: UserEventKind::all()
                .filter(|kind| V::is_changed_by(*kind))
                .map(UserEventKind::name)
                .collect(),
            statements: kinds.map(|change| {
                [None, Some(lazy_commit)]
                    .map(|lazy_commit| statement(table, V::LIST, &change, lazy_commit))
            }),
        }
    }

    /// The statement and values that apply `event` in place, committed lazily or not
    /// (`None` if `event` does not change the view).
    pub fn plan(
        &self,
        event: &EventEnvelope<User>,
        lazy: bool,
    ) -> Result<Option<Planned<'_>>, PersistenceError> {
        let Some(change) = (self.change)(event).map_err(encoding)? else {
            return Ok(None);
        };
        Ok(Some(Planned {
            statement: &self.statements[change.slot()][usize::from(lazy)],
            changing_types: &self.changing_types,
            first: (self.first)(event).map_err(encoding)?,
            change,
        }))
    }
}

/// Statement parameters common to every change: `$1` the view id, `$2` the sequence the view
/// is taken to, `$3` the event's sequence, `$4` the event types that change the view, `$5` the
/// view as the event alone leaves it (for a user without a view). A change's own values
/// follow from `$6`.
///
/// The statement updates the row if it stands before the event with no event that changes
/// the view in between, or inserts one if there is none and no event before this one changes
/// the view. Both read the same snapshot, so at most one of them writes; a row written by
/// someone else meanwhile makes the update re-check its conditions against it (or the insert
/// give way), and the statement then changes nothing. It returns how many rows it wrote.
fn statement(table: &str, list: &str, change: &ListChange, lazy_commit: Option<&str>) -> String {
    // The stored JSON (a `json` column: its text as written) is read as `jsonb` once, as `doc`.
    let items = format!("coalesce(doc -> '{list}', '[]'::jsonb)");
    let each_item = format!("jsonb_array_elements({items}) WITH ORDINALITY AS items(item, place)");
    let new_list = match change {
        ListChange::Append(_) => format!("{items} || jsonb_build_array($6::jsonb)"),
        ListChange::Update { .. } => format!(
            "(SELECT coalesce(jsonb_agg(CASE WHEN item -> 'id' = $6::jsonb \
             THEN item || $7::jsonb ELSE item END ORDER BY place), '[]'::jsonb) FROM {each_item})"
        ),
        ListChange::Remove { .. } => format!(
            "(SELECT coalesce(jsonb_agg(item ORDER BY place), '[]'::jsonb) FROM {each_item} \
             WHERE item -> 'id' IS DISTINCT FROM $6::jsonb)"
        ),
        ListChange::Clear => "'[]'::jsonb".to_owned(),
    };
    // The last event before this one that changes the view (0: none). The primary key's
    // index is read backwards from the event and stops at the first such event, so the cost
    // does not grow with the user's history.
    let last_change = "(SELECT coalesce(max(e.sequence), 0) FROM events AS e \
                       WHERE e.aggregate_type = 'User' AND e.aggregate_id = $1 \
                       AND e.sequence < $3 AND e.event_type = ANY($4))";
    let lazy_commit = lazy_commit.map_or_else(String::new, |item| format!(" FROM {item}"));
    format!(
        "WITH updated AS (\
           UPDATE {table} AS v SET last_sequence = $2, \
             payload = (SELECT jsonb_set(doc, '{{{list}}}', {new_list})::json \
                        FROM (SELECT v.payload::jsonb AS doc) AS stored) \
           WHERE v.view_id = $1 AND v.last_sequence < $3 \
             AND v.last_sequence >= {last_change} \
           RETURNING 1), \
         inserted AS (\
           INSERT INTO {table} (view_id, last_sequence, payload) \
           SELECT $1, $2, $5::jsonb::json \
           WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE view_id = $1) \
             AND {last_change} = 0 \
           ON CONFLICT (view_id) DO NOTHING \
           RETURNING 1) \
         SELECT (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted){lazy_commit}"
    )
}

fn encoding(error: serde_json::Error) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(error))
}
