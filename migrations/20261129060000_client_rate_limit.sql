-- The per-client rate limit of the endpoints callable without a token, shared by every
-- instance. One row per client (an IPv4 address or an IPv6 /64), keyed by a keyed digest of
-- it (never the address itself), holding the instant its allowance is whole again; a row
-- whose instant has passed means the same as no row, and is swept.
CREATE TABLE client_rate_limit
(
    client_digest text        NOT NULL PRIMARY KEY,
    whole_at      timestamptz NOT NULL
);

CREATE INDEX client_rate_limit_whole_at ON client_rate_limit (whole_at);
