-- Schema 8 (issue 20): a document's bytes in parts of at most 1 MiB (tsunagi_store::
-- BLOB_PART_BYTES), keyed by the offset of their first byte, so that a read streams a document
-- (or a range of it) part by part instead of holding it whole. `blobs` keeps each content's
-- SHA-256 and size; the bytes of schema 6's blobs are cut into parts here.
CREATE TABLE blob_parts (
    sha256     BYTEA NOT NULL,    -- 32 bytes, the content's (blobs.sha256)
    first_byte BIGINT NOT NULL,   -- offset of the part's first byte in the content
    bytes      BYTEA NOT NULL,
    PRIMARY KEY (sha256, first_byte)
);
-- Documents are mostly PDF and images, already compressed: kept out of line, uncompressed.
ALTER TABLE blob_parts ALTER COLUMN bytes SET STORAGE EXTERNAL;
INSERT INTO blob_parts (sha256, first_byte, bytes)
SELECT b.sha256, g.first_byte, substring(b.bytes FROM (g.first_byte + 1)::int FOR 1048576)
FROM blobs b
CROSS JOIN LATERAL generate_series(0::bigint, GREATEST(b.size - 1, 0), 1048576) AS g(first_byte);
-- The table rebuilt without its bytes (a dropped column's values would stay on disk for as long
-- as the rows do, and these rows are never rewritten).
CREATE TABLE blobs_sized (
    sha256 BYTEA PRIMARY KEY,   -- 32 bytes
    size   BIGINT NOT NULL
);
INSERT INTO blobs_sized (sha256, size) SELECT sha256, size FROM blobs;
DROP TABLE blobs;
ALTER TABLE blobs_sized RENAME TO blobs;
