-- Who may see what (issue 4): the directory, patient links, consents, the permitted set the
-- query planner filters on, the audit trail, replayed assertion ids and token-signing keys.

-- The facility that holds (discloses) a compartment's record: set from the source record that
-- wrote it. NULL only for data written without a facility (nobody but the operator sees it).
ALTER TABLE compartments ADD COLUMN facility TEXT;
-- Databases ingested before this schema: the SS-MIX2 adapter's source keys name the facility.
UPDATE compartments SET facility = (
    SELECT substr(r.source_key, 8, 10) FROM resources r
    WHERE r.tid = 'Patient/' || compartments.patient AND r.source_key LIKE 'ssmix2:%'
);

CREATE TABLE facilities (
    code       TEXT PRIMARY KEY,           -- 10-digit 医療機関コード (or 事業所番号)
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,              -- hospital, clinic, pharmacy, …
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE participants (
    id         TEXT PRIMARY KEY,           -- user id (token `sub`)
    name       TEXT NOT NULL,
    facility   TEXT NOT NULL REFERENCES facilities (code),
    role       TEXT NOT NULL,
    active     INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE clients (
    id         TEXT PRIMARY KEY,           -- client_id
    facility   TEXT NOT NULL REFERENCES facilities (code),
    kind       TEXT NOT NULL,              -- system | portal
    jwks       TEXT NOT NULL,              -- registered public keys (JWK Set, by value)
    scope      TEXT NOT NULL,              -- the most a token of this client may carry
    active     INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- 紐付け: compartments of one person at several facilities, linked by an explicit act.
CREATE TABLE patient_links (
    compartment INTEGER PRIMARY KEY,       -- compartments.id
    regional    TEXT NOT NULL,             -- regional patient id
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX patient_links_regional ON patient_links (regional);

-- (patient, disclosing facility, viewing facility, period); withdrawal ends it.
CREATE TABLE consents (
    id           TEXT PRIMARY KEY,
    patient      TEXT NOT NULL,            -- a Patient logical id of the person
    disclosing   TEXT NOT NULL,
    viewing      TEXT NOT NULL,
    start        INTEGER NOT NULL,         -- microseconds, inclusive
    "end"        INTEGER NOT NULL,         -- microseconds, exclusive
    withdrawn_at INTEGER,
    source       TEXT NOT NULL,            -- invitation | signed-consent
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX consents_patient ON consents (patient);

-- The compartments a facility may see through a consent, with the consent's period, recomputed in
-- the transaction that changes a consent or a link. A facility's own compartments are not
-- listed: they are `compartments.facility`.
CREATE TABLE access (
    viewer     TEXT NOT NULL,
    pat        INTEGER NOT NULL,
    not_before INTEGER NOT NULL,
    not_after  INTEGER NOT NULL,
    consent    TEXT NOT NULL,
    PRIMARY KEY (viewer, pat, consent)
) WITHOUT ROWID;
CREATE INDEX access_consent ON access (consent);

-- BALP AuditEvents, append-only: no statement may change or remove one.
CREATE TABLE audit (
    seq      INTEGER PRIMARY KEY,
    recorded INTEGER NOT NULL,             -- microseconds
    patient  TEXT,                         -- Patient logical id, NULL when none was touched
    event    BLOB NOT NULL                 -- AuditEvent JSON
);
CREATE INDEX audit_patient ON audit (patient, recorded);
CREATE INDEX audit_recorded ON audit (recorded);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;

-- Client-assertion ids seen, kept until they expire (replay protection).
CREATE TABLE seen_assertions (
    client TEXT NOT NULL,
    jti    TEXT NOT NULL,
    exp    INTEGER NOT NULL,               -- seconds
    PRIMARY KEY (client, jti)
) WITHOUT ROWID;

-- Tsunagi's ES384 token-signing keys (PKCS#8 PEM), newest used for signing.
CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    pem        TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Compartments written before this schema get their facility from the SS-MIX2 adapter's source
-- key of their Patient (`ssmix2:<10-digit code>:…`).
UPDATE compartments SET facility = (
    SELECT substr(r.source_key, 8, 10) FROM resources r
    WHERE r.tid = 'Patient/' || compartments.patient AND r.source_key LIKE 'ssmix2:%')
WHERE facility IS NULL;
