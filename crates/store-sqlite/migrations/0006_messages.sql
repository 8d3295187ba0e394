-- Schema 6: the inbound message log of the live feeds (HL7 v2 over MLLP and HTTP). Each row is one
-- received message: its raw bytes, the duplicate key (sender + MSH-10) with a SHA-256 of the
-- content, what was done with it and the ACK it was answered with. A row commits in the same
-- transaction as the resources the message maps to, before the ACK is sent.
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    sender TEXT NOT NULL,
    control_id TEXT NOT NULL,
    hash BLOB NOT NULL,
    received INTEGER NOT NULL,
    facility TEXT NOT NULL,
    message_type TEXT NOT NULL,
    patient TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    ack BLOB NOT NULL,
    raw BLOB NOT NULL
);
-- One message per duplicate key; a conflicting resend is kept beside it as evidence.
CREATE UNIQUE INDEX messages_key ON messages (sender, control_id) WHERE state <> 'conflict';
-- The operator's quarantine list.
CREATE INDEX messages_open ON messages (state, seq) WHERE state <> 'applied';
