//! The guideline's sample storage: the valid files ingest with the expected resources, the three
//! broken files under `000/` are rejected with a clear reason and affect nothing else, and a
//! second run reads nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{copy_tree, pull, store, workspace};
use tsunagi_store::Store;

#[tokio::test]
async fn guideline_samples_ingest_and_broken_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    copy_tree(
        &workspace().join("../shared/testdata/ssmix2-guideline-samples/sampleData"),
        &root,
    );
    let store = store(dir.path()).await;

    let report = pull(store.clone(), "9999999999", vec![root.clone()]).await;
    let reasons: Vec<String> = report
        .rejected
        .iter()
        .map(|r| format!("{} :: {}", r.source.rsplit('/').next().unwrap(), r.reason))
        .collect();
    assert_eq!(report.rejected.len(), 3, "{reasons:#?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("ADT-31") || r.contains("stored under 0000001/20000401/ADT-31")),
        "{reasons:#?}"
    );
    assert!(
        reasons
            .iter()
            .filter(|r| r.contains("a second MSH segment"))
            .count()
            == 2,
        "{reasons:#?}"
    );
    assert_eq!(report.files_seen, 22);
    assert_eq!(report.messages, 19);
    assert_eq!(report.records_deleted, 0);

    let counts = store.count_current().await.unwrap();
    let expected = [
        ("AllergyIntolerance", 5),
        ("Condition", 1),
        ("Coverage", 1),
        ("DiagnosticReport", 1),
        ("Encounter", 3),
        ("ImagingStudy", 2),
        ("MedicationAdministration", 4),
        ("MedicationRequest", 6),
        ("NutritionOrder", 1),
        ("Observation", 3 + 3 + 12),
        ("Patient", 1),
        ("ServiceRequest", 9),
        ("Specimen", 1),
    ];
    for (resource_type, count) in expected {
        assert_eq!(
            counts.get(resource_type),
            Some(&count),
            "{resource_type}: {counts:?}"
        );
    }
    assert_eq!(counts.len(), expected.len(), "{counts:?}");
    assert_eq!(
        report.resources_written(),
        expected.iter().map(|(_, n)| *n).sum::<u64>()
    );

    // Index rows are there: the patient's lab results are found by patient and by JLAC10 code.
    let by_patient = store
        .find_by_reference("Observation", "patient", "Patient/9999999999.9999013")
        .await
        .unwrap();
    assert_eq!(by_patient.len(), 18);
    let total_protein = store
        .find_by_token(
            "Observation",
            "code",
            Some("http://medis.or.jp/CodeSystem/master-JLAC10-17digits"),
            "3A010000002327101",
        )
        .await
        .unwrap();
    assert_eq!(total_protein.len(), 1);

    // A second run reads nothing and writes nothing; the broken files are not reported again.
    let again = pull(store.clone(), "9999999999", vec![root]).await;
    assert_eq!(again.files_read, 0, "{again:#?}");
    assert_eq!(again.files_skipped_unchanged, 22, "{again:#?}");
    assert_eq!(again.resources_written(), 0);
    assert!(again.rejected.is_empty(), "{:#?}", again.rejected);
}
