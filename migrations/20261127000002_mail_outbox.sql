-- The transactional outbox of mail jobs. Rows are written in the transaction that commits the
-- events causing them and deleted by the relay once JetStream acknowledged them; secrets in a
-- job are sealed for the mailer.
CREATE TABLE mail_outbox
(
    id         uuid        NOT NULL PRIMARY KEY,
    job        jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Who each mail task belongs to, so that any API instance can answer /tasks/taskstatus for
-- the owner only. The state itself is written by the mailer to a JetStream key-value bucket.
CREATE TABLE mail_tasks
(
    id         uuid        NOT NULL PRIMARY KEY,
    owner      uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
