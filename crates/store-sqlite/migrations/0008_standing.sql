-- Schema 8 (issue 17): what every request's token is checked against, besides its signature.
-- A portal acts only for users of its own facility or of the facilities it lists in `serves`
-- (space-separated codes); a deactivated facility's people and clients lose their tokens; a
-- revoked token (by jti) or subject (user or client, tokens issued up to `at`) is refused from
-- the next request on.
ALTER TABLE clients ADD COLUMN serves TEXT NOT NULL DEFAULT '';
ALTER TABLE facilities ADD COLUMN active INTEGER NOT NULL DEFAULT 1;
CREATE TABLE revocations (
    kind  TEXT NOT NULL,      -- token | subject
    value TEXT NOT NULL,      -- the jti, or the user or client id
    at    INTEGER NOT NULL,   -- seconds: a subject's tokens issued at or before are refused
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
