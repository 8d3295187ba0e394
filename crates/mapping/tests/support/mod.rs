//! Shared helpers for the mapping tests: run one SS-MIX2 file through decode → parse → map,
//! and compare JSON with a snapshot file (`UPDATE_SNAPSHOTS=1` rewrites snapshots).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tsunagi_core::FacilityId;
use tsunagi_hl7v2::{Message, charset};
use tsunagi_mapping::{CodeTables, DataType, Origin, SourceContext, map_message};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tables(facility: &str) -> CodeTables {
    let mut tables = CodeTables::default();
    let root = workspace().join("mappings");
    tables
        .add_units(
            "units.csv",
            &std::fs::read_to_string(root.join("common/units.csv")).unwrap(),
        )
        .unwrap();
    let dir = root.join("facilities").join(facility);
    if let Ok(text) = std::fs::read_to_string(dir.join("codes.csv")) {
        tables.add_codes("codes.csv", &text).unwrap();
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("departments.csv")) {
        tables.add_departments("departments.csv", &text).unwrap();
    }
    tables
}

/// Every file below `root`, sorted.
pub fn files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Maps one file's bytes under the given file name; returns the snapshot JSON
/// (`{"resources": [...], "warnings": [...]}` or `{"error": "..."}`).
pub fn map_bytes(facility: &str, file_name: &str, bytes: &[u8], tables: &CodeTables) -> Value {
    let fields: Vec<&str> = file_name.split('_').collect();
    assert_eq!(fields.len(), 7, "{file_name}");
    let facility = FacilityId::parse(facility).unwrap();
    let context = SourceContext {
        facility: &facility,
        patient_id: fields[0],
        care_date: fields[1],
        data_type: DataType::parse(fields[2]).unwrap(),
        order_number: fields[3],
        origin: Origin::File(file_name),
        tables,
    };
    let (text, _) = match charset::decode(bytes) {
        Ok(decoded) => decoded,
        Err(error) => return json!({"error": error.to_string()}),
    };
    let message = match Message::parse(&text) {
        Ok(message) => message,
        Err(error) => return json!({"error": error.to_string()}),
    };
    match map_message(&context, &message) {
        Ok(mapped) => {
            let mut snapshot = json!({
                "resources": mapped.resources.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
                "warnings": mapped.warnings,
            });
            if !mapped.contributions.is_empty() {
                snapshot["contributions"] = mapped
                    .contributions
                    .iter()
                    .map(|c| json!({"target": format!("{}/{}", c.resource_type, c.id), "part": c.part}))
                    .collect();
            }
            snapshot
        }
        Err(error) => json!({"error": error.to_string()}),
    }
}

/// Compares `actual` with the snapshot at `path`.
pub fn check_snapshot(path: &Path, actual: &Value) {
    let rendered = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &rendered).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "missing snapshot {} (run with UPDATE_SNAPSHOTS=1 to create it)",
            path.display()
        )
    });
    if expected != rendered {
        let first_difference = expected
            .lines()
            .zip(rendered.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(line, (a, b))| format!("line {}:\n  expected: {a}\n  actual:   {b}", line + 1))
            .unwrap_or_else(|| "one is a prefix of the other".to_owned());
        panic!(
            "snapshot {} differs (UPDATE_SNAPSHOTS=1 rewrites it); first difference at {first_difference}",
            path.display()
        );
    }
}
