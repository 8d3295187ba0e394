-- Schema 6 (issue 20): the bytes of documents (extended storage's CDA and PDF files), kept
-- exactly as the source wrote them, once per content. A Binary resource names its bytes by
-- SHA-256 (meta.tag urn:tsunagi:sha256); who may read them is the Binary's compartment.
CREATE TABLE blobs (
    sha256 BYTEA PRIMARY KEY,   -- 32 bytes
    size   BIGINT NOT NULL,
    bytes  BYTEA NOT NULL
);
