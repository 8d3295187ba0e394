-- Schema 7: the outbound queue. Each row is one delivery of a note or document written through the
-- API to the hospital owning the patient's record: the HL7 v2 payload fixed at write time (the
-- same bytes and MSH-10 on every attempt), where the delivery stands, and the peer's last ACK.
-- A row commits in the same transaction as the resource it carries.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    resource TEXT NOT NULL,
    task TEXT NOT NULL,
    patient TEXT NOT NULL,
    control_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    ack BLOB NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
-- One delivery of a resource to a destination.
CREATE UNIQUE INDEX outbox_key ON outbox (resource, destination);
-- The worker's due list.
CREATE INDEX outbox_due ON outbox (next_attempt, seq) WHERE state = 'pending';
-- The operator's lists.
CREATE INDEX outbox_state ON outbox (state, seq);
