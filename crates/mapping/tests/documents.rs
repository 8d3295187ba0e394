//! Extended storage's documents in, FHIR JSON out: each CDA fixture under
//! `tests/fixtures/cda/` as one version of a document in its folders, mapped to a
//! DocumentReference compared with `<name>.fhir.json` (rewrite with `TSUNAGI_BLESS=1`) and held to
//! R4B's structure; a PDF, a revision and a withdrawn version by their facts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde_json::Value;
use tsunagi_core::FacilityId;
use tsunagi_document::{
    cda::CdaDocument,
    layout::{ContentFolder, DataTypeFolder},
};
use tsunagi_mapping::{SourceRecord, document::DocumentSource, map};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cda")
}

/// (fixture, facility, data-type folder, content folder, patient, care date)
const CASES: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "progress-note",
        "0610100010",
        "L12345^入院診療録^99ZZZ^11506-3^経過記録^LN",
        "0001000052_20240502_L12345_K0001_20240502093000123_01_1",
        "0001000052",
        "20240502",
    ),
    (
        "discharge-summary",
        "0610200018",
        "DS01^退院時サマリー^99NKS^18842-5^退院時サマリー^LN",
        "2000000007_20240620_DS01^退院時サマリー^99NKS^18842-5^退院時サマリー^LN_S0007_202406201500001_1",
        "2000000007",
        "20240620",
    ),
    (
        "radiology-report",
        "0610100010",
        "RR01^画像診断報告書^99ZZZ^18748-4^画像診断報告書^LN",
        "0001000052_20240501_RR01_RR0001_20240501113000000_30_1",
        "0001000052",
        "20240501",
    ),
    (
        "referral-letter",
        "0610300016",
        "^紹介状^^57133-1^紹介状^LN",
        "00010003_20240710_57133-1_R0001_20240710101500_10_1",
        "00010003",
        "20240710",
    ),
];

/// Where a version was found: facility, data-type folder, content folder, patient, care date.
type Folders<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

fn mapped(
    bytes: &[u8],
    folders: Folders<'_>,
    replaces: Option<&str>,
    superseded: bool,
) -> Result<Value, String> {
    Ok(mapped_all(bytes, folders, replaces, superseded)?.remove(0))
}

/// Every resource a version maps to (its DocumentReference, then an imaging report's
/// DiagnosticReport), each held to R4B's structure.
fn mapped_all(
    bytes: &[u8],
    (facility, data_type, content, patient, date): Folders<'_>,
    replaces: Option<&str>,
    superseded: bool,
) -> Result<Vec<Value>, String> {
    let facility = FacilityId::parse(facility).unwrap();
    let data_type = DataTypeFolder::parse(data_type).unwrap();
    let content = ContentFolder::parse(content, patient, date, &data_type).unwrap();
    let replaces =
        replaces.map(|folder| ContentFolder::parse(folder, patient, date, &data_type).unwrap());
    let cda = bytes
        .starts_with(b"%PDF")
        .then_some(())
        .map_or_else(|| Some(CdaDocument::parse(bytes).unwrap()), |()| None);
    let sha256 = [7u8; 32];
    let source = DocumentSource {
        facility: &facility,
        data_type: &data_type,
        content: &content,
        file_name: if cda.is_some() {
            "main_document.xml"
        } else {
            "main_document.pdf"
        },
        size: bytes.len() as u64,
        sha256: &sha256,
        content_type: if cda.is_some() {
            "application/hl7-v3+xml"
        } else {
            "application/pdf"
        },
        cda: cda.as_ref(),
        replaces: replaces.as_ref(),
        superseded,
    };
    let mapped = map(SourceRecord::Document(source)).map_err(|error| error.to_string())?;
    let resources: Vec<Value> = mapped.resources.into_iter().map(|r| r.json).collect();
    for resource in &resources {
        let problems = tsunagi_fhir_xml::structure::check(resource).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
    }
    Ok(resources)
}

#[test]
fn cda_documents_become_document_references_as_snapshotted() {
    for (name, facility, data_type, content, patient, date) in CASES {
        let bytes = std::fs::read(fixtures().join(format!("{name}.xml"))).unwrap();
        let folders = (*facility, *data_type, *content, *patient, *date);
        let mut all = mapped_all(&bytes, folders, None, false)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        // One resource is snapshotted as itself, an imaging report's two as a list.
        let got = if all.len() == 1 {
            all.remove(0)
        } else {
            Value::Array(all)
        };
        let path = fixtures().join(format!("{name}.fhir.json"));
        if std::env::var_os("TSUNAGI_BLESS").is_some() {
            let mut text = serde_json::to_string_pretty(&got).unwrap();
            text.push('\n');
            std::fs::write(&path, text).unwrap();
        }
        let expected: Value = serde_json::from_slice(
            &std::fs::read(&path)
                .unwrap_or_else(|_| panic!("{} (TSUNAGI_BLESS=1 writes it)", path.display())),
        )
        .unwrap();
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn a_referral_letter_keeps_its_jmix_code_first() {
    let bytes = std::fs::read(fixtures().join("referral-letter.xml")).unwrap();
    let (_, facility, data_type, content, patient, date) = CASES[3];
    let document = mapped(
        &bytes,
        (facility, data_type, content, patient, date),
        None,
        false,
    )
    .unwrap();
    let codings = document["type"]["coding"].as_array().unwrap();
    assert_eq!(codings[0]["code"], "MD0020730");
    assert_eq!(codings[0]["system"], "urn:oid:1.2.392.200119.5.3.1");
    assert_eq!(codings[1]["code"], "57133-1");
    assert_eq!(document["category"][0]["coding"][0]["code"], "referral");
}

#[test]
fn revisions_pdfs_and_withdrawn_versions() {
    let (_, facility, data_type, _, patient, date) = CASES[0];
    let pdf = b"%PDF-1.7\n%synthetic\n";
    let earlier = "0001000052_20240502_L12345_K0001_20240502093000123_01_2";
    let later = "0001000052_20240502_L12345_K0001_20240503080000000_01_1";
    let old = mapped(
        pdf,
        (facility, data_type, earlier, patient, date),
        None,
        true,
    )
    .unwrap();
    assert_eq!(old["status"], "superseded");
    assert_eq!(
        old["content"].as_array().unwrap().len(),
        1,
        "no narrative for a PDF"
    );
    assert_eq!(
        old["content"][0]["attachment"]["contentType"],
        "application/pdf"
    );
    assert!(old.get("text").is_none());
    let new = mapped(
        pdf,
        (facility, data_type, later, patient, date),
        Some(earlier),
        false,
    )
    .unwrap();
    assert_eq!(new["status"], "current");
    assert_eq!(new["relatesTo"][0]["code"], "replaces");
    assert_eq!(
        new["relatesTo"][0]["target"]["reference"],
        format!("DocumentReference/{}", old["id"].as_str().unwrap())
    );
    assert_eq!(new["date"], "2024-05-03T08:00:00.000+09:00");
    let withdrawn = "0001000052_20240502_L12345_K0001_20240504080000_01_0";
    let gone = mapped(
        pdf,
        (facility, data_type, withdrawn, patient, date),
        None,
        false,
    )
    .unwrap();
    assert_eq!(gone["status"], "entered-in-error");
    assert!(
        gone["content"][0]["attachment"].get("url").is_none(),
        "its bytes are not served"
    );
}

#[test]
fn a_cda_of_another_patient_is_refused() {
    let bytes = std::fs::read(fixtures().join("progress-note.xml")).unwrap();
    let (_, facility, data_type, _, _, date) = CASES[0];
    let content = "0001000099_20240502_L12345_K0001_20240502093000123_01_1";
    let error = mapped(
        &bytes,
        (facility, data_type, content, "0001000099", date),
        None,
        false,
    )
    .unwrap_err();
    assert!(
        error.contains("is not the folder's patient 0001000099"),
        "{error}"
    );
}

#[test]
fn an_imaging_report_withdrawn_leaves_its_report_entered_in_error() {
    let (name, facility, data_type, content, patient, date) = CASES[2];
    assert_eq!(name, "radiology-report");
    let bytes = std::fs::read(fixtures().join(format!("{name}.xml"))).unwrap();
    let withdrawn = content.replace("_30_1", "_30_0");
    let resources = mapped_all(
        &bytes,
        (facility, data_type, &withdrawn, patient, date),
        None,
        false,
    )
    .unwrap();
    assert_eq!(resources[0]["status"], "entered-in-error");
    assert_eq!(resources[1]["resourceType"], "DiagnosticReport");
    assert_eq!(resources[1]["status"], "entered-in-error");
    assert!(resources[1]["presentedForm"][0].get("url").is_none());
    // An older version writes none: the newest one holds it.
    let older = mapped_all(
        &bytes,
        (facility, data_type, content, patient, date),
        None,
        true,
    )
    .unwrap();
    assert_eq!(older.len(), 1);
}

#[test]
fn an_imaging_report_as_pdf_or_of_two_studies_is_a_diagnostic_report() {
    let (name, facility, data_type, content, patient, date) = CASES[2];
    assert_eq!(name, "radiology-report");
    // A PDF report: the report with its file, no conclusion and no study (the file says none).
    let pdf = mapped_all(
        b"%PDF-1.7\n%synthetic report\n",
        (facility, data_type, content, patient, date),
        None,
        false,
    )
    .unwrap();
    assert_eq!(pdf.len(), 2, "{pdf:#?}");
    let report = &pdf[1];
    assert_eq!(report["resourceType"], "DiagnosticReport");
    assert_eq!(report["status"], "final");
    assert_eq!(report["category"][0]["coding"][0]["code"], "RAD");
    assert_eq!(report["presentedForm"][0]["contentType"], "application/pdf");
    assert!(report.get("conclusion").is_none() && report.get("imagingStudy").is_none());
    assert_eq!(
        pdf[0]["context"]["related"][0]["reference"],
        format!("DiagnosticReport/{}", report["id"].as_str().unwrap())
    );
    // A CDA documenting two studies links both, each by its UID.
    let text = std::fs::read_to_string(fixtures().join(format!("{name}.xml"))).unwrap();
    let second = "<documentationOf><serviceEvent classCode=\"ACT\">\
        <id root=\"1.2.392.200036.9116.2.0610100010.202405010002\"/>\
        <code code=\"CT\" codeSystem=\"1.2.840.10008.2.16.4\"/></serviceEvent></documentationOf>\n  <component>";
    let two = text.replacen("<component>", second, 1);
    assert_ne!(two, text);
    let resources = mapped_all(
        two.as_bytes(),
        (facility, data_type, content, patient, date),
        None,
        false,
    )
    .unwrap();
    let studies: Vec<&str> = resources[1]["imagingStudy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|study| study["identifier"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        studies,
        [
            "urn:oid:1.2.392.200036.9116.2.0610100010.202405010001",
            "urn:oid:1.2.392.200036.9116.2.0610100010.202405010002"
        ]
    );
}
