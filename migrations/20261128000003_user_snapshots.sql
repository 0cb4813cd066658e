-- Snapshots of folded users, so that loading a user with a long history costs about what a
-- short one does: the newest snapshot, then only the events after it. A snapshot is a cache of
-- the events, never the truth: it is ignored when its state version is not the service's, when
-- it does not parse, or when its keyed digest (chain key, see projections/src/chain.rs) does
-- not match, and the user is then folded from all their events.
CREATE TABLE user_snapshots
(
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence > 0),
    state_version  text        NOT NULL,
    state          json        NOT NULL,
    digest         text        NOT NULL,
    key_id         text        NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);
