-- Schema 4 (see the SQLite store's 0008_standing.sql): a portal's facilities besides its own,
-- facilities that left the network, and revoked tokens and subjects.
ALTER TABLE clients ADD COLUMN serves TEXT NOT NULL DEFAULT '';
ALTER TABLE facilities ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE;
CREATE TABLE revocations (
    kind  TEXT NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    at    BIGINT NOT NULL,
    PRIMARY KEY (kind, value)
);
