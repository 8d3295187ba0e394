-- Schema 5: audit records become searchable over FHIR (AuditEvent?patient=&date=, read by id)
-- and an administrator sees the events of their own facility's agents: each record keeps the
-- AuditEvent's id and the requesting agent's facility. Adding columns changes no record
-- (records written before this schema keep NULL and are found by patient and date only).
ALTER TABLE audit ADD COLUMN id TEXT;
ALTER TABLE audit ADD COLUMN facility TEXT;
CREATE INDEX audit_id ON audit (id);
CREATE INDEX audit_facility ON audit (facility, recorded);

-- Records of the network written before this schema have no FHIR projection yet: the store
-- writes them when it opens, in the transaction that clears this flag (a crash between the two
-- only means projecting again). A new database (no schema recorded yet) has none to project.
INSERT OR REPLACE INTO store_meta (key, value)
SELECT 'projections', 'pending' WHERE EXISTS (SELECT 1 FROM store_meta WHERE key = 'schema_version');
