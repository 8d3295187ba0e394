-- Schema 14 (issue 22): what several gateway nodes on one database must share.
--
-- Paging snapshots: a search's ordered result keys, so that any node can cut its next page. The
-- keys are stored in chunks of 1024 (8 bytes each, little-endian), so a page reads one or two
-- chunks, never the whole list. Snapshots expire (`snapshot_ttl_seconds`) and are bounded in
-- keys (`snapshot_max_keys`); the oldest go first.
CREATE TABLE search_snapshots (
    id      TEXT PRIMARY KEY,     -- unguessable; also the searchset Bundle's id
    scope   TEXT NOT NULL,        -- the principal and the search's path, checked on every page
    total   INTEGER NOT NULL,     -- keys in all
    created INTEGER NOT NULL      -- microseconds since the epoch
);
CREATE INDEX search_snapshots_created ON search_snapshots (created, id);
CREATE TABLE search_snapshot_keys (
    id    TEXT NOT NULL,
    chunk INTEGER NOT NULL,       -- keys [chunk × 1024, chunk × 1024 + 1024)
    keys  BLOB NOT NULL,
    PRIMARY KEY (id, chunk)
);

-- Outbox leases: a node claims due deliveries for a while (`lease_until`) and each claim bumps
-- `fence`; an attempt's outcome is recorded only under the fence it was claimed with, so a node
-- whose lease ran out (and was taken over) cannot overwrite the newer attempt.
ALTER TABLE outbox ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;

-- Scheduled pulls, one row per source (replacing schema 13's row per tick): the tick last
-- claimed, by whom, and until when the claimant holds the source (renewed while it pulls,
-- cleared when it is done). A node claims a later tick only once the hold has ended, in one
-- atomic upsert: a pull longer than the schedule's interval is never joined by a second node,
-- and a dead node's source is free again once its hold runs out.
DROP TABLE pull_runs;
CREATE TABLE pull_holds (
    source      TEXT PRIMARY KEY,  -- "<kind>:<facility>"
    tick        INTEGER NOT NULL,    -- the scheduled instant last claimed, seconds since the epoch
    node        TEXT NOT NULL,     -- who claimed it (TSUNAGI_NODE or host, and process)
    claimed     INTEGER NOT NULL,    -- when, microseconds since the epoch
    lease_until INTEGER NOT NULL     -- the hold's end, microseconds (0: done)
);
