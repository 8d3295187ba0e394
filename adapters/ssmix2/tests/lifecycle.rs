//! The condition-flag lifecycle on a real storage tree and a real SQLite store:
//! an update is a new version of the same logical resource, a delete removes it from current
//! data and keeps history, PPR-01 replaces the whole problem list, a re-run reads only new or
//! renamed files, and ingesting the final storage in one go gives the same current data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{collections::BTreeMap, path::Path};

use support::{pull, rename, store, write};
use tsunagi_store::Store;

const FACILITY: &str = "0610100010";

fn msh(kind: &str, control: &str) -> String {
    format!(
        "MSH|^~\\&|EHR|{FACILITY}|GW|TSUNAGI|20240401101010.1234||{kind}|{control}|P|2.5||||||~ISO IR87||ISO 2022-1994"
    )
}

fn pid() -> String {
    "PID|0001||1234567||日野^入江^^^^^L^I~ヒノ^イリエ^^^^^L^P||19600101|F".to_owned()
}

fn prescription(control: &str, doses: &[&str]) -> Vec<String> {
    let mut segments = vec![
        msh("RDE^O11^RDE_O11", control),
        pid(),
        "PV1|0001|O|01^^^^^C".to_owned(),
    ];
    for dose in doses {
        segments.push("ORC|NW|000000000000101||1|||||20240401100000|||D1^医師^一郎".to_owned());
        segments.push(format!(
            "RXE||108665201^ダーゼン錠（５ｍｇ）^HOT9|{dose}||TAB^錠^MR9P|||||9|TAB^錠^MR9P"
        ));
        segments.push(
            "TQ1|1||1013044400000000&内服・経口・１日３回朝昼夕食後&JAMISDP01|||3^d|2024040100"
                .to_owned(),
        );
        segments.push("RXR|PO^口^HL70162".to_owned());
    }
    segments
}

fn problems(control: &str, entries: &[(&str, &str)]) -> Vec<String> {
    let mut segments = vec![msh("PPR^ZD1^PPR_ZD1", control), pid()];
    for (instance, code) in entries {
        segments.push(format!(
            "PRB|AD|20240401|{code}^病名^MDCDX2|{instance}|||20240101||||||||||20240101"
        ));
    }
    segments
}

fn lab(control: &str) -> Vec<String> {
    vec![
        msh("OUL^R22^OUL_R22", control),
        pid(),
        "SPM|1|S1||023^血清^JC10|||||||||||||202404011000".to_owned(),
        "OBR|1|000000000000201|S1|E001^生化学^99O03|||202404011000".to_owned(),
        "ORC|SC|000000000000201|S1||CM".to_owned(),
        "OBX|1|NM|3A010000002327101^総蛋白^JC10||7.2|g/dL^g/dL^99XYZ|6.6-8.1||||F".to_owned(),
        "OBX|2|ST|5C070000002306001^ＣＲＰ^JC10||< 0.05|mg/dL^mg/dL^99XYZ|0.00-0.14||||F"
            .to_owned(),
    ]
}

async fn current(store: &dyn Store) -> BTreeMap<String, serde_json::Value> {
    let mut map = BTreeMap::new();
    store
        .for_each_current(&mut |resource| {
            let key = format!("{}/{}", resource.resource_type, resource.id);
            map.insert(
                key,
                serde_json::from_slice(resource.content.as_ref().unwrap()).unwrap(),
            );
            Ok(())
        })
        .await
        .unwrap();
    map
}

#[tokio::test]
async fn updates_deletes_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let db = dir.path().join("one");
    std::fs::create_dir_all(&db).unwrap();
    let store = store(&db).await;

    // Run 1: a prescription with two drugs, a problem list with two problems, a lab result.
    let patient = [msh("ADT^A08^ADT_A01", "C0"), pid()];
    write(
        &root,
        "1234567_-_ADT-00_999999999999999_20240401101010123_-_1",
        &patient,
    );
    let rx1 = write(
        &root,
        "1234567_20240401_OMP-01_000000000000101_20240401101010123_01_1",
        &prescription("C1", &["1", "2"]),
    );
    let ppr1 = write(
        &root,
        "1234567_-_PPR-01_999999999999999_20240401101010123_01_1",
        &problems("C2", &[("P1", "20054174"), ("P2", "20061241")]),
    );
    let lab1 = write(
        &root,
        "1234567_20240401_OML-11_000000000000201_20240401111010123_01_1",
        &lab("C3"),
    );
    let first = pull(store.clone(), FACILITY, vec![root.clone()]).await;
    assert!(first.rejected.is_empty(), "{:#?}", first.rejected);
    assert_eq!(first.files_read, 4);
    let counts = store.count_current().await.unwrap();
    assert_eq!(counts["MedicationRequest"], 2);
    assert_eq!(counts["Condition"], 2);
    assert_eq!(counts["Observation"], 2);

    // Run 2: the prescription is corrected (one drug left, new dose) and the problem list
    // replaced (P2 dropped). The EHR renames the old files _1 → _2 and writes new _1 files.
    rename(&rx1, '2');
    write(
        &root,
        "1234567_20240401_OMP-01_000000000000101_20240402090000000_01_1",
        &prescription("C4", &["3"]),
    );
    rename(&ppr1, '2');
    write(
        &root,
        "1234567_-_PPR-01_999999999999999_20240402090000000_01_1",
        &problems("C5", &[("P1", "20054174")]),
    );
    let second = pull(store.clone(), FACILITY, vec![root.clone()]).await;
    assert_eq!(
        second.files_read, 2,
        "only the two new files are read, renames are not: {second:#?}"
    );
    assert_eq!(second.updated.get("MedicationRequest"), Some(&1));
    assert_eq!(second.deleted.get("MedicationRequest"), Some(&1));
    assert_eq!(second.deleted.get("Condition"), Some(&1));
    let counts = store.count_current().await.unwrap();
    assert_eq!(counts["MedicationRequest"], 1);
    assert_eq!(counts["Condition"], 1);
    let requests = store
        .find_by_reference("MedicationRequest", "patient", "Patient/0610100010.1234567")
        .await
        .unwrap();
    assert_eq!(requests.len(), 1);
    let history = store
        .history(
            &tsunagi_store::Access::Unrestricted,
            "MedicationRequest",
            &requests[0],
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
    let new: serde_json::Value =
        serde_json::from_slice(history[0].content.as_ref().unwrap()).unwrap();
    let old: serde_json::Value =
        serde_json::from_slice(history[1].content.as_ref().unwrap()).unwrap();
    assert_eq!(
        new["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"],
        3
    );
    assert_eq!(
        old["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"],
        1
    );

    // Run 3: the lab order is deleted: the result file is renamed _0 and a deletion message written.
    rename(&lab1, '0');
    write(
        &root,
        "1234567_20240401_OML-11_000000000000201_20240403090000000_01_0",
        &lab("C6"),
    );
    let third = pull(store.clone(), FACILITY, vec![root.clone()]).await;
    assert_eq!(third.records_deleted, 1);
    assert_eq!(third.deleted.get("Observation"), Some(&2));
    assert_eq!(third.deleted.get("DiagnosticReport"), Some(&1));
    let counts = store.count_current().await.unwrap();
    assert!(!counts.contains_key("Observation"), "{counts:?}");
    let deleted = store
        .find_by_token("Observation", "code", None, "3A010000002327101")
        .await
        .unwrap();
    assert!(deleted.is_empty());

    // Run 4: nothing changed.
    let fourth = pull(store.clone(), FACILITY, vec![root.clone()]).await;
    assert_eq!(fourth.files_read, 0);
    assert_eq!(fourth.resources_written(), 0);
    assert_eq!(fourth.files_skipped_unchanged, fourth.files_seen);

    // The final storage ingested in one go gives the same current data.
    let other_db = dir.path().join("two");
    std::fs::create_dir_all(&other_db).unwrap();
    let fresh = store_in(&other_db).await;
    pull(fresh.clone(), FACILITY, vec![root.clone()]).await;
    assert_eq!(current(store.as_ref()).await, current(fresh.as_ref()).await);
    // And the full history of the corrected prescription is there too.
    assert_eq!(
        fresh
            .history(
                &tsunagi_store::Access::Unrestricted,
                "MedicationRequest",
                &requests[0]
            )
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn store_in(dir: &Path) -> std::sync::Arc<tsunagi_store_sqlite::SqliteStore> {
    store(dir).await
}

#[tokio::test]
async fn a_broken_new_version_keeps_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let store = store(dir.path()).await;
    let rx = write(
        &root,
        "1234567_20240401_OMP-01_000000000000101_20240401101010123_01_1",
        &prescription("C1", &["1"]),
    );
    pull(store.clone(), FACILITY, vec![root.clone()]).await;
    // The EHR writes a new version that is not decodable.
    rename(&rx, '2');
    let broken = root.join("123/456/1234567/20240401/OMP-01/1234567_20240401_OMP-01_000000000000101_20240402101010123_01_1");
    std::fs::write(&broken, [0x1b, b'$', b'B', 0xff, 0xfe]).unwrap();
    let report = pull(store.clone(), FACILITY, vec![root.clone()]).await;
    assert_eq!(report.rejected.len(), 1, "{report:#?}");
    assert!(
        report.rejected[0].reason.contains("not decodable"),
        "{}",
        report.rejected[0].reason
    );
    assert_eq!(report.resources_written(), 0);
    assert_eq!(store.count_current().await.unwrap()["MedicationRequest"], 1);
}
