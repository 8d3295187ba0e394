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
use tsunagi_adapter_ssmix2::{Ssmix2Adapter, Ssmix2Config};
use tsunagi_core::{FacilityId, clock::FixedClock};
use tsunagi_fhir::systems::canonical;
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
/// and pulled into a fresh store there; no file may be rejected.
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

/// The StructureDefinitions of the JP Core 1.1.1 package, by canonical URL.
pub fn jp_core_profiles() -> HashMap<String, Value> {
    let file = std::fs::File::open(shared().join("reference/jp-core.r4-1.1.1-snap.tgz"))
        .expect("../shared/reference/jp-core.r4-1.1.1-snap.tgz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut profiles = HashMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if !path.starts_with("package/StructureDefinition-") {
            continue;
        }
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        let definition: Value = serde_json::from_str(&text).unwrap();
        if let Some(url) = definition["url"].as_str() {
            profiles.insert(url.to_owned(), definition);
        }
    }
    profiles
}

/// The nodes at a dot path below `node` (arrays flattened; `x[x]` matches `xType` keys).
fn nodes_at<'v>(node: &'v Value, path: &[&str]) -> Vec<&'v Value> {
    let Some((head, rest)) = path.split_first() else {
        return vec![node];
    };
    let mut out = Vec::new();
    let children: Vec<&Value> = match node {
        Value::Object(map) => {
            if let Some(prefix) = head.strip_suffix("[x]") {
                map.iter()
                    .filter(|(key, _)| {
                        key.len() > prefix.len()
                            && key.starts_with(prefix)
                            && key.as_bytes()[prefix.len()].is_ascii_uppercase()
                    })
                    .map(|(_, value)| value)
                    .collect()
            } else {
                map.get(*head).into_iter().collect()
            }
        }
        _ => Vec::new(),
    };
    for child in children {
        match child {
            Value::Array(items) => {
                for item in items {
                    out.extend(nodes_at(item, rest));
                }
            }
            other => out.extend(nodes_at(other, rest)),
        }
    }
    out
}

fn count_children(parent: &Value, name: &str) -> usize {
    let Value::Object(map) = parent else { return 0 };
    let matched: Vec<&Value> = if let Some(prefix) = name.strip_suffix("[x]") {
        map.iter()
            .filter(|(key, _)| {
                key.len() > prefix.len()
                    && key.starts_with(prefix)
                    && key.as_bytes()[prefix.len()].is_ascii_uppercase()
            })
            .map(|(_, value)| value)
            .collect()
    } else {
        map.get(name).into_iter().collect()
    };
    matched
        .iter()
        .map(|value| {
            if let Value::Array(items) = value {
                items.len()
            } else {
                1
            }
        })
        .sum()
}

fn same_system(a: &str, b: &str) -> bool {
    canonical(a) == canonical(b)
}

fn contains_pattern(value: &Value, pattern: &Value) -> bool {
    match (value, pattern) {
        (Value::Object(map), Value::Object(pattern_map)) => pattern_map.iter().all(|(key, expected)| {
            map.get(key).is_some_and(|actual| {
                if key == "system" {
                    matches!((actual, expected), (Value::String(a), Value::String(b)) if same_system(a, b))
                } else {
                    contains_pattern(actual, expected)
                }
            })
        }),
        (Value::Array(items), Value::Array(patterns)) => patterns.iter().all(|p| items.iter().any(|item| contains_pattern(item, p))),
        (actual, expected) => actual == expected,
    }
}

/// Checks a resource against a StructureDefinition snapshot: minimum and maximum cardinality of
/// every element whose parent is present, required slices discriminated by a fixed system
/// (OID and URL forms are equivalent, as JP Core 1.2 says), and pattern slices.
pub fn check_against_profile(resource: &Value, definition: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let elements = definition["snapshot"]["element"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let fixed_system = |slice_id: &str| -> Option<String> {
        elements
            .iter()
            .find(|element| element["id"].as_str() == Some(&format!("{slice_id}.system")))
            .and_then(|element| element["fixedUri"].as_str().map(str::to_owned))
    };
    for element in &elements {
        let id = element["id"].as_str().unwrap_or_default();
        let path = element["path"].as_str().unwrap_or_default();
        let min = element["min"].as_u64().unwrap_or(0) as usize;
        let max = element["max"].as_str().unwrap_or("*");
        let segments: Vec<&str> = path.split('.').collect();
        if segments.len() < 2 {
            continue;
        }
        // Extensions are open slices; their content is checked by their own definitions.
        if segments
            .iter()
            .any(|segment| *segment == "extension" || *segment == "modifierExtension")
        {
            continue;
        }
        let in_slice = id.contains(':');
        let (parent_path, name) = (
            &segments[1..segments.len() - 1],
            segments[segments.len() - 1],
        );
        if in_slice {
            // Only the slice entries themselves (`X.identifier:rpNumber`) are checked, by their
            // discriminator.
            let Some((_, slice)) = id.rsplit_once(':') else {
                continue;
            };
            if slice.contains('.') || min == 0 {
                continue;
            }
            for parent in nodes_at(resource, parent_path) {
                let items: Vec<&Value> = match parent.get(name.trim_end_matches("[x]")) {
                    Some(Value::Array(items)) => items.iter().collect(),
                    Some(other) => vec![other],
                    None => Vec::new(),
                };
                let matching = if let Some(system) = fixed_system(id) {
                    items
                        .iter()
                        .filter(|item| {
                            item["system"]
                                .as_str()
                                .is_some_and(|s| same_system(s, &system))
                        })
                        .count()
                } else if let Some(pattern) = element.as_object().and_then(|map| {
                    map.iter()
                        .find(|(key, _)| key.starts_with("pattern"))
                        .map(|(_, value)| value)
                }) {
                    items
                        .iter()
                        .filter(|item| contains_pattern(item, pattern))
                        .count()
                } else {
                    // Type slices (medication[x]:medicationCodeableConcept).
                    let wanted = slice;
                    usize::from(parent.get(wanted).is_some())
                };
                if matching < min {
                    problems.push(format!("{id}: required slice missing ({matching} < {min})"));
                }
            }
            continue;
        }
        for parent in nodes_at(resource, parent_path) {
            let count = count_children(parent, name);
            if count < min {
                problems.push(format!("{path}: min {min}, found {count}"));
            }
            if max != "*"
                && let Ok(max) = max.parse::<usize>()
                && count > max
            {
                problems.push(format!("{path}: max {max}, found {count}"));
            }
        }
    }
    problems
}
