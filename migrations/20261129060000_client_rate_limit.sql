-- The per-client rate limit of the endpoints callable without a token, shared by every
-- instance. One row per client (an IPv4 address or an IPv6 /64), keyed by a keyed digest of
-- it (never the address itself), holding the instant its allowance is whole again; a row
-- whose instant has passed means the same as no row, and is swept.
--
-- Unlogged: every limited request writes here, and without the WAL's flush at each commit the
-- write costs about a sixth. The price is that a crash of the database (and a failover to a
-- standby, which never has the rows) empties the table, giving every client its whole
-- allowance once; counters that exist to slow guessing are worth less than that flush.
CREATE UNLOGGED TABLE client_rate_limit
(
    client_digest text        NOT NULL PRIMARY KEY,
    whole_at      timestamptz NOT NULL
);

CREATE INDEX client_rate_limit_whole_at ON client_rate_limit (whole_at);
