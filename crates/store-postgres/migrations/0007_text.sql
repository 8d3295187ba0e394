-- Schema 7 (issue 20): full text of documents, reports, procedures and notes (`_content`,
-- `_text`). One row per current resource, its words normalised by tsunagi_fhir::search::text.
-- A patient's texts are scanned by `pat` (any term length); region-wide, terms of 3 or more
-- characters use the pg_trgm GIN indexes (LIKE '%term%'). pg_trgm is a trusted extension
-- (PostgreSQL 13+): the database's owner may create it. It is created in `public` unless the
-- database has it already (wherever that is); the operator class is named through its schema,
-- so a store kept in a schema of its own (search_path without `public`) still finds it, and
-- dropping such a schema never drops the extension other stores' indexes use.
CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;

CREATE TABLE idx_text (
    rid       BIGINT PRIMARY KEY,
    param     BIGINT NOT NULL,
    pat       BIGINT NOT NULL,
    narrative TEXT NOT NULL,
    other     TEXT NOT NULL
);
CREATE INDEX idx_text_pat ON idx_text (pat, param);

DO $$
DECLARE
    home TEXT;
BEGIN
    SELECT n.nspname INTO home FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'pg_trgm';
    EXECUTE format('CREATE INDEX idx_text_narrative ON idx_text USING gin (narrative %I.gin_trgm_ops)', home);
    EXECUTE format('CREATE INDEX idx_text_other ON idx_text USING gin (other %I.gin_trgm_ops)', home);
END
$$;
