-- Personal data that can be forgotten (crypto-shredding). Each user has a data key of their own
-- that seals the personal fields of their events (email and full name of the sign-up; client
-- address and user agent in every event's metadata). The key is kept here, outside the log,
-- sealed in turn under the sealing key (key_id names which). Erasing a user deletes their row:
-- from then on their personal fields read as "[erased]" while the events stay whole.
CREATE TABLE user_data_keys
(
    aggregate_id text        NOT NULL PRIMARY KEY,
    key_id       text        NOT NULL,
    sealed_key   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- The address reservations are keyed from now on by a keyed digest of the lower-cased address
-- (the service rewrites the rows written before, in clear, when it starts), and an erasure
-- deletes a user's reservation by user id.
CREATE INDEX user_emails_user_id ON user_emails (user_id);

-- Events stored before per-user keys hold personal data in clear. The first start of a version
-- with keys seals it, once, under a key created for each such user, and chains those users'
-- events again (their rows changed); this row records that it happened, and when.
CREATE TABLE personal_data_sealed
(
    sealed_at       timestamptz NOT NULL DEFAULT now(),
    users           bigint      NOT NULL,
    events_rewritten bigint     NOT NULL
);
