//! Helpers for the adapter tests: a fresh SQLite store, the code tables, a pull.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use tsunagi_adapter::{AdapterContext, NoProgress, PullAdapter, PullReport};
use tsunagi_adapter_ssmix2::{Ssmix2Adapter, Ssmix2Config};
use tsunagi_core::{FacilityId, clock::FixedClock};
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
