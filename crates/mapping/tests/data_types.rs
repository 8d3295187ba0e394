//! One snapshot per data type and vendor: the deterministic synthetic region (all three
//! vendors' quirks) mapped file by file. Together with the guideline samples this covers every
//! mapped data type; `UPDATE_SNAPSHOTS=1` rewrites the snapshots after an intended change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{collections::BTreeMap, path::PathBuf};

use support::{check_snapshot, files, map_bytes, tables, workspace};
use tsunagi_mapping::DataType;

#[test]
fn every_data_type_of_every_vendor_maps_as_snapshotted() {
    let dir = tempfile::tempdir().unwrap();
    tsunagi_synth::generate_region(dir.path(), 40, 11).unwrap();
    let mut covered: BTreeMap<DataType, usize> = BTreeMap::new();
    for hospital in tsunagi_synth::HOSPITALS {
        let tables = tables(hospital.code);
        // The first current (`_1`) file of each data type.
        let mut chosen: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in files(&dir.path().join(hospital.code)) {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if !name.ends_with("_1") || path.extension().is_some() {
                continue;
            }
            let data_type = name.split('_').nth(2).unwrap().to_owned();
            chosen.entry(data_type).or_insert(path);
        }
        for (data_type, path) in chosen {
            let name = path.file_name().unwrap().to_str().unwrap();
            let actual = map_bytes(hospital.code, name, &std::fs::read(&path).unwrap(), &tables);
            assert!(actual.get("error").is_none(), "{name}: {actual}");
            let snapshot = workspace()
                .join("tests/fixtures/synthetic")
                .join(format!("{:?}", hospital.vendor))
                .join(format!("{data_type}.json"));
            check_snapshot(&snapshot, &actual);
            *covered
                .entry(DataType::parse(&data_type).unwrap())
                .or_default() += 1;
        }
    }
    for data_type in DataType::ALL {
        if data_type == DataType::Adt01 {
            continue;
        }
        assert!(
            covered.contains_key(&data_type),
            "no synthetic file of {data_type}: {covered:?}"
        );
    }
}
