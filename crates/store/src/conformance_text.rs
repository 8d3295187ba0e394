//! Full-text search (`_content`, `_text`) in the store conformance suite: Japanese terms of
//! every length inside a patient's record, trigram look-ups region-wide, AND and OR, LIKE's own
//! characters taken literally, and the index following revisions and deletions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::{Value, json};
use tsunagi_fhir::query::SearchQuery;

use crate::{Access, Batch, Operation, ResourceWrite, Store, StoreError};

const ALL: Access = Access::Unrestricted;

fn write(resource: Value) -> ResourceWrite {
    let resource_type = resource["resourceType"].as_str().unwrap().to_owned();
    let id = resource["id"].as_str().unwrap().to_owned();
    ResourceWrite::from_json(&resource_type, &id, &resource).unwrap()
}

fn note(id: &str, patient: &str, narrative: &str, description: &str) -> Value {
    json!({
        "resourceType": "DocumentReference", "id": id, "status": "current",
        "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{narrative}</p></div>")},
        "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "description": description,
        "content": [{"attachment": {"contentType": "text/plain", "url": format!("Binary/b{id}")}}]
    })
}

fn patient(id: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"text": "患者"}]})
}

async fn replace(store: &dyn Store, source_key: &str, resources: Vec<Value>) {
    store
        .apply(Batch {
            operations: vec![Operation::ReplaceSource {
                source_key: source_key.to_owned(),
                facility: crate::conformance::FACILITY.to_owned(),
                resources: resources.into_iter().map(write).collect(),
            }],
        })
        .await
        .unwrap();
}

fn query(resource_type: &str, params: &[(&str, &str)]) -> SearchQuery {
    let pairs: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    SearchQuery::parse(resource_type, &pairs, 1_800_000_000, true)
        .unwrap_or_else(|error| panic!("{params:?}: {error}"))
}

async fn ids(store: &dyn Store, resource_type: &str, params: &[(&str, &str)]) -> Vec<String> {
    let query = query(resource_type, params);
    let keys = store.search(&ALL, &query).await.unwrap();
    let count = store.count(&ALL, &query).await.unwrap();
    assert_eq!(count as usize, keys.len(), "count agrees for {params:?}");
    let mut ids: Vec<String> = store
        .fetch(&ALL, &keys)
        .await
        .unwrap()
        .into_iter()
        .map(|resource| resource.id)
        .collect();
    ids.sort();
    ids
}

pub async fn full_text_search_in_japanese(store: &dyn Store) {
    replace(store, "patients", vec![patient("p1"), patient("p2")]).await;
    replace(
        store,
        "p1-notes",
        vec![
            note(
                "d1",
                "p1",
                "仙骨部に褥瘡あり。ガーゼ交換を継続。",
                "経過記録",
            ),
            note(
                "d2",
                "p1",
                "発熱なし。SpO2 100%、食事摂取良好。",
                "経過記録",
            ),
        ],
    )
    .await;
    replace(
        store,
        "p2-notes",
        vec![
            note("d3", "p2", "褥瘡の処置を実施した。", "看護記録"),
            json!({
                "resourceType": "DiagnosticReport", "id": "r1", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
                "code": {"text": "胸部CT"},
                "subject": {"reference": "Patient/p2"},
                "conclusion": "右下葉に結節影を認める。"
            }),
            json!({
                "resourceType": "Procedure", "id": "pr1", "status": "completed",
                "code": {"text": "褥瘡処置(デブリードマン)"},
                "subject": {"reference": "Patient/p2"},
                "performedDateTime": "2024-05-01",
                "note": [{"text": "壊死組織を除去"}]
            }),
        ],
    )
    .await;
    let s = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let doc = "DocumentReference";

    // Inside a patient's record any term length works: two kanji are a common Japanese word.
    assert_eq!(
        ids(store, doc, &[("patient", "p1"), ("_content", "褥瘡")]).await,
        s(&["d1"])
    );
    assert_eq!(
        ids(store, doc, &[("patient", "p2"), ("_content", "褥瘡")]).await,
        s(&["d3"])
    );
    assert_eq!(
        ids(store, doc, &[("subject", "Patient/p1"), ("_text", "熱")]).await,
        s(&["d2"])
    );
    // Region-wide, three characters or more go through the trigram index.
    assert_eq!(
        ids(store, doc, &[("_content", "褥瘡の処置")]).await,
        s(&["d3"])
    );
    assert_eq!(
        ids(store, doc, &[("_content", "ガーゼ交換")]).await,
        s(&["d1"])
    );
    // Width, kana and case are folded on both sides.
    assert_eq!(
        ids(store, doc, &[("_content", "ｶﾞｰｾﾞ交換")]).await,
        s(&["d1"])
    );
    assert_eq!(ids(store, doc, &[("_content", "spo2")]).await, s(&["d2"]));
    // Every term of a value is required; commas are alternatives.
    assert_eq!(
        ids(
            store,
            doc,
            &[("patient", "p1"), ("_content", "褥瘡 ガーゼ")]
        )
        .await,
        s(&["d1"])
    );
    assert!(
        ids(store, doc, &[("patient", "p1"), ("_content", "褥瘡 発熱")])
            .await
            .is_empty()
    );
    assert_eq!(
        ids(store, doc, &[("patient", "p1"), ("_content", "褥瘡,発熱")]).await,
        s(&["d1", "d2"])
    );
    // A short term beside a long one is checked on what the long one found.
    assert_eq!(
        ids(store, doc, &[("_content", "ガーゼ交換 仙骨")]).await,
        s(&["d1"])
    );
    assert!(
        ids(store, doc, &[("_content", "ガーゼ交換 発熱")])
            .await
            .is_empty()
    );
    // `_text` is the narrative; `_content` also the description.
    assert!(
        ids(store, doc, &[("patient", "p1"), ("_text", "経過記録")])
            .await
            .is_empty()
    );
    assert_eq!(
        ids(store, doc, &[("patient", "p1"), ("_content", "経過記録")]).await,
        s(&["d1", "d2"])
    );
    // LIKE's and FTS5's own characters are text.
    assert_eq!(ids(store, doc, &[("_content", "100%")]).await, s(&["d2"]));
    assert!(ids(store, doc, &[("_content", "1_0")]).await.is_empty());
    assert!(ids(store, doc, &[("_content", "\"褥瘡")]).await.is_empty());
    // With other filters.
    assert_eq!(
        ids(
            store,
            doc,
            &[
                ("_content", "褥瘡の処置"),
                ("type", "http://loinc.org|11506-3")
            ]
        )
        .await,
        s(&["d3"])
    );
    // Other types: a report's conclusion, a procedure's code text and note.
    assert_eq!(
        ids(store, "DiagnosticReport", &[("_content", "結節影")]).await,
        s(&["r1"])
    );
    assert_eq!(
        ids(store, "Procedure", &[("_content", "壊死組織")]).await,
        s(&["pr1"])
    );
    assert_eq!(
        ids(
            store,
            "Procedure",
            &[("patient", "p2"), ("_content", "褥瘡")]
        )
        .await,
        s(&["pr1"])
    );

    // A region-wide search of only one- or two-character terms is refused, by name.
    let refused = store
        .search(&ALL, &query(doc, &[("_content", "褥瘡")]))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StoreError::Invalid(message) if message.contains("patient")),
        "{refused}"
    );

    // A revision's words replace the old ones; a deleted document is not found.
    replace(
        store,
        "p1-notes",
        vec![note("d1", "p1", "褥瘡は治癒した。", "経過記録")],
    )
    .await;
    assert!(
        ids(store, doc, &[("_content", "ガーゼ交換")])
            .await
            .is_empty()
    );
    assert_eq!(
        ids(store, doc, &[("patient", "p1"), ("_content", "治癒")]).await,
        s(&["d1"])
    );
    assert!(
        ids(store, doc, &[("patient", "p1"), ("_content", "発熱")])
            .await
            .is_empty()
    );
    assert!(
        ids(store, doc, &[("_content", "食事摂取")])
            .await
            .is_empty()
    );
}

/// Writes a patient's note for [`words_are_found`]: a backend's reindex test writes it, rebuilds
/// every index row from content, and checks the words are still found.
pub async fn load_words(store: &dyn Store) {
    replace(store, "patients", vec![patient("p1")]).await;
    replace(
        store,
        "p1-notes",
        vec![note(
            "d1",
            "p1",
            "仙骨部に褥瘡あり。ガーゼ交換を継続。",
            "経過記録",
        )],
    )
    .await;
}

/// Whether [`load_words`]'s note is found by its words, inside the patient and region-wide.
pub async fn words_are_found(store: &dyn Store) -> bool {
    let doc = "DocumentReference";
    ids(store, doc, &[("patient", "p1"), ("_content", "褥瘡")]).await == ["d1"]
        && ids(store, doc, &[("_text", "ガーゼ交換")]).await == ["d1"]
}
