-- Schema 12 (issue 20): a document's bytes in parts of at most 1 MiB (tsunagi_store::
-- BLOB_PART_BYTES), keyed by the offset of their first byte, so that a read streams a document
-- (or a range of it) part by part instead of holding it whole. `blobs` keeps each content's
-- SHA-256 and size; the bytes of schema 10's blobs are cut into parts here.
CREATE TABLE blob_parts (
    sha256     BLOB NOT NULL,      -- 32 bytes, the content's (blobs.sha256)
    first_byte INTEGER NOT NULL,   -- offset of the part's first byte in the content
    bytes      BLOB NOT NULL,
    UNIQUE (sha256, first_byte)
);
WITH RECURSIVE cut(sha256, first_byte) AS (
    SELECT sha256, 0 FROM blobs
    UNION ALL
    SELECT cut.sha256, cut.first_byte + 1048576
    FROM cut JOIN blobs ON blobs.sha256 = cut.sha256
    WHERE cut.first_byte + 1048576 < blobs.size
)
INSERT INTO blob_parts (sha256, first_byte, bytes)
SELECT cut.sha256, cut.first_byte, coalesce(substr(blobs.bytes, cut.first_byte + 1, 1048576), x'')
FROM cut JOIN blobs ON blobs.sha256 = cut.sha256;
ALTER TABLE blobs DROP COLUMN bytes;
