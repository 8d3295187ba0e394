//! One Encounter per visit over the whole synthetic region: every visit number the storage's
//! ADT records carry (PV1-19) is exactly one Encounter, identified by it; a finished stay has
//! its start and end; no Encounter is left `arrived`. The guideline samples, whose records
//! carry no visit number, keep one Encounter per record.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use tsunagi_e2e::{all_resources, ingested_region, pull, shared};
use tsunagi_hl7v2::{Message, charset};

/// (facility, patient folder, visit number) of every ADT encounter record in the region.
fn visits_in_storage(region: &std::path::Path) -> BTreeSet<(String, String, String)> {
    let mut visits = BTreeSet::new();
    let mut stack = vec![region.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let fields: Vec<&str> = name.split('_').collect();
            let encounter_event = matches!(
                fields.get(2).copied(),
                Some(
                    "ADT-12"
                        | "ADT-21"
                        | "ADT-22"
                        | "ADT-31"
                        | "ADT-32"
                        | "ADT-41"
                        | "ADT-42"
                        | "ADT-51"
                        | "ADT-52"
                )
            );
            if !encounter_event || !name.ends_with("_1") {
                continue;
            }
            let facility = path
                .strip_prefix(region)
                .unwrap()
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_str()
                .unwrap()
                .to_owned();
            let bytes = std::fs::read(&path).unwrap();
            let (text, _) = charset::decode(&bytes).unwrap();
            let message = Message::parse(&text).unwrap();
            let visit = message
                .first("PV1")
                .map(|pv1| pv1.field(19).first().component(1).text().trim().to_owned())
                .unwrap_or_default();
            assert!(!visit.is_empty(), "{name} has no visit number");
            visits.insert((facility, fields[0].to_owned(), visit));
        }
    }
    visits
}

#[tokio::test]
async fn every_visit_is_one_encounter() {
    let dir = tempfile::tempdir().unwrap();
    let store = ingested_region(dir.path(), 45, 7).await;
    let expected = visits_in_storage(&dir.path().join("region"));
    assert!(
        expected.iter().any(|(_, _, visit)| visit.starts_with('I')),
        "the region has inpatient stays"
    );
    let resources = all_resources(store.as_ref()).await;
    let mut found: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for encounter in resources
        .iter()
        .filter(|r| r["resourceType"] == "Encounter")
    {
        let identifiers = encounter["identifier"].as_array().expect("a visit number");
        assert_eq!(identifiers.len(), 1, "{encounter}");
        let system = identifiers[0]["system"].as_str().unwrap();
        let facility = system
            .trim_start_matches("http://tsunagi.example.jp/fhir/CodeSystem/")
            .trim_end_matches("/visit-number")
            .to_owned();
        assert!(system.ends_with("/visit-number"), "{system}");
        let subject = encounter["subject"]["reference"].as_str().unwrap();
        let patient = subject
            .trim_start_matches("Patient/")
            .trim_start_matches(&format!("{facility}."))
            .to_owned();
        let visit = identifiers[0]["value"].as_str().unwrap().to_owned();
        *found.entry((facility, patient, visit)).or_default() += 1;
        let status = encounter["status"].as_str().unwrap();
        assert_ne!(status, "arrived", "{encounter}");
        if status == "finished" {
            assert!(encounter["period"]["start"].is_string(), "{encounter}");
        }
        if encounter["class"]["code"] == "IMP" && status == "finished" {
            assert!(encounter["period"]["end"].is_string(), "{encounter}");
        }
        if encounter["class"]["code"] == "AMB" {
            assert_eq!(status, "finished", "an outpatient visit that took place");
        }
    }
    assert!(
        found.values().all(|count| *count == 1),
        "{:?}",
        found
            .iter()
            .filter(|(_, count)| **count > 1)
            .collect::<Vec<_>>()
    );
    let found: BTreeSet<_> = found.into_keys().collect();
    assert_eq!(found, expected);
    // Some stay went the whole way: admitted, then discharged.
    assert!(resources.iter().any(|r| r["resourceType"] == "Encounter"
        && r["class"]["code"] == "IMP"
        && r["status"] == "finished"
        && r["statusHistory"].is_array()));

    // The guideline sample's admission and discharge carry no visit number: one each.
    let report = pull(
        store.clone(),
        "9999999999",
        vec![shared().join("testdata/ssmix2-guideline-samples/sampleData")],
    )
    .await;
    assert!(report.files_read > 0, "{report:#?}");
    let sample: Vec<_> = all_resources(store.as_ref())
        .await
        .into_iter()
        .filter(|r| {
            r["resourceType"] == "Encounter"
                && r["subject"]["reference"]
                    .as_str()
                    .unwrap()
                    .starts_with("Patient/9999999999.")
        })
        .collect();
    assert_eq!(sample.len(), 3, "{sample:#?}");
    assert!(sample.iter().all(|r| r.get("identifier").is_none()));
}
