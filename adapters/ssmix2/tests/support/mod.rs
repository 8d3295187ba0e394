//! Helpers for the adapter tests: a fresh SQLite store, the code tables, a pull, and files of
//! patient 1234567 written into (and renamed within) a storage tree.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use tsunagi_adapter::{AdapterContext, NoProgress, PullAdapter, PullReport};
use tsunagi_adapter_ssmix2::{Ssmix2Adapter, Ssmix2Config};
use tsunagi_core::{FacilityId, clock::FixedClock};
use tsunagi_hl7v2::charset::Iso2022JpEncoder;
use tsunagi_mapping::CodeTables;
use tsunagi_store::Store;
use tsunagi_store_sqlite::SqliteStore;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tables() -> Arc<CodeTables> {
    let mut tables = CodeTables::default();
    let units = std::fs::read_to_string(workspace().join("mappings/common/units.csv")).unwrap();
    tables.add_units("units.csv", &units).unwrap();
    Arc::new(tables)
}

pub async fn store(dir: &Path) -> Arc<SqliteStore> {
    let url = format!("sqlite://{}", dir.join("tsunagi.db").display());
    Arc::new(
        SqliteStore::open(&url, Arc::new(FixedClock(1_700_000_000_000_000)))
            .await
            .unwrap(),
    )
}

pub async fn pull(store: Arc<SqliteStore>, facility: &str, roots: Vec<PathBuf>) -> PullReport {
    let adapter = Ssmix2Adapter::new(Ssmix2Config {
        facility: FacilityId::parse(facility).unwrap(),
        name: None,
        roots,
        tables: tables(),
        batch_resources: 7,
        workers: 2,
        full: false,
    });
    let store: Arc<dyn Store> = store;
    let context = AdapterContext {
        store,
        clock: Arc::new(FixedClock(1_700_000_000_000_000)),
        progress: Arc::new(NoProgress),
    };
    adapter.pull(&context).await.unwrap()
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The patient whose files [`write`] lays out.
pub const PATIENT: &str = "1234567";

/// Writes one SS-MIX2 file of [`PATIENT`] (ISO-2022-JP, CR-terminated segments) under `root`,
/// in the folders its name says.
pub fn write(root: &Path, name: &str, segments: &[String]) -> PathBuf {
    let fields: Vec<&str> = name.split('_').collect();
    let folder = root
        .join("123")
        .join("456")
        .join(PATIENT)
        .join(fields[1])
        .join(fields[2]);
    std::fs::create_dir_all(&folder).unwrap();
    let bytes = Iso2022JpEncoder::default()
        .encode(&(segments.join("\r") + "\r"))
        .unwrap();
    let path = folder.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Changes a file's condition flag (its name's last character), as an EHR does.
pub fn rename(path: &Path, flag: char) -> PathBuf {
    let name = path.file_name().unwrap().to_str().unwrap();
    let target = path.with_file_name(format!("{}{flag}", &name[..name.len() - 1]));
    std::fs::rename(path, &target).unwrap();
    target
}
