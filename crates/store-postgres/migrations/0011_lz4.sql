-- Schema 11 (issue 22): the columns that hold resources' JSON and messages are compressed with
-- LZ4 instead of pglz when PostgreSQL can (14 and later, built with LZ4, as Debian's, the
-- official images' and the common managed services' are). pglz took a tenth of the writing
-- backend's CPU in a bulk ingest; LZ4 compresses JSON about as well in a fraction of the time.
-- Only values written from now on are compressed so; older ones stay readable as they are.
-- Where LZ4 is not available the columns keep the server's default, and nothing else changes.
DO $$
BEGIN
    -- Dynamic, so that a server without the clause fails here, inside the handler.
    EXECUTE 'ALTER TABLE resources ALTER COLUMN content SET COMPRESSION lz4';
    EXECUTE 'ALTER TABLE resource_history ALTER COLUMN content SET COMPRESSION lz4';
    EXECUTE 'ALTER TABLE messages ALTER COLUMN raw SET COMPRESSION lz4';
    EXECUTE 'ALTER TABLE idx_text ALTER COLUMN narrative SET COMPRESSION lz4';
    EXECUTE 'ALTER TABLE idx_text ALTER COLUMN other SET COMPRESSION lz4';
EXCEPTION
    WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN
        RAISE NOTICE 'LZ4 compression is not available: the server''s default stays (%)', SQLERRM;
END
$$;
