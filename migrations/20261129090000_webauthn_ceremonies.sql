-- WebAuthn ceremonies between their start and their finish: the challenge state the relying
-- party library serialised, kept server-side so that a ceremony started on one instance can
-- finish on another. A row is single-use: finishing deletes it and reads it in one statement
-- (`DELETE … RETURNING`), so of any number of concurrent finishes exactly one gets the state.
-- Rows expire after a few minutes and are swept; an expired row never finishes anything.
--
-- The state holds a random challenge and, for a registration or a second-factor login, the
-- user's public credential ids: nothing secret, and nothing of it outlives the ceremony.
CREATE TABLE webauthn_ceremonies
(
    id         uuid        NOT NULL PRIMARY KEY,
    -- registration, authentication (a second factor) or discoverable (a passwordless login).
    kind       text        NOT NULL,
    -- The user a registration or a second-factor login belongs to; none for a passwordless one.
    user_id    uuid,
    state      jsonb       NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE INDEX webauthn_ceremonies_expires_at ON webauthn_ceremonies (expires_at);
