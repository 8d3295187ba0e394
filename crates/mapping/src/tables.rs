//! Code tables: local code → standard code, department codes, unit spellings.
//!
//! The tables are data files under `mappings/` (CSV with a header line; `#` starts a comment).
//! This module only parses text handed to it, so the mapping stays pure:
//!
//! - `codes.csv` (per facility): `table,local_code,system,code,display` — a local code of HL7
//!   table `table` (e.g. `99X03`) has the standard code `code` in HL7 coding system `system`
//!   (e.g. `JC10`, `HOT9`);
//! - `departments.csv` (per facility): `local_code,department_code,display` — a facility's own
//!   department code and the SS-MIX2 table-0069 code it stands for;
//! - `units.csv` (common): `unit,ucum` — unit spellings (as sent in OBX-6 / RXE-5) that are known
//!   to be valid UCUM, with the UCUM code. Units not listed are never claimed as UCUM.

use std::collections::HashMap;

use tsunagi_fhir::systems::for_hl7_coding_system;

/// A standard code a local code maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardCode {
    /// HL7 coding-system name as written in the table (e.g. `JC10`).
    pub system_name: String,
    /// The code.
    pub code: String,
    /// Its display text.
    pub display: String,
}

/// All tables of one facility (plus the common ones).
#[derive(Debug, Clone, Default)]
pub struct CodeTables {
    /// table → local code → standard code (nested so lookups borrow, never allocate).
    codes: HashMap<String, HashMap<String, StandardCode>>,
    departments: HashMap<String, (String, String)>,
    units: HashMap<String, String>,
}

/// A malformed table line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table} line {line}: {reason}")]
pub struct TableError {
    /// Which table (file name as given by the caller).
    pub table: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

fn rows<'t>(
    name: &str,
    text: &'t str,
    columns: usize,
) -> Result<Vec<(usize, Vec<&'t str>)>, TableError> {
    let mut result = Vec::new();
    let mut header_seen = false;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !header_seen {
            header_seen = true;
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != columns {
            return Err(TableError {
                table: name.to_owned(),
                line: index + 1,
                reason: format!(
                    "expected {columns} comma-separated columns, found {}",
                    cells.len()
                ),
            });
        }
        if cells.iter().take(2).any(|cell| cell.is_empty()) {
            return Err(TableError {
                table: name.to_owned(),
                line: index + 1,
                reason: "the first two columns must not be empty".to_owned(),
            });
        }
        result.push((index + 1, cells));
    }
    Ok(result)
}

impl CodeTables {
    /// Adds a `codes.csv` table.
    pub fn add_codes(&mut self, name: &str, text: &str) -> Result<(), TableError> {
        for (_, cells) in rows(name, text, 5)? {
            self.codes.entry(cells[0].to_owned()).or_default().insert(
                cells[1].to_owned(),
                StandardCode {
                    system_name: cells[2].to_owned(),
                    code: cells[3].to_owned(),
                    display: cells[4].to_owned(),
                },
            );
        }
        Ok(())
    }

    /// Adds a `departments.csv` table.
    pub fn add_departments(&mut self, name: &str, text: &str) -> Result<(), TableError> {
        for (_, cells) in rows(name, text, 3)? {
            self.departments.insert(
                cells[0].to_owned(),
                (cells[1].to_owned(), cells[2].to_owned()),
            );
        }
        Ok(())
    }

    /// Adds a `units.csv` table.
    pub fn add_units(&mut self, name: &str, text: &str) -> Result<(), TableError> {
        for (line, cells) in rows(name, text, 2)? {
            if cells[1].contains(char::is_whitespace) {
                return Err(TableError {
                    table: name.to_owned(),
                    line,
                    reason: "a UCUM code has no white space".to_owned(),
                });
            }
            self.units.insert(cells[0].to_owned(), cells[1].to_owned());
        }
        Ok(())
    }

    /// The standard code for a local code of `table`.
    pub fn standard(&self, table: &str, code: &str) -> Option<&StandardCode> {
        self.codes.get(table)?.get(code)
    }

    /// The SS-MIX2 department code and name for a facility department code.
    pub fn department(&self, local_code: &str) -> Option<(&str, &str)> {
        self.departments
            .get(local_code)
            .map(|(code, display)| (code.as_str(), display.as_str()))
    }

    /// The UCUM code for a unit spelling, if it is known to be UCUM.
    pub fn ucum(&self, unit: &str) -> Option<&str> {
        self.units.get(unit).map(String::as_str)
    }

    /// Number of local-code rows (for diagnostics).
    pub fn code_count(&self) -> usize {
        self.codes.values().map(HashMap::len).sum()
    }

    /// The FHIR system URL of a standard code's system.
    pub fn system_url(&self, standard: &StandardCode, facility: &str) -> String {
        for_hl7_coding_system(&standard.system_name, facility)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports_bad_lines() {
        let mut tables = CodeTables::default();
        tables
            .add_codes(
                "codes.csv",
                "# lab codes\ntable,local_code,system,code,display\n99X03,10222,JC10,3A010000002327101,総蛋白\n",
            )
            .unwrap();
        assert_eq!(
            tables.standard("99X03", "10222").unwrap().code,
            "3A010000002327101"
        );
        assert!(tables.standard("99X03", "1").is_none());
        tables
            .add_units("units.csv", "unit,ucum\ng/dl,g/dL\n")
            .unwrap();
        assert_eq!(tables.ucum("g/dl"), Some("g/dL"));
        let error = tables
            .add_codes("codes.csv", "h\n99X03,10222,JC10\n")
            .unwrap_err();
        assert_eq!(error.line, 2);
        assert!(tables.add_units("u", "h\nbad,a b\n").is_err());
    }
}
