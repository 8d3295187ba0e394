-- The PostgreSQL FHIR store, schema 1: the same model as the SQLite store's migrations 0001–0005
-- (crates/store-sqlite/migrations), in one script. Text that is sorted or compared for order is
-- COLLATE "C" (byte order, as SQLite sorts), so every backend lists in the same order.
-- Writers take a transaction-level advisory lock (one writer at a time, as SQLite's BEGIN
-- IMMEDIATE): batches never interleave, so versions and source sets cannot race.

CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Patient compartments; `facility` holds (discloses) the record.
CREATE TABLE compartments (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient  TEXT COLLATE "C" NOT NULL UNIQUE,
    facility TEXT
);

CREATE TABLE resources (
    rid          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tid          TEXT COLLATE "C" NOT NULL UNIQUE,   -- 'Type/id'
    type         TEXT COLLATE "C" NOT NULL,
    id           TEXT COLLATE "C" NOT NULL,
    version      BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,                   -- microseconds since the epoch (UTC)
    deleted      BOOLEAN NOT NULL DEFAULT FALSE,
    source_key   TEXT,
    hash         BIGINT,                            -- content_hash, bit pattern as i64
    content      BYTEA,                             -- JSON without versionId/lastUpdated; NULL when deleted
    pat          BIGINT NOT NULL DEFAULT 0          -- compartments.id, 0 for none
);
CREATE INDEX resources_source ON resources (source_key);
CREATE INDEX resources_pat ON resources (pat, type);
CREATE INDEX resources_type_updated ON resources (type, last_updated);
CREATE INDEX resources_updated ON resources (last_updated);

CREATE TABLE resource_history (
    rid          BIGINT NOT NULL,
    version      BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    deleted      BOOLEAN NOT NULL,
    content      BYTEA,
    PRIMARY KEY (rid, version)
);
CREATE INDEX resource_history_updated ON resource_history (last_updated);

CREATE TABLE token_systems (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    system TEXT NOT NULL UNIQUE
);

-- Search-index rows of current, non-deleted versions. Unlike SQLite's, each has an index on
-- `rid`: a replaced version's rows are deleted by rid instead of re-extracted.
CREATE TABLE idx_token (
    param     BIGINT NOT NULL,
    code      TEXT COLLATE "C" NOT NULL,
    pat       BIGINT NOT NULL,
    system_id BIGINT NOT NULL,
    rid       BIGINT NOT NULL,
    PRIMARY KEY (param, code, pat, system_id, rid)
);
CREATE INDEX idx_token_rid ON idx_token (rid);

CREATE TABLE idx_string (
    param BIGINT NOT NULL,
    pat   BIGINT NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    rid   BIGINT NOT NULL,
    PRIMARY KEY (param, pat, value, rid)
);
CREATE INDEX idx_string_rid ON idx_string (rid);

CREATE TABLE idx_date (
    param BIGINT NOT NULL,
    pat   BIGINT NOT NULL,
    start BIGINT NOT NULL,
    "end" BIGINT NOT NULL,
    rid   BIGINT NOT NULL,
    PRIMARY KEY (param, pat, start, "end", rid)
);
CREATE INDEX idx_date_rid ON idx_date (rid);

CREATE TABLE idx_reference (
    param       BIGINT NOT NULL,
    target_id   TEXT COLLATE "C" NOT NULL,
    target_type TEXT COLLATE "C" NOT NULL,
    rid         BIGINT NOT NULL,
    PRIMARY KEY (param, target_id, target_type, rid)
);
CREATE INDEX idx_reference_rid ON idx_reference (rid);

CREATE TABLE idx_quantity (
    param  BIGINT NOT NULL,
    code   TEXT COLLATE "C" NOT NULL,
    pat    BIGINT NOT NULL,
    value  DOUBLE PRECISION NOT NULL,
    system TEXT NOT NULL,
    rid    BIGINT NOT NULL,
    PRIMARY KEY (param, code, pat, value, system, rid)
);
CREATE INDEX idx_quantity_rid ON idx_quantity (rid);

CREATE TABLE checkpoints (
    scope TEXT COLLATE "C" NOT NULL,
    key   TEXT COLLATE "C" NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (scope, key)
);

-- Who may see what (see the SQLite migration 0004 for the model).
CREATE TABLE facilities (
    code       TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE participants (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT NOT NULL,
    facility   TEXT NOT NULL REFERENCES facilities (code),
    role       TEXT NOT NULL,
    active     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE clients (
    id         TEXT COLLATE "C" PRIMARY KEY,
    facility   TEXT NOT NULL REFERENCES facilities (code),
    kind       TEXT NOT NULL,
    jwks       TEXT NOT NULL,
    scope      TEXT NOT NULL,
    active     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE patient_links (
    compartment BIGINT PRIMARY KEY,
    regional    TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX patient_links_regional ON patient_links (regional);

CREATE TABLE consents (
    id           TEXT COLLATE "C" PRIMARY KEY,
    patient      TEXT NOT NULL,
    disclosing   TEXT NOT NULL,
    viewing      TEXT NOT NULL,
    start        BIGINT NOT NULL,
    "end"        BIGINT NOT NULL,
    withdrawn_at BIGINT,
    source       TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX consents_patient ON consents (patient);

CREATE TABLE access (
    viewer     TEXT NOT NULL,
    pat        BIGINT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after  BIGINT NOT NULL,
    consent    TEXT NOT NULL,
    PRIMARY KEY (viewer, pat, consent)
);
CREATE INDEX access_consent ON access (consent);

-- The audit trail, append-only: triggers refuse UPDATE and DELETE (and TRUNCATE).
CREATE TABLE audit (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id       TEXT,
    recorded BIGINT NOT NULL,
    patient  TEXT,
    facility TEXT,
    event    BYTEA NOT NULL
);
CREATE INDEX audit_patient ON audit (patient, recorded);
CREATE INDEX audit_recorded ON audit (recorded);
CREATE INDEX audit_id ON audit (id);
CREATE INDEX audit_facility ON audit (facility, recorded);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit records are append-only'; END $$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

CREATE TABLE seen_assertions (
    client TEXT NOT NULL,
    jti    TEXT NOT NULL,
    exp    BIGINT NOT NULL,
    PRIMARY KEY (client, jti)
);

CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    pem        TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
