//! The official R4B examples of every resource type the pipeline produces
//! (`tests/fixtures/r4b-examples`), loaded through the store and served back over HTTP: the
//! same resource in JSON and in XML (only `meta.versionId`/`meta.lastUpdated`, which the store
//! owns, differ), findable by `_id`, and each type's list complete.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{collections::BTreeMap, io::Read};

use serde_json::Value;
use support::{get, link, write};
use tsunagi_server::Settings;
use tsunagi_store::{Batch, Operation, Store};

fn official_examples() -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/r4b-examples/examples.tgz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(path).unwrap(),
    ));
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut text = String::new();
        entry.unwrap().read_to_string(&mut text).unwrap();
        out.push(serde_json::from_str(&text).unwrap());
    }
    out
}

/// The resource without what the store owns.
fn without_store_meta(mut resource: Value) -> Value {
    if let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            resource.as_object_mut().unwrap().remove("meta");
        }
    }
    resource
}

#[tokio::test]
async fn official_examples_are_served_back_unchanged() {
    let (store, _dir) = support::fresh_store().await;
    let examples = official_examples();
    assert_eq!(examples.len(), 205);
    let operations = examples
        .iter()
        .map(|example| Operation::ReplaceSource {
            facility: support::FACILITY.into(),
            source_key: format!(
                "example:{}/{}",
                example["resourceType"].as_str().unwrap(),
                example["id"].as_str().unwrap()
            ),
            resources: vec![write(example.clone())],
        })
        .collect();
    store.apply(Batch { operations }).await.unwrap();
    let addr = support::serve(store.clone(), Settings::default()).await;

    let mut per_type: BTreeMap<String, usize> = BTreeMap::new();
    for example in &examples {
        let resource_type = example["resourceType"].as_str().unwrap();
        let id = example["id"].as_str().unwrap();
        *per_type.entry(resource_type.to_owned()).or_default() += 1;
        let json = get(addr, &format!("/fhir/{resource_type}/{id}")).await;
        assert_eq!(json.status, 200, "{resource_type}/{id}");
        let served = json.json();
        assert_eq!(served["meta"]["versionId"], "1", "{resource_type}/{id}");
        assert_eq!(
            without_store_meta(served.clone()),
            without_store_meta(example.clone()),
            "{resource_type}/{id}"
        );
        let xml = get(addr, &format!("/fhir/{resource_type}/{id}?_format=xml")).await;
        assert_eq!(xml.status, 200, "{resource_type}/{id} as XML");
        assert_eq!(
            tsunagi_fhir_xml::from_xml(&xml.body).unwrap(),
            served,
            "{resource_type}/{id} as XML"
        );
        let found = get(addr, &format!("/fhir/{resource_type}?_id={id}"))
            .await
            .json();
        assert_eq!(found["total"], 1, "{resource_type}?_id={id}");
    }
    // Every type's search lists all of its examples, across pages.
    for (resource_type, expected) in per_type {
        let mut page = get(addr, &format!("/fhir/{resource_type}?_count=7"))
            .await
            .json();
        assert_eq!(page["total"], expected, "{resource_type}");
        let mut seen = page["entry"].as_array().map_or(0, Vec::len);
        while let Some(next) = link(&page, "next") {
            let target = next.split_once(&addr.to_string()).unwrap().1.to_owned();
            page = get(addr, &target).await.json();
            seen += page["entry"].as_array().map_or(0, Vec::len);
        }
        assert_eq!(seen, expected, "{resource_type}");
    }
    // A few searches whose answers the examples fix (counted in the package with a script).
    let cases = [
        ("/fhir/Patient?family=Chalmers", 1),
        ("/fhir/Observation?code=http://loinc.org|29463-7", 1),
        ("/fhir/Patient?birthdate=1974-12-25", 2),
        ("/fhir/Observation?category=vital-signs", 16),
    ];
    for (target, expected) in cases {
        let bundle = get(addr, target).await.json();
        assert_eq!(bundle["total"], expected, "{target}");
    }
}
