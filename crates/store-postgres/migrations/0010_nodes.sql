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

ALTER TABLE pull_runs ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
