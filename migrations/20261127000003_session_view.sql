-- The sessions view (projection): a user's live sessions, in postgres-es's view layout.
CREATE TABLE session_view
(
    view_id text                        NOT NULL,
    version bigint CHECK (version >= 0) NOT NULL,
    payload json                        NOT NULL,
    PRIMARY KEY (view_id)
);
