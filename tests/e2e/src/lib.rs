//! Test support for whole-pipeline tests: ingesting storages into a real SQLite store, reading
//! the JP Core package from `../shared`, and checking resources against the profiles they claim.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde_json::Value;
use tsunagi_adapter::{AdapterContext, NoProgress, PullAdapter, PullReport};
use tsunagi_adapter_mml::{MmlAdapter, MmlConfig};
use tsunagi_adapter_ssmix2::{Ssmix2Adapter, Ssmix2Config};
use tsunagi_adapter_ssmix2_extended::{ExtendedAdapter, ExtendedConfig};
use tsunagi_core::{FacilityId, clock::FixedClock};
use tsunagi_mapping::CodeTables;
use tsunagi_store::Store;
use tsunagi_store_sqlite::SqliteStore;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `../shared` beside the checkout.
pub fn shared() -> PathBuf {
    workspace().join("../shared")
}

/// The code tables of a facility, from `mappings/`.
pub fn tables(facility: &str) -> Arc<CodeTables> {
    let root = workspace().join("mappings");
    let mut tables = CodeTables::default();
    tables
        .add_units(
            "units",
            &std::fs::read_to_string(root.join("common/units.csv")).unwrap(),
        )
        .unwrap();
    let dir = root.join("facilities").join(facility);
    if let Ok(text) = std::fs::read_to_string(dir.join("codes.csv")) {
        tables.add_codes("codes", &text).unwrap();
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("departments.csv")) {
        tables.add_departments("departments", &text).unwrap();
    }
    Arc::new(tables)
}

/// A fresh SQLite store in `dir` with a fixed clock.
pub async fn store(dir: &Path) -> Arc<SqliteStore> {
    let url = format!("sqlite://{}", dir.join("tsunagi.db").display());
    Arc::new(
        SqliteStore::open(&url, Arc::new(FixedClock(1_764_000_000_000_000)))
            .await
            .unwrap(),
    )
}

/// One SS-MIX2 pull.
pub async fn pull(store: Arc<SqliteStore>, facility: &str, roots: Vec<PathBuf>) -> PullReport {
    let adapter = Ssmix2Adapter::new(Ssmix2Config {
        facility: FacilityId::parse(facility).unwrap(),
        name: None,
        roots,
        tables: tables(facility),
        batch_resources: 500,
        workers: 2,
        full: false,
    });
    let store: Arc<dyn Store> = store;
    let context = AdapterContext {
        store,
        clock: Arc::new(FixedClock(1_764_000_000_000_000)),
        progress: Arc::new(NoProgress),
    };
    adapter.pull(&context).await.unwrap()
}

/// A synthetic region of `patients` people (three hospitals, three vendors) generated in `dir`
/// and pulled into a fresh store there — standardized storage, extended storage (documents,
/// imaging reports) and Homma's MML export; no file may be rejected.
pub async fn ingested_region(dir: &Path, patients: usize, seed: u64) -> Arc<SqliteStore> {
    let region = dir.join("region");
    tsunagi_synth::generate_region(&region, patients, seed).unwrap();
    let store = store(dir).await;
    for hospital in tsunagi_synth::HOSPITALS {
        let report = pull(
            store.clone(),
            hospital.code,
            vec![region.join(hospital.code)],
        )
        .await;
        assert!(report.rejected.is_empty(), "{:#?}", report.rejected);
    }
    let context = AdapterContext {
        store: store.clone(),
        clock: Arc::new(FixedClock(1_764_000_000_000_000)),
        progress: Arc::new(NoProgress),
    };
    let extended = tsunagi_synth::generate_extended(&region, patients, seed).unwrap();
    for facility in &extended.facilities {
        let adapter = ExtendedAdapter::new(ExtendedConfig {
            facility: FacilityId::parse(&facility.code).unwrap(),
            name: None,
            roots: vec![facility.root.clone()],
            batch_resources: 2000,
            batch_bytes: tsunagi_adapter_ssmix2_extended::DEFAULT_BATCH_BYTES,
            max_document_bytes: tsunagi_adapter_ssmix2_extended::DEFAULT_MAX_DOCUMENT_BYTES,
            full: false,
        });
        let report = adapter.pull(&context).await.unwrap();
        assert!(report.rejected.is_empty(), "{:#?}", report.rejected);
    }
    let mml = tsunagi_synth::generate_mml(&region, patients, seed).unwrap();
    let adapter = MmlAdapter::new(MmlConfig {
        facility: FacilityId::parse(&mml.code).unwrap(),
        name: None,
        roots: vec![mml.root.clone()],
        batch_resources: 2000,
        max_file_bytes: tsunagi_adapter_mml::DEFAULT_MAX_FILE_BYTES,
        full: false,
    });
    let report = adapter.pull(&context).await.unwrap();
    assert!(report.rejected.is_empty(), "{:#?}", report.rejected);
    store
}

/// Every current resource of the store, with meta filled in.
pub async fn all_resources(store: &dyn Store) -> Vec<Value> {
    let mut resources = Vec::new();
    store
        .for_each_current(&mut |resource| {
            resources.push(resource.to_json()?.unwrap());
            Ok(())
        })
        .await
        .unwrap();
    resources
}

/// Every JSON file of the JP Core 1.1.1 package, by its path in the archive.
pub fn jp_core_files() -> Vec<(String, Value)> {
    let file = std::fs::File::open(shared().join("reference/jp-core.r4-1.1.1-snap.tgz"))
        .expect("../shared/reference/jp-core.r4-1.1.1-snap.tgz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut files = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        if !path.ends_with(".json") || entry.read_to_string(&mut text).is_err() {
            continue;
        }
        if let Ok(value) = serde_json::from_str(&text) {
            files.push((path, value));
        }
    }
    files
}

/// The StructureDefinitions of the JP Core 1.1.1 package, by canonical URL.
pub fn jp_core_profiles() -> HashMap<String, Value> {
    jp_core_files()
        .into_iter()
        .filter(|(path, _)| path.starts_with("package/StructureDefinition-"))
        .filter_map(|(_, definition)| {
            let url = definition["url"].as_str()?.to_owned();
            Some((url, definition))
        })
        .collect()
}

/// Checks a resource against a StructureDefinition snapshot with the checker the server uses
/// (`tsunagi_fhir::validate`); one line per finding.
pub fn check_against_profile(resource: &Value, definition: &Value) -> Vec<String> {
    tsunagi_fhir::validate::Profile::from_structure_definition(definition)
        .expect("a StructureDefinition with a snapshot")
        .check(resource)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Every empty string, array or object in a resource, by path (FHIR forbids all three).
pub fn empty_values(value: &Value) -> Vec<String> {
    tsunagi_fhir::json::empty_values(value, value["resourceType"].as_str().unwrap_or("$"))
}
