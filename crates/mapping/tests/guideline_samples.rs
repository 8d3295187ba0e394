//! The SS-MIX2 guideline's sample storage, mapped file by file and compared with snapshots.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;

use support::{check_snapshot, files, map_bytes, tables, workspace};

const FACILITY: &str = "9999999999";

fn sample_files() -> Vec<std::path::PathBuf> {
    files(&workspace().join("../shared/testdata/ssmix2-guideline-samples/sampleData/999"))
}

#[test]
fn every_valid_sample_maps_as_snapshotted() {
    let tables = tables(FACILITY);
    let files = sample_files();
    assert_eq!(files.len(), 19);
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let actual = map_bytes(FACILITY, name, &bytes, &tables);
        let snapshot = workspace()
            .join("tests/fixtures/guideline")
            .join(format!("{name}.json"));
        check_snapshot(Path::new(&snapshot), &actual);
    }
}
