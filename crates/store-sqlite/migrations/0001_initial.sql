-- The FHIR store: current versions, history, search-index rows, checkpoints.
CREATE TABLE resources (
    rid          INTEGER PRIMARY KEY,
    tid          TEXT NOT NULL UNIQUE,      -- 'Type/id'
    type         TEXT NOT NULL,
    id           TEXT NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,          -- microseconds since the epoch (UTC)
    deleted      INTEGER NOT NULL DEFAULT 0,
    source_key   TEXT,                      -- the source record this resource came from
    hash         INTEGER,                   -- tsunagi_core::hash::content_hash of content (bit pattern as i64)
    content      BLOB                       -- JSON without versionId/lastUpdated; NULL when deleted
);
CREATE INDEX resources_source ON resources (source_key);

-- Earlier versions (the current one lives in resources).
CREATE TABLE resource_history (
    rid          INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    deleted      INTEGER NOT NULL,
    content      BLOB,
    PRIMARY KEY (rid, version)
) WITHOUT ROWID;

-- Search-index rows of current, non-deleted versions. `param` is tsunagi_fhir::search::SearchParam::id.
-- Token systems are long URLs repeated in most token rows: stored once, referenced by id.
CREATE TABLE token_systems (
    id     INTEGER PRIMARY KEY,
    system TEXT NOT NULL UNIQUE
);

CREATE TABLE idx_token (
    param     INTEGER NOT NULL,
    code      TEXT NOT NULL,
    system_id INTEGER NOT NULL,             -- token_systems.id
    rid       INTEGER NOT NULL,
    PRIMARY KEY (param, code, system_id, rid)
) WITHOUT ROWID;

CREATE TABLE idx_string (
    param INTEGER NOT NULL,
    value TEXT NOT NULL,
    rid   INTEGER NOT NULL,
    PRIMARY KEY (param, value, rid)
) WITHOUT ROWID;

CREATE TABLE idx_date (
    param INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    rid   INTEGER NOT NULL,
    PRIMARY KEY (param, start, "end", rid)
) WITHOUT ROWID;

CREATE TABLE idx_reference (
    param       INTEGER NOT NULL,
    target_id   TEXT NOT NULL,
    target_type TEXT NOT NULL,
    rid         INTEGER NOT NULL,
    PRIMARY KEY (param, target_id, target_type, rid)
) WITHOUT ROWID;

CREATE TABLE idx_quantity (
    param  INTEGER NOT NULL,
    code   TEXT NOT NULL,
    value  REAL NOT NULL,
    system TEXT NOT NULL,
    rid    INTEGER NOT NULL,
    PRIMARY KEY (param, code, value, system, rid)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    scope TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;

CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
