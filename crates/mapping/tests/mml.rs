//! MML 4.0 export files in, FHIR JSON out: each fixture under `tests/fixtures/mml/` (a progress
//! course, a surgery, a referral, as Homma's EHR exports them) mapped and compared with
//! `<name>.fhir.json` beside it (rewrite with `TSUNAGI_BLESS=1`), each resource held to R4B's
//! structure; and what is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde_json::Value;
use tsunagi_core::FacilityId;
use tsunagi_document::mml::MmlDocument;
use tsunagi_mapping::{SourceRecord, map, mml::MmlSource};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mml")
}

const HOMMA: &str = "0610300016";

fn mapped(bytes: &[u8], file: &str) -> Result<(Vec<Value>, Vec<String>), String> {
    let document = MmlDocument::parse(bytes).map_err(|error| error.to_string())?;
    let facility = FacilityId::parse(HOMMA).unwrap();
    let sha256 = [9u8; 32];
    let mapped = map(SourceRecord::Mml(MmlSource {
        facility: &facility,
        file,
        size: bytes.len() as u64,
        sha256: &sha256,
        document: &document,
        revised: &|_: &str| false,
    }))
    .map_err(|error| error.to_string())?;
    let resources: Vec<Value> = mapped.resources.into_iter().map(|r| r.json).collect();
    for resource in &resources {
        let problems = tsunagi_fhir_xml::structure::check(resource).unwrap();
        assert!(problems.is_empty(), "{file}: {problems:?}");
    }
    Ok((resources, mapped.warnings))
}

#[test]
fn mml_modules_map_as_snapshotted() {
    for name in ["progress-course", "surgery", "referral"] {
        let bytes = std::fs::read(fixtures().join(format!("{name}.xml"))).unwrap();
        let (resources, warnings) = mapped(&bytes, &format!("export/{name}.xml"))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        let got = Value::Array(resources);
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
fn the_chart_is_the_ss_mix2_chart() {
    let bytes = std::fs::read(fixtures().join("surgery.xml")).unwrap();
    let (resources, _) = mapped(&bytes, "surgery.xml").unwrap();
    let procedure = &resources[0];
    assert_eq!(procedure["resourceType"], "Procedure");
    // The same Patient id the standardized storage's ADT makes for Homma's patient 00010003.
    assert_eq!(
        procedure["subject"]["reference"],
        format!(
            "Patient/{}",
            tsunagi_core::ids::logical_id(&[HOMMA, "00010003"])
        )
    );
    assert_eq!(
        procedure["performedPeriod"]["start"],
        "2024-05-29T09:15:00+09:00"
    );
    assert_eq!(
        procedure["performedPeriod"]["end"],
        "2024-05-29T12:55:00+09:00"
    );
    assert_eq!(
        procedure["performer"][0]["actor"]["identifier"]["value"],
        "D0031"
    );
}

#[test]
fn hostile_or_inconsistent_files_are_refused_by_reason() {
    let referral = std::fs::read_to_string(fixtures().join("referral.xml")).unwrap();
    // The letter's PatientModule names another patient than the header.
    let other = referral.replacen("              00010003\n", "              00099999\n", 1);
    let error = mapped(other.as_bytes(), "x.xml").unwrap_err();
    assert!(
        error.contains("00099999") && error.contains("00010003"),
        "{error}"
    );
    // A DOCTYPE (entity expansion, external entities) is refused before anything is read.
    let doctype = referral.replacen(
        "<Mml ",
        "<!DOCTYPE Mml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><Mml ",
        1,
    );
    assert!(
        mapped(doctype.as_bytes(), "x.xml")
            .unwrap_err()
            .contains("DOCTYPE")
    );
    // Truncated, not MML, no patient.
    assert!(mapped(&referral.as_bytes()[..referral.len() / 2], "x.xml").is_err());
    assert!(
        mapped(b"<ClinicalDocument/>", "x.xml")
            .unwrap_err()
            .contains("not <Mml>")
    );
    let nobody = referral.replacen(
        "<masterId><mmlCm:Id mmlCm:type=\"facility\" mmlCm:tableId=\"JPN452015100001\">00010003</mmlCm:Id></masterId>",
        "",
        1,
    );
    assert!(
        mapped(nobody.as_bytes(), "x.xml")
            .unwrap_err()
            .contains("masterId")
    );
}

#[test]
fn other_modules_are_kept_but_reported() {
    let bytes = std::fs::read_to_string(fixtures().join("progress-course.xml")).unwrap();
    let other = bytes.replace(
        "contentModuleType=\"progressCourse\"",
        "contentModuleType=\"flowsheet\"",
    );
    let (resources, warnings) = mapped(other.as_bytes(), "x.xml").unwrap();
    assert!(resources.is_empty());
    assert!(warnings[0].contains("flowsheet"), "{warnings:?}");
}
