-- Schema 3: the outbound queue (see the SQLite store's 0007_outbox.sql).
CREATE TABLE outbox (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination  TEXT NOT NULL,
    resource     TEXT NOT NULL,
    task         TEXT NOT NULL,
    patient      TEXT NOT NULL,
    control_id   TEXT NOT NULL,
    payload      BYTEA NOT NULL,
    state        TEXT NOT NULL,
    attempts     BIGINT NOT NULL,
    next_attempt BIGINT NOT NULL,
    last_error   TEXT NOT NULL,
    ack          BYTEA NOT NULL,
    created      BIGINT NOT NULL,
    updated      BIGINT NOT NULL
);
CREATE UNIQUE INDEX outbox_key ON outbox (resource, destination);
CREATE INDEX outbox_due ON outbox (next_attempt, seq) WHERE state = 'pending';
CREATE INDEX outbox_state ON outbox (state, seq);
