-- Schema 9 (issue 18): which facilities a lab company reports results for belongs to the
-- directory (`tsunagi admin facility reports-for`), read by both the FHIR transaction endpoint
-- and the HL7 v2 intake.
CREATE TABLE lab_reports (
    lab      TEXT NOT NULL,   -- the lab company's facility code
    facility TEXT NOT NULL,   -- a facility whose patients it reports results for
    PRIMARY KEY (lab, facility)
) WITHOUT ROWID;
