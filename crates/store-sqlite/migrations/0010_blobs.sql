-- Schema 10 (issue 20): the bytes of documents (extended storage's CDA and PDF files), kept
-- exactly as the source wrote them, once per content. A Binary resource names its bytes by
-- SHA-256 (meta.tag urn:tsunagi:sha256); who may read them is the Binary's compartment. A rowid
-- table: its rows are large, and SQLite keeps large rows out of a WITHOUT ROWID b-tree badly.
CREATE TABLE blobs (
    sha256 BLOB NOT NULL UNIQUE,   -- 32 bytes
    size   INTEGER NOT NULL,
    bytes  BLOB NOT NULL
);
