-- Tamper evidence (projections/src/chain.rs): each event's keyed digest over its own stored
-- content, its keyed digest chaining it to its predecessor, and the id of the key (derived from
-- the sealing key, which the database never holds). Events stored before this migration are
-- chained once, at the first start after it, which the single row of event_chain_started
-- records; after that an event without digests was written behind the service's back.
ALTER TABLE events
    ADD COLUMN content_digest text NULL,
    ADD COLUMN chain_digest   text NULL,
    ADD COLUMN chain_key_id   text NULL;

CREATE TABLE event_chain_started
(
    chained_at     timestamptz NOT NULL DEFAULT now(),
    events_chained bigint      NOT NULL
);
