-- Schema 2: the inbound message log of the live feeds (see the SQLite store's 0006_messages.sql).
CREATE TABLE messages (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel      TEXT NOT NULL,
    sender       TEXT NOT NULL,
    control_id   TEXT NOT NULL,
    hash         BYTEA NOT NULL,
    received     BIGINT NOT NULL,
    facility     TEXT NOT NULL,
    message_type TEXT NOT NULL,
    patient      TEXT NOT NULL,
    state        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    ack          BYTEA NOT NULL,
    raw          BYTEA NOT NULL
);
CREATE UNIQUE INDEX messages_key ON messages (sender, control_id) WHERE state <> 'conflict';
CREATE INDEX messages_open ON messages (state, seq) WHERE state <> 'applied';
