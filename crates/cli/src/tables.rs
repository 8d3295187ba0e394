//! Loads a facility's code tables: the copy of `mappings/` built into the binary, or a folder
//! given with `--mappings`.

use std::path::Path;

use anyhow::Context;
use tsunagi_mapping::CodeTables;

include!(concat!(env!("OUT_DIR"), "/mappings.rs"));

/// The tables for `facility`: common unit spellings plus the facility's own tables if present.
pub(crate) fn load(facility: &str, folder: Option<&Path>) -> anyhow::Result<CodeTables> {
    let mut tables = CodeTables::default();
    let read = |relative: &str| -> anyhow::Result<Option<String>> {
        match folder {
            Some(folder) => {
                let path = folder.join(relative);
                if path.exists() {
                    Ok(Some(std::fs::read_to_string(&path).with_context(|| {
                        format!("cannot read {}", path.display())
                    })?))
                } else {
                    Ok(None)
                }
            }
            None => Ok(EMBEDDED
                .iter()
                .find(|(name, _)| *name == relative)
                .map(|(_, text)| (*text).to_owned())),
        }
    };
    if let Some(text) = read("common/units.csv")? {
        tables.add_units("common/units.csv", &text)?;
    }
    let codes = format!("facilities/{facility}/codes.csv");
    if let Some(text) = read(&codes)? {
        tables.add_codes(&codes, &text)?;
    }
    let departments = format!("facilities/{facility}/departments.csv");
    if let Some(text) = read(&departments)? {
        tables.add_departments(&departments, &text)?;
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_tables_parse() {
        assert!(
            super::EMBEDDED
                .iter()
                .any(|(name, _)| *name == "common/units.csv")
        );
        for facility in ["0610100010", "0610200018", "0610300016", "9999999999"] {
            super::load(facility, None).unwrap();
        }
        let nihonkai = super::load("0610200018", None).unwrap();
        assert_eq!(nihonkai.department("101"), Some(("01", "内科")));
    }
}
