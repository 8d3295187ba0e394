//! `GET /fhir/Binary/[id]` over real HTTP: a document's bytes exactly, in the form the client
//! asks for (its own type, or the FHIR resource with base64 data), with ETag and byte ranges,
//! only for a caller who may see the patient (another facility's patient without consent is
//! 404, exactly as an unknown id), and audited as an access to that patient.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use sha2::{Digest, Sha256};
use support::{FACILITY, fresh_store, request, serve};
use tsunagi_server::Settings;
use tsunagi_store::{
    Batch, Governance, Operation, ResourceWrite, Store,
    governance::{AuditFilter, Facility},
};

const OTHER: &str = "0610200018";

/// A patient of `facility` with one document's Binary `binary` holding `bytes`.
fn record(facility: &str, patient: &str, binary: &str, bytes: &[u8]) -> Vec<Operation> {
    let sha: [u8; 32] = Sha256::digest(bytes).into();
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    let patient_json =
        json!({"resourceType": "Patient", "id": patient, "name": [{"family": "山田"}]});
    let binary_json = json!({
        "resourceType": "Binary", "id": binary,
        "meta": {"tag": [
            {"system": "urn:tsunagi:sha256", "code": hex},
            {"system": "urn:tsunagi:compartment", "code": format!("Patient/{patient}")}
        ]},
        "contentType": "application/pdf",
        "securityContext": {"reference": format!("DocumentReference/d-{binary}")}
    });
    let binary_write = ResourceWrite::from_json("Binary", binary, &binary_json).unwrap();
    // Its compartment comes from its content (a reindex recomputes it so).
    assert_eq!(binary_write.compartment.as_deref(), Some(patient));
    vec![
        Operation::PutBlob {
            sha256: sha,
            bytes: bytes.to_vec(),
        },
        Operation::ReplaceSource {
            source_key: format!("doc:{patient}"),
            facility: facility.to_owned(),
            resources: vec![
                ResourceWrite::from_json("Patient", patient, &patient_json).unwrap(),
                binary_write,
            ],
        },
    ]
}

#[tokio::test]
async fn binary_bytes_are_served_as_asked_under_consent() {
    let (store, _dir) = fresh_store().await;
    store
        .put_facility(&Facility {
            code: OTHER.into(),
            name: "日本海総合病院".into(),
            kind: "hospital".into(),
            active: true,
        })
        .await
        .unwrap();
    let pdf: Vec<u8> = b"%PDF-1.7\n"
        .iter()
        .copied()
        .chain((0..5000u32).map(|n| (n % 251) as u8))
        .collect();
    let mut operations = record(FACILITY, "p1", "b1", &pdf);
    operations.extend(record(OTHER, "p2", "b2", b"%PDF-1.4 other"));
    store.apply(Batch { operations }).await.unwrap();
    let addr = serve(store.clone(), Settings::default()).await;

    // The bytes, exactly, with their type, version and ranges.
    let whole = request(addr, "GET", "/fhir/Binary/b1", &[], "").await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, pdf);
    assert_eq!(whole.header("content-type"), Some("application/pdf"));
    assert_eq!(whole.header("etag"), Some("W/\"1\""));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("content-security-policy"), Some("sandbox"));
    assert_eq!(whole.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(whole.header("cache-control"), Some("private, no-store"));
    let any = request(addr, "GET", "/fhir/Binary/b1", &[("accept", "*/*")], "").await;
    assert_eq!(any.body, pdf);
    let part = request(
        addr,
        "GET",
        "/fhir/Binary/b1",
        &[("range", "bytes=0-7")],
        "",
    )
    .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, b"%PDF-1.7");
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 0-7/{}", pdf.len()).as_str())
    );
    let tail = request(
        addr,
        "GET",
        "/fhir/Binary/b1",
        &[("range", "bytes=-10")],
        "",
    )
    .await;
    assert_eq!(tail.body, pdf[pdf.len() - 10..]);
    let past = request(
        addr,
        "GET",
        "/fhir/Binary/b1",
        &[("range", "bytes=999999-")],
        "",
    )
    .await;
    assert_eq!(past.status, 416);
    let unchanged = request(
        addr,
        "GET",
        "/fhir/Binary/b1",
        &[("if-none-match", "W/\"1\"")],
        "",
    )
    .await;
    assert_eq!(unchanged.status, 304);
    assert!(unchanged.body.is_empty());

    // The FHIR resource, for a client that asks for FHIR.
    let resource = request(
        addr,
        "GET",
        "/fhir/Binary/b1",
        &[("accept", "application/fhir+json")],
        "",
    )
    .await;
    assert_eq!(resource.status, 200);
    let json = resource.json();
    assert_eq!(json["resourceType"], "Binary");
    assert_eq!(json["contentType"], "application/pdf");
    assert_eq!(json["meta"]["versionId"], "1");
    assert_eq!(
        tsunagi_core::base64::decode(json["data"].as_str().unwrap()),
        pdf
    );
    let xml = request(addr, "GET", "/fhir/Binary/b1?_format=xml", &[], "").await;
    assert_eq!(xml.status, 200);
    assert!(
        String::from_utf8_lossy(&xml.body).contains("<Binary"),
        "{}",
        String::from_utf8_lossy(&xml.body)
    );

    // Another facility's patient, no consent: exactly as absent.
    let hidden = request(addr, "GET", "/fhir/Binary/b2", &[], "").await;
    let absent = request(addr, "GET", "/fhir/Binary/b3", &[], "").await;
    assert_eq!((hidden.status, absent.status), (404, 404));
    assert_eq!(
        hidden.json()["issue"][0]["code"],
        absent.json()["issue"][0]["code"]
    );
    let hidden_raw = request(
        addr,
        "GET",
        "/fhir/Binary/b2",
        &[("range", "bytes=0-3")],
        "",
    )
    .await;
    assert_eq!(hidden_raw.status, 404);
    let hidden_version = request(addr, "GET", "/fhir/Binary/b2/_history/1", &[], "").await;
    assert_eq!(hidden_version.status, 404);

    // Every read of p1's document was an audited access to p1.
    let filter = AuditFilter {
        patient: Some("p1".into()),
        limit: 100,
        ..Default::default()
    };
    let audited = store.audit(&filter).await.unwrap();
    assert!(audited.len() >= 8, "{}", audited.len());
    let other = AuditFilter {
        patient: Some("p2".into()),
        limit: 100,
        ..Default::default()
    };
    assert!(store.audit(&other).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_large_document_streams_in_parts_with_its_length_uncompressed() {
    let (store, _dir) = fresh_store().await;
    let part = tsunagi_store::BLOB_PART_BYTES;
    let pdf: Vec<u8> = b"%PDF-1.7\n"
        .iter()
        .copied()
        .chain((0..part * 2 + 12345).map(|n| (n % 253) as u8 ^ (n / part) as u8))
        .collect();
    store
        .apply(Batch {
            operations: record(FACILITY, "p1", "big", &pdf),
        })
        .await
        .unwrap();
    let addr = serve(store.clone(), Settings::default()).await;
    let length = pdf.len().to_string();

    // Whole, with its length (not chunked) and not compressed, whatever the client accepts.
    let whole = request(
        addr,
        "GET",
        "/fhir/Binary/big",
        &[("accept-encoding", "gzip, br")],
        "",
    )
    .await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-length"), Some(length.as_str()));
    assert_eq!(whole.header("transfer-encoding"), None);
    assert_eq!(whole.header("content-encoding"), None);
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert!(whole.body == pdf, "the bytes exactly");

    // A range across two parts, and the last bytes.
    let (start, end) = (part - 100, part + 99);
    let across = request(
        addr,
        "GET",
        "/fhir/Binary/big",
        &[("range", &format!("bytes={start}-{end}"))],
        "",
    )
    .await;
    assert_eq!(across.status, 206);
    assert_eq!(across.header("content-length"), Some("200"));
    assert_eq!(
        across.header("content-range"),
        Some(format!("bytes {start}-{end}/{length}").as_str())
    );
    assert!(across.body == pdf[start..=end]);
    let tail = request(
        addr,
        "GET",
        "/fhir/Binary/big",
        &[("range", "bytes=-5")],
        "",
    )
    .await;
    assert!(tail.body == pdf[pdf.len() - 5..]);

    // A vread of the version answers as a read does: the bytes, or the resource with data.
    let vread = request(addr, "GET", "/fhir/Binary/big/_history/1", &[], "").await;
    assert_eq!(vread.status, 200);
    assert_eq!(vread.header("content-type"), Some("application/pdf"));
    assert!(vread.body == pdf);
    let resource = request(
        addr,
        "GET",
        "/fhir/Binary/big/_history/1",
        &[("accept", "application/fhir+json")],
        "",
    )
    .await;
    assert!(
        tsunagi_core::base64::decode(resource.json()["data"].as_str().unwrap()) == pdf,
        "the resource's data is the whole content"
    );
    let absent = request(addr, "GET", "/fhir/Binary/big/_history/2", &[], "").await;
    assert_eq!(absent.status, 404);
}

/// A document of `patient`, written by `facility`, with `words` in its narrative.
fn document(facility: &str, patient: &str, id: &str, words: &str) -> Operation {
    let document = json!({
        "resourceType": "DocumentReference", "id": id, "status": "current",
        "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{words}</p></div>")},
        "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "content": [{"attachment": {"contentType": "application/pdf", "url": format!("Binary/b-{id}")}}]
    });
    Operation::ReplaceSource {
        source_key: format!("doc:{id}"),
        facility: facility.to_owned(),
        resources: vec![
            ResourceWrite::from_json(
                "Patient",
                patient,
                &json!({"resourceType": "Patient", "id": patient}),
            )
            .unwrap(),
            ResourceWrite::from_json("DocumentReference", id, &document).unwrap(),
        ],
    }
}

#[tokio::test]
async fn full_text_search_finds_only_what_the_caller_may_see() {
    let (store, _dir) = fresh_store().await;
    store
        .put_facility(&Facility {
            code: OTHER.into(),
            name: "日本海総合病院".into(),
            kind: "hospital".into(),
            active: true,
        })
        .await
        .unwrap();
    let operations = vec![
        document(FACILITY, "p1", "d1", "仙骨部の褥瘡処置を継続する。"),
        document(OTHER, "p2", "d2", "褥瘡処置を開始した。"),
    ];
    store.apply(Batch { operations }).await.unwrap();
    let addr = serve(store.clone(), Settings::default()).await;
    let ids = |response: &support::Reply| -> Vec<String> {
        response.json()["entry"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| entry["resource"]["id"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };

    // Region-wide: the hidden patient's document is not found, nor counted.
    let found = request(
        addr,
        "GET",
        "/fhir/DocumentReference?_content=%E8%A4%A5%E7%98%A1%E5%87%A6%E7%BD%AE",
        &[],
        "",
    )
    .await;
    assert_eq!(found.status, 200);
    assert_eq!(ids(&found), ["d1"]);
    assert_eq!(found.json()["total"], 1);
    // Inside the hidden patient's record: nothing, as for a patient with no such words.
    let hidden = request(
        addr,
        "GET",
        "/fhir/DocumentReference?patient=p2&_content=%E8%A4%A5%E7%98%A1",
        &[],
        "",
    )
    .await;
    assert_eq!(hidden.status, 200);
    assert!(ids(&hidden).is_empty());
    let own = request(
        addr,
        "GET",
        "/fhir/DocumentReference?patient=p1&_text=%E8%A4%A5%E7%98%A1",
        &[],
        "",
    )
    .await;
    assert_eq!(ids(&own), ["d1"]);
    // Two characters region-wide: refused, saying how to ask.
    let refused = request(
        addr,
        "GET",
        "/fhir/DocumentReference?_content=%E8%A4%A5%E7%98%A1",
        &[],
        "",
    )
    .await;
    assert_eq!(refused.status, 400);
    let outcome = refused.json();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("patient="),
        "{outcome}"
    );

    // The CapabilityStatement says so.
    let capability = request(addr, "GET", "/fhir/metadata", &[], "").await.json();
    let documents = capability["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|resource| resource["type"] == "DocumentReference")
        .unwrap();
    let names: Vec<&str> = documents["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|param| param["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"_content") && names.contains(&"_text"),
        "{names:?}"
    );
}
