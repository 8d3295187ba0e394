-- Patient compartments (issue 3): every resource and most index rows carry the integer id of the
-- patient whose record they belong to, so a patient-scoped search reads only that patient's
-- rows, however large the region grows.
CREATE TABLE compartments (
    id      INTEGER PRIMARY KEY,
    patient TEXT NOT NULL UNIQUE            -- Patient logical id
);

-- 0 when the resource belongs to no patient. A Patient resource holds its own compartment id.
ALTER TABLE resources ADD COLUMN pat INTEGER NOT NULL DEFAULT 0;
CREATE INDEX resources_pat ON resources (pat, type);
-- _lastUpdated searches and whole-type scans.
CREATE INDEX resources_type_updated ON resources (type, last_updated);

-- Index rows: `pat` is the compartment of the resource (0 for Patient resources themselves and
-- for resources outside any patient's record), placed so that both "this patient's rows of a
-- parameter" and "every row with this code" are key-range scans.
DROP TABLE idx_token;
CREATE TABLE idx_token (
    param     INTEGER NOT NULL,
    code      TEXT NOT NULL,
    pat       INTEGER NOT NULL,
    system_id INTEGER NOT NULL,             -- token_systems.id
    rid       INTEGER NOT NULL,
    PRIMARY KEY (param, code, pat, system_id, rid)
) WITHOUT ROWID;

DROP TABLE idx_string;
CREATE TABLE idx_string (
    param INTEGER NOT NULL,
    pat   INTEGER NOT NULL,
    value TEXT NOT NULL,
    rid   INTEGER NOT NULL,
    PRIMARY KEY (param, pat, value, rid)
) WITHOUT ROWID;

DROP TABLE idx_date;
CREATE TABLE idx_date (
    param INTEGER NOT NULL,
    pat   INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    rid   INTEGER NOT NULL,
    PRIMARY KEY (param, pat, start, "end", rid)
) WITHOUT ROWID;

DROP TABLE idx_quantity;
CREATE TABLE idx_quantity (
    param  INTEGER NOT NULL,
    code   TEXT NOT NULL,
    pat    INTEGER NOT NULL,
    value  REAL NOT NULL,
    system TEXT NOT NULL,
    rid    INTEGER NOT NULL,
    PRIMARY KEY (param, code, pat, value, system, rid)
) WITHOUT ROWID;

-- The index tables are new and empty: the registry-version check after migrating refills them.
UPDATE store_meta SET value = '0' WHERE key = 'registry_version';
