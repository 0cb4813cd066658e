-- The event store, in the layout postgres-es reads: one row per event, keyed by aggregate and
-- sequence, so two commands that race on one aggregate cannot both commit (optimistic lock).
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    recorded_at    timestamptz                  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- Email reservations, written in the same transaction as the SignedUp event that claims the
-- address. The primary key makes email uniqueness hold under concurrent sign-ups; the table is
-- also the strongly consistent email -> user lookup used at login.
CREATE TABLE user_emails
(
    email_key text NOT NULL,
    user_id   text NOT NULL,
    CONSTRAINT user_emails_email_key_pkey PRIMARY KEY (email_key)
);

-- The user view (projection), in the layout postgres-es's view repository reads.
CREATE TABLE user_view
(
    view_id text                        NOT NULL,
    version bigint CHECK (version >= 0) NOT NULL,
    payload json                        NOT NULL,
    PRIMARY KEY (view_id)
);
