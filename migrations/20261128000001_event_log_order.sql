-- A global order of the event log that a reader can follow without ever skipping an event.
--
-- `position` alone is not enough: a bigserial value is taken when a row is inserted, not when
-- its transaction commits, so a reader that has seen position 8 may later find position 7
-- committed. Each row therefore also records the id of the transaction that wrote it; readers
-- only take rows whose transaction id is below the oldest transaction still running
-- (pg_snapshot_xmin of the current snapshot), where nothing can commit any more, and resume by
-- (transaction_id, position).

-- Existing rows are numbered in the order they were recorded.
ALTER TABLE events ADD COLUMN position bigint;
UPDATE events
SET position = numbered.position
FROM (SELECT aggregate_type, aggregate_id, sequence,
             row_number() OVER (ORDER BY recorded_at, aggregate_id, sequence) AS position
      FROM events) AS numbered
WHERE events.aggregate_type = numbered.aggregate_type
  AND events.aggregate_id = numbered.aggregate_id
  AND events.sequence = numbered.sequence;
CREATE SEQUENCE events_position_seq AS bigint OWNED BY events.position;
SELECT setval('events_position_seq', coalesce(max(position), 0) + 1, false) FROM events;
ALTER TABLE events
    ALTER COLUMN position SET DEFAULT nextval('events_position_seq'),
    ALTER COLUMN position SET NOT NULL;

-- Existing rows get transaction id 0, below every real one: they come first, in position order.
ALTER TABLE events ADD COLUMN transaction_id xid8 NOT NULL DEFAULT '0';
ALTER TABLE events ALTER COLUMN transaction_id SET DEFAULT pg_current_xact_id();

CREATE UNIQUE INDEX events_log_order ON events (transaction_id, position);

-- Each view row records the sequence of the last event of its user it has taken into account,
-- so an event is never applied twice or out of order, and a missing one is noticed. The
-- write counter postgres-es kept in `version` has no use beside it. Existing rows were kept
-- current by the projection after each commit: they stand at their user's last event (a
-- `twofold views rebuild` checks them against the log).
ALTER TABLE user_view ADD COLUMN last_sequence bigint CHECK (last_sequence >= 0);
UPDATE user_view
SET last_sequence = coalesce((SELECT max(sequence)
                              FROM events
                              WHERE aggregate_type = 'User' AND aggregate_id = view_id), 0);
ALTER TABLE user_view
    ALTER COLUMN last_sequence SET NOT NULL,
    DROP COLUMN version;

ALTER TABLE session_view ADD COLUMN last_sequence bigint CHECK (last_sequence >= 0);
UPDATE session_view
SET last_sequence = coalesce((SELECT max(sequence)
                              FROM events
                              WHERE aggregate_type = 'User' AND aggregate_id = view_id), 0);
ALTER TABLE session_view
    ALTER COLUMN last_sequence SET NOT NULL,
    DROP COLUMN version;

-- How far each log follower (the catch-up projector) has read, as (transaction_id, position).
CREATE TABLE log_checkpoints
(
    name           text   NOT NULL PRIMARY KEY,
    transaction_id xid8   NOT NULL,
    position       bigint NOT NULL
);
