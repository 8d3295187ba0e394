//! One Encounter per visit, on a real storage tree and a real SQLite store: a stay's planned
//! admission, admission, transfer, leave and return, and discharge records — each a record of
//! its own in its own folder — make one Encounter (facility + patient + visit number); deleting
//! the discharge record takes back only the discharge; a cancel written as the admission
//! record's new version undoes the admission; and reading the final storage in one go gives
//! the same Encounter as reading it event by event.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;

use serde_json::Value;
use support::{PATIENT, pull, rename, store, write};
use tsunagi_core::ids::logical_id;
use tsunagi_store::{Access, Store};

const FACILITY: &str = "0610100010";

/// One ADT message: MSH-9, control id, EVN-6, PV1 fields 3/6/19/44/45, PV2-8/9.
struct Event<'a> {
    kind: &'a str,
    control: &'a str,
    occurred: &'a str,
    ward: &'a str,
    prior: &'a str,
    visit: &'a str,
    admit: &'a str,
    discharge: &'a str,
    pv2: Option<(usize, &'a str)>,
}

fn message(event: &Event<'_>) -> Vec<String> {
    let mut segments = vec![
        format!(
            "MSH|^~\\&|EHR|{FACILITY}|GW|TSUNAGI|{}||{}|{}|P|2.5||||||~ISO IR87||ISO 2022-1994",
            event.occurred, event.kind, event.control
        ),
        format!("EVN||{}||||{}", event.occurred, event.occurred),
        "PID|0001||1234567||日野^入江^^^^^L^I~ヒノ^イリエ^^^^^L^P||19600101|F".to_owned(),
    ];
    let mut pv1 = vec![String::new(); 46];
    pv1[0] = "PV1".into();
    pv1[1] = "0001".into();
    pv1[2] = "I".into();
    pv1[3] = event.ward.into();
    pv1[6] = event.prior.into();
    pv1[7] = "D0001^医師^一郎^^^^^^^L^^^^^I".into();
    pv1[10] = "01".into();
    pv1[19] = event.visit.into();
    pv1[44] = event.admit.into();
    pv1[45] = event.discharge.into();
    segments.push(pv1.join("|").trim_end_matches('|').to_owned());
    if let Some((field, value)) = event.pv2 {
        let mut pv2 = vec![String::new(); field + 1];
        pv2[0] = "PV2".into();
        pv2[field] = value.into();
        segments.push(pv2.join("|"));
    }
    segments
}

fn event<'a>(kind: &'a str, control: &'a str, occurred: &'a str) -> Event<'a> {
    Event {
        kind,
        control,
        occurred,
        ward: "31^301^1^^^N",
        prior: "",
        visit: "V1",
        admit: "202404100930",
        discharge: "",
        pv2: None,
    }
}

async fn encounters(store: &dyn Store) -> Vec<Value> {
    let mut found = Vec::new();
    store
        .for_each_current(&mut |resource| {
            if resource.resource_type == "Encounter" {
                found.push(serde_json::from_slice(resource.content.as_ref().unwrap()).unwrap());
            }
            Ok(())
        })
        .await
        .unwrap();
    found
}

fn stay_id(visit: &str) -> String {
    logical_id(&[FACILITY, PATIENT, "visit", visit])
}

/// The statuses of `location`, as `display:status`.
fn places(encounter: &Value) -> Vec<String> {
    encounter["location"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|entry| {
                    format!(
                        "{}:{}",
                        entry["location"]["display"].as_str().unwrap(),
                        entry["status"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The stay's records, oldest first: (file name, message).
fn stay_records() -> Vec<(String, Vec<String>)> {
    let planned = Event {
        pv2: Some((8, "202404100930")),
        admit: "",
        ..event("ADT^A14^ADT_A05", "S1", "202404070900")
    };
    let admitted = event("ADT^A01^ADT_A01", "S2", "202404100930");
    let transferred = Event {
        ward: "41^410^2^^^N",
        prior: "31^301^1^^^N",
        ..event("ADT^A02^ADT_A02", "S3", "202404121000")
    };
    let leave = Event {
        ward: "41^410^2^^^N",
        ..event("ADT^A21^ADT_A21", "S4", "202404131000")
    };
    let back = Event {
        ward: "41^410^2^^^N",
        ..event("ADT^A22^ADT_A22", "S5", "202404141000")
    };
    let discharged = Event {
        ward: "41^410^2^^^N",
        discharge: "202404201100",
        ..event("ADT^A03^ADT_A03", "S6", "202404201100")
    };
    vec![
        (
            "1234567_20240410_ADT-21_999999999999999_20240407090000000_01_1".into(),
            message(&planned),
        ),
        (
            "1234567_20240410_ADT-22_999999999999999_20240410093000000_01_1".into(),
            message(&admitted),
        ),
        (
            "1234567_20240412_ADT-42_999999999999999_20240412100000000_01_1".into(),
            message(&transferred),
        ),
        (
            "1234567_20240413_ADT-31_999999999999999_20240413100000000_01_1".into(),
            message(&leave),
        ),
        (
            "1234567_20240414_ADT-32_999999999999999_20240414100000000_01_1".into(),
            message(&back),
        ),
        (
            "1234567_20240420_ADT-52_999999999999999_20240420110000000_01_1".into(),
            message(&discharged),
        ),
    ]
}

fn patient_record(root: &Path) {
    write(
        root,
        "1234567_-_ADT-00_999999999999999_20240401101010123_-_1",
        &[
            format!(
                "MSH|^~\\&|EHR|{FACILITY}|GW|TSUNAGI|20240401101010||ADT^A08^ADT_A01|P0|P|2.5||||||~ISO IR87||ISO 2022-1994"
            ),
            "PID|0001||1234567||日野^入江^^^^^L^I~ヒノ^イリエ^^^^^L^P||19600101|F".to_owned(),
        ],
    );
}

#[tokio::test]
async fn a_stay_is_one_encounter_from_plan_to_discharge() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let store = store(dir.path()).await;
    patient_record(&root);
    // Event by event, one pull each: (status after it, locations after it).
    let expected: [(&str, &[&str]); 6] = [
        ("planned", &["31-301-1:planned"]),
        ("in-progress", &["31-301-1:active"]),
        ("in-progress", &["31-301-1:completed", "41-410-2:active"]),
        ("onleave", &["31-301-1:completed", "41-410-2:active"]),
        ("in-progress", &["31-301-1:completed", "41-410-2:active"]),
        ("finished", &["31-301-1:completed", "41-410-2:completed"]),
    ];
    let mut paths = Vec::new();
    for ((name, segments), (status, locations)) in stay_records().iter().zip(expected) {
        paths.push(write(&root, name, segments));
        let report = pull(store.clone(), FACILITY, vec![root.clone()]).await;
        assert!(report.rejected.is_empty(), "{:#?}", report.rejected);
        let all = encounters(store.as_ref()).await;
        assert_eq!(
            all.len(),
            1,
            "one Encounter for the stay after {name}: {all:#?}"
        );
        let encounter = &all[0];
        assert_eq!(encounter["id"], stay_id("V1").as_str());
        assert_eq!(encounter["status"], status, "after {name}");
        assert_eq!(places(encounter), locations, "after {name}");
        assert_eq!(encounter["identifier"][0]["value"], "V1");
        assert_eq!(
            encounter["identifier"][0]["system"],
            format!("http://tsunagi.example.jp/fhir/CodeSystem/{FACILITY}/visit-number").as_str()
        );
    }
    let finished = &encounters(store.as_ref()).await[0];
    assert_eq!(finished["period"]["start"], "2024-04-10T09:30:00+09:00");
    assert_eq!(finished["period"]["end"], "2024-04-20T11:00:00+09:00");
    assert_eq!(finished["class"]["code"], "IMP");
    let history: Vec<&str> = finished["statusHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        ["planned", "in-progress", "onleave", "in-progress"]
    );
    // Each event made a new version of the one Encounter; the history keeps them.
    let versions = store
        .history(&Access::Unrestricted, "Encounter", &stay_id("V1"))
        .await
        .unwrap();
    assert_eq!(versions.len(), 6);

    // The discharge record is deleted (flag 0): only the discharge is taken back.
    rename(&paths[5], '0');
    write(
        &root,
        "1234567_20240420_ADT-52_999999999999999_20240421090000000_01_0",
        &stay_records()[5].1,
    );
    let report = pull(store.clone(), FACILITY, vec![root.clone()]).await;
    assert_eq!(report.records_deleted, 1);
    let reopened = &encounters(store.as_ref()).await[0];
    assert_eq!(reopened["status"], "in-progress");
    assert!(reopened["period"].get("end").is_none(), "{reopened}");
    assert_eq!(reopened["period"]["start"], "2024-04-10T09:30:00+09:00");
    assert_eq!(places(reopened), ["31-301-1:completed", "41-410-2:active"]);

    // The final storage read in one go into a fresh store gives the same Encounter.
    let fresh_dir = dir.path().join("fresh");
    std::fs::create_dir_all(&fresh_dir).unwrap();
    let fresh = support::store(&fresh_dir).await;
    pull(fresh.clone(), FACILITY, vec![root.clone()]).await;
    let mut at_once = encounters(fresh.as_ref()).await;
    assert_eq!(at_once.len(), 1);
    let mut incremental = reopened.clone();
    for encounter in [&mut at_once[0], &mut incremental] {
        encounter["meta"]
            .as_object_mut()
            .unwrap()
            .remove("versionId");
        encounter["meta"]
            .as_object_mut()
            .unwrap()
            .remove("lastUpdated");
    }
    assert_eq!(at_once[0], incremental);
}

#[tokio::test]
async fn a_cancelled_admission_undoes_the_admission_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let store = store(dir.path()).await;
    patient_record(&root);
    let records = stay_records();
    write(&root, &records[0].0, &records[0].1);
    let admission = write(&root, &records[1].0, &records[1].1);
    pull(store.clone(), FACILITY, vec![root.clone()]).await;
    assert_eq!(encounters(store.as_ref()).await[0]["status"], "in-progress");
    // The EHR cancels the admission: A11 as the ADT-22 record's new version.
    rename(&admission, '2');
    write(
        &root,
        "1234567_20240410_ADT-22_999999999999999_20240410120000000_01_1",
        &message(&event("ADT^A11^ADT_A09", "S7", "202404101200")),
    );
    pull(store.clone(), FACILITY, vec![root.clone()]).await;
    let all = encounters(store.as_ref()).await;
    assert_eq!(all.len(), 1);
    // Back to what the plan alone says.
    assert_eq!(all[0]["status"], "planned");
    assert_eq!(places(&all[0]), ["31-301-1:planned"]);

    // A visit whose only event is cancelled is a cancelled Encounter.
    let other = Event {
        visit: "V2",
        ..event("ADT^A01^ADT_A01", "S8", "202405010900")
    };
    let other_path = write(
        &root,
        "1234567_20240501_ADT-22_999999999999999_20240501090000000_01_1",
        &message(&other),
    );
    pull(store.clone(), FACILITY, vec![root.clone()]).await;
    rename(&other_path, '2');
    let cancel = Event {
        visit: "V2",
        ..event("ADT^A11^ADT_A09", "S9", "202405011000")
    };
    write(
        &root,
        "1234567_20240501_ADT-22_999999999999999_20240501100000000_01_1",
        &message(&cancel),
    );
    pull(store.clone(), FACILITY, vec![root.clone()]).await;
    let v2 = store
        .read(&Access::Unrestricted, "Encounter", &stay_id("V2"))
        .await
        .unwrap()
        .unwrap()
        .to_json()
        .unwrap()
        .unwrap();
    assert_eq!(v2["status"], "cancelled");
}

#[tokio::test]
async fn a_version_that_moves_its_visit_number_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let store = store(dir.path()).await;
    patient_record(&root);
    // Two versions of one admission record, read in one pull: the older names visit V1, the
    // newer (the correction) V2.
    let older = write(
        &root,
        "1234567_20240410_ADT-22_999999999999999_20240410093000000_01_1",
        &message(&event("ADT^A01^ADT_A01", "M1", "202404100930")),
    );
    rename(&older, '2');
    write(
        &root,
        "1234567_20240410_ADT-22_999999999999999_20240410100000000_01_1",
        &message(&Event {
            visit: "V2",
            ..event("ADT^A01^ADT_A01", "M2", "202404101000")
        }),
    );
    let report = pull(store.clone(), FACILITY, vec![root.clone()]).await;
    assert!(report.rejected.is_empty(), "{:#?}", report.rejected);
    let all = encounters(store.as_ref()).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["id"], stay_id("V2").as_str());
    // No part of V1 is left to come back: a later event of V1 folds from itself alone.
    let parts = store
        .checkpoints(&format!(
            "{}Encounter/{}",
            tsunagi_store::contributions::PART_SCOPE,
            stay_id("V1")
        ))
        .await
        .unwrap();
    assert!(parts.iter().all(|(_, value)| value.is_empty()), "{parts:?}");
}

#[tokio::test]
async fn a_storage_pulled_under_the_old_mapping_is_read_again_once() {
    use tsunagi_store::{Batch, Operation, ResourceWrite};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let store = store(dir.path()).await;
    patient_record(&root);
    let records = stay_records();
    write(&root, &records[1].0, &records[1].1);
    pull(store.clone(), FACILITY, vec![root.clone()]).await;
    // As the previous build left it: an Encounter per record under the admission record's
    // source key, and no mapping generation recorded.
    let source_key = format!("ssmix2:{FACILITY}:{PATIENT}:20240410:ADT-22:999999999999999");
    let old_id = "0610100010.1234567.20240410.ADT-22.999999999999999";
    let old = serde_json::json!({"resourceType": "Encounter", "id": old_id, "status": "arrived",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": format!("Patient/{FACILITY}.{PATIENT}")}});
    store
        .apply(Batch {
            operations: vec![
                Operation::ReplaceSource {
                    source_key,
                    facility: FACILITY.to_owned(),
                    resources: vec![ResourceWrite::from_json("Encounter", old_id, &old).unwrap()],
                },
                Operation::PutCheckpoint {
                    scope: format!("ssmix2:{FACILITY}:mapping"),
                    key: "generation".to_owned(),
                    value: b"1".to_vec(),
                },
            ],
        })
        .await
        .unwrap();
    assert_eq!(encounters(store.as_ref()).await.len(), 2);
    // The next pull reads every file again, once: the per-record Encounter is gone.
    let again = pull(store.clone(), FACILITY, vec![root.clone()]).await;
    assert!(again.files_read >= 2, "{again:#?}");
    assert!(
        again
            .warning_kinds
            .iter()
            .any(|kind| kind.kind.starts_with("the mapping changed")),
        "{again:#?}"
    );
    let left = encounters(store.as_ref()).await;
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(left[0]["id"], stay_id("V1").as_str());
    let third = pull(store.clone(), FACILITY, vec![root.clone()]).await;
    assert_eq!(third.files_read, 0, "read again only once: {third:#?}");
}
