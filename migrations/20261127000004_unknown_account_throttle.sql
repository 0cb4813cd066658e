-- Failed logins to addresses no account has, keyed by a keyed digest of the address (never the
-- address itself), under the same throttling policy as a password: a lockout then answers the
-- same whether or not the account exists.
CREATE TABLE unknown_account_throttle
(
    email_digest text        NOT NULL PRIMARY KEY,
    failures     integer     NOT NULL,
    locked_until timestamptz NULL
);
