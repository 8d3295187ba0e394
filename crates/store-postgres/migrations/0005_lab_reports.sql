-- Schema 5 (issue 18): which facilities a lab company reports results for, in the directory.
CREATE TABLE lab_reports (
    lab      TEXT NOT NULL,
    facility TEXT NOT NULL,
    PRIMARY KEY (lab, facility)
);
