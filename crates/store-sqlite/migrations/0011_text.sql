-- Schema 11 (issue 20): full text of documents, reports, procedures and notes (`_content`,
-- `_text`). One row per current resource, its words normalised by tsunagi_fhir::search::text.
-- A patient's texts are scanned by `pat` (any term length); region-wide, terms of 3 or more
-- characters are looked up in the FTS5 trigram index kept beside it by the triggers below.
CREATE TABLE idx_text (
    rid       INTEGER PRIMARY KEY,
    param     INTEGER NOT NULL,
    pat       INTEGER NOT NULL,
    narrative TEXT NOT NULL,
    other     TEXT NOT NULL
);
CREATE INDEX idx_text_pat ON idx_text (pat, param);

CREATE VIRTUAL TABLE idx_text_fts USING fts5(
    narrative, other, content = 'idx_text', content_rowid = 'rid', tokenize = 'trigram'
);

CREATE TRIGGER idx_text_insert AFTER INSERT ON idx_text BEGIN
    INSERT INTO idx_text_fts (rowid, narrative, other) VALUES (new.rid, new.narrative, new.other);
END;
CREATE TRIGGER idx_text_delete AFTER DELETE ON idx_text BEGIN
    INSERT INTO idx_text_fts (idx_text_fts, rowid, narrative, other)
        VALUES ('delete', old.rid, old.narrative, old.other);
END;
CREATE TRIGGER idx_text_update AFTER UPDATE ON idx_text BEGIN
    INSERT INTO idx_text_fts (idx_text_fts, rowid, narrative, other)
        VALUES ('delete', old.rid, old.narrative, old.other);
    INSERT INTO idx_text_fts (rowid, narrative, other) VALUES (new.rid, new.narrative, new.other);
END;
