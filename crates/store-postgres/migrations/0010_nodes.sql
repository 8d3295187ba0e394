-- Schema 10 (issue 22): what several gateway nodes on one database share (see the SQLite
-- store's 0014_nodes.sql): paging snapshots in chunks of 1024 keys, and outbox leases with a
-- fence. The snapshot tables are ordinary (logged) tables, not UNLOGGED: a page link must survive
-- a failover to a standby.
CREATE TABLE search_snapshots (
    id      TEXT PRIMARY KEY,
    scope   TEXT NOT NULL,
    total   BIGINT NOT NULL,
    created BIGINT NOT NULL
);
CREATE INDEX search_snapshots_created ON search_snapshots (created, id);
CREATE TABLE search_snapshot_keys (
    id    TEXT NOT NULL,
    chunk BIGINT NOT NULL,
    keys  BYTEA NOT NULL,
    PRIMARY KEY (id, chunk)
);

ALTER TABLE outbox ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;

-- Scheduled pulls, one row per source (replacing schema 9's row per tick): the tick last
-- claimed, by whom, and until when the claimant holds the source (renewed while it pulls,
-- cleared when it is done). A node claims a later tick only once the hold has ended, in one
-- atomic upsert: a pull longer than the schedule's interval is never joined by a second node,
-- and a dead node's source is free again once its hold runs out.
DROP TABLE pull_runs;
CREATE TABLE pull_holds (
    source      TEXT PRIMARY KEY,  -- "<kind>:<facility>"
    tick        BIGINT NOT NULL,    -- the scheduled instant last claimed, seconds since the epoch
    node        TEXT NOT NULL,     -- who claimed it (TSUNAGI_NODE or host, and process)
    claimed     BIGINT NOT NULL,    -- when, microseconds since the epoch
    lease_until BIGINT NOT NULL     -- the hold's end, microseconds (0: done)
);
