//! CDA in, what Tsunagi reads of it out: each document under `tests/fixtures/cda/` parsed, its
//! header and rendered narrative compared with `<name>.expected.json` beside it (rewrite them
//! with `TSUNAGI_BLESS=1`), and the narrative held to FHIR's narrative rules (txt-1).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde_json::{Value, json};
use tsunagi_document::{
    cda::{Body, CdaDocument, InstanceId, Interval},
    narrative,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cda")
}

fn id(id: &Option<InstanceId>) -> Value {
    match id {
        Some(id) => json!({"root": id.root, "extension": id.extension}),
        None => Value::Null,
    }
}

fn interval(time: &Interval) -> Value {
    json!({"low": time.low, "high": time.high})
}

fn summary(document: &CdaDocument) -> Value {
    json!({
        "id": id(&document.id),
        "code": document.code.as_ref().map(|c| json!({"code": c.code, "system": c.system, "display": c.display})),
        "title": document.title,
        "effectiveTime": document.effective_time,
        "setId": id(&document.set_id),
        "version": document.version,
        "patient": {
            "ids": document.patient.ids.iter().map(|i| id(&Some(i.clone()))).collect::<Vec<_>>(),
            "name": document.patient.name,
            "kana": document.patient.kana,
            "birth": document.patient.birth,
            "gender": document.patient.gender,
        },
        "authors": document.authors.iter().map(|a| json!({
            "time": a.time,
            "id": id(&a.id),
            "name": a.name,
            "organization": a.organization.as_ref().map(|o| json!({"id": id(&o.id), "name": o.name})),
        })).collect::<Vec<_>>(),
        "custodian": document.custodian.as_ref().map(|o| json!({"id": id(&o.id), "name": o.name})),
        "serviceEvent": document.service_event().map(|e| json!({
            "classCode": e.class_code,
            "ids": e.ids.iter().map(|i| id(&Some(i.clone()))).collect::<Vec<_>>(),
            "code": e.code.as_ref().map(|c| json!({"code": c.code, "system": c.system})),
            "time": interval(&e.time),
        })),
        "orders": document.orders.iter().map(|i| id(&Some(i.clone()))).collect::<Vec<_>>(),
        "encounter": document.encounter.as_ref().map(|e| json!({"id": id(&e.id), "time": interval(&e.time)})),
        "replaces": document.replaces.iter().map(|i| id(&Some(i.clone()))).collect::<Vec<_>>(),
        "narrative": match &document.body {
            Body::Structured(body) => narrative::render(body).map_or(Value::Null, Value::String),
            Body::NonXml(media) => json!({"nonXMLBody": media}),
            Body::Empty => Value::Null,
        },
    })
}

#[test]
fn cda_headers_and_narratives_match_their_snapshots() {
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "xml"))
        .collect();
    entries.sort();
    for path in entries {
        let document = CdaDocument::parse(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let got = summary(&document);
        if let Some(div) = got["narrative"].as_str() {
            assert_eq!(
                tsunagi_fhir_xml::narrative::problem(div),
                None,
                "{}: the narrative breaks FHIR's rules",
                path.display()
            );
        }
        let expected_path = path.with_extension("expected.json");
        if std::env::var_os("TSUNAGI_BLESS").is_some() {
            let mut text = serde_json::to_string_pretty(&got).unwrap();
            text.push('\n');
            std::fs::write(&expected_path, text).unwrap();
        }
        let expected: Value =
            serde_json::from_slice(&std::fs::read(&expected_path).unwrap_or_else(|_| {
                panic!("{} (TSUNAGI_BLESS=1 writes it)", expected_path.display())
            }))
            .unwrap();
        assert_eq!(got, expected, "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 3, "the fixtures are there");
}

#[test]
fn the_patient_is_cross_checked_against_the_folder() {
    let bytes = std::fs::read(fixtures().join("referral-letter.xml")).unwrap();
    let document = CdaDocument::parse(&bytes).unwrap();
    // The CDA writes 10003; the folder may pad it.
    assert!(document.names_patient("10003", "0610300016"));
    assert!(document.names_patient("00010003", "0610300016"));
    assert!(!document.names_patient("10004", "0610300016"));
    // The same number in another hospital's JP Core namespace is another hospital's patient.
    let text = String::from_utf8(bytes).unwrap();
    let root = document.patient.ids[0].root.clone();
    let elsewhere = text.replacen(&root, "1.2.392.100495.20.3.51.10610100010", 1);
    let moved = CdaDocument::parse(elsewhere.as_bytes()).unwrap();
    assert!(!moved.names_patient("10003", "0610300016"));
    let ours = text.replacen(&root, "1.2.392.100495.20.3.51.10610300016", 1);
    let here = CdaDocument::parse(ours.as_bytes()).unwrap();
    assert!(here.names_patient("10003", "0610300016"));
}

#[test]
fn documents_that_are_not_cda_are_refused_by_reason() {
    let error = CdaDocument::parse(b"<html><body/></html>").unwrap_err();
    assert!(
        error.to_string().contains("not <ClinicalDocument>"),
        "{error}"
    );
    let error = CdaDocument::parse(b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>").unwrap_err();
    assert!(error.to_string().contains("names no patient"), "{error}");
}
