//! Extended storage pulled into a real SQLite store: documents become DocumentReference +
//! Binary with their bytes kept exactly; revisions chain; every hostile file is refused with
//! its file and reason, changes nothing and is not read again until it changes; an unchanged
//! storage is skipped unread.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, sync::Arc};

use sha2::{Digest, Sha256};
use tsunagi_adapter::{AdapterContext, NoProgress, PullAdapter, PullReport};
use tsunagi_adapter_ssmix2_extended::{
    DEFAULT_MAX_DOCUMENT_BYTES, ExtendedAdapter, ExtendedConfig,
};
use tsunagi_core::{FacilityId, clock::FixedClock};
use tsunagi_store::{Access, Store};
use tsunagi_store_sqlite::SqliteStore;

const FACILITY: &str = "0610100010";
const NOTE_TYPE: &str = "L12345^入院診療録^99ZZZ^11506-3^経過記録^LN";
const PATIENT: &str = "0001000052";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/cda")
            .join(name),
    )
    .unwrap()
}

/// Writes `files` into the content folder `content` of patient `patient` on `date`.
fn put(
    root: &Path,
    patient: &str,
    date: &str,
    data_type: &str,
    content: &str,
    files: &[(&str, &[u8])],
) {
    let folder = root
        .join(&patient[..3])
        .join(&patient[3..6])
        .join(patient)
        .join(date)
        .join(data_type)
        .join(content);
    std::fs::create_dir_all(&folder).unwrap();
    for (name, bytes) in files {
        std::fs::write(folder.join(name), bytes).unwrap();
    }
}

fn content(key: &str, occurred: &str, flag: char) -> String {
    format!("{PATIENT}_20240502_L12345_{key}_{occurred}_01_{flag}")
}

async fn pull(store: &Arc<SqliteStore>, root: &Path, max: u64) -> PullReport {
    pull_facility(store, FACILITY, root, max).await
}

async fn pull_facility(
    store: &Arc<SqliteStore>,
    facility: &str,
    root: &Path,
    max: u64,
) -> PullReport {
    let batch_bytes = tsunagi_adapter_ssmix2_extended::DEFAULT_BATCH_BYTES;
    pull_with(store, facility, root, max, batch_bytes).await
}

async fn pull_with(
    store: &Arc<SqliteStore>,
    facility: &str,
    root: &Path,
    max: u64,
    batch_bytes: u64,
) -> PullReport {
    let adapter = ExtendedAdapter::new(ExtendedConfig {
        facility: FacilityId::parse(facility).unwrap(),
        name: None,
        roots: vec![root.to_owned()],
        batch_resources: 2000,
        batch_bytes,
        max_document_bytes: max,
        full: false,
    });
    let context = AdapterContext {
        store: store.clone(),
        clock: Arc::new(FixedClock(1_764_000_000_000_000)),
        progress: Arc::new(NoProgress),
    };
    adapter.pull(&context).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_revisions_and_hostile_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("extended");
    let note = fixture("progress-note.xml");
    let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3 synthetic\n".to_vec();
    // A progress note in two versions, and a PDF document of its own.
    put(
        &root,
        PATIENT,
        "20240502",
        NOTE_TYPE,
        &content("K0001", "20240502093000123", '2'),
        &[("main_document.xml", &note)],
    );
    put(
        &root,
        PATIENT,
        "20240502",
        NOTE_TYPE,
        &content("K0001", "20240503080000000", '1'),
        &[("main_document.xml", &note), ("style.css", b"p{}")],
    );
    put(
        &root,
        PATIENT,
        "20240502",
        NOTE_TYPE,
        &content("K0002", "20240502100000", '1'),
        &[("scan.pdf", &pdf)],
    );
    // Hostile and broken files, each in a content folder of its own.
    let xxe = b"<?xml version=\"1.0\"?><!DOCTYPE d [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><ClinicalDocument>&x;</ClinicalDocument>";
    let laughs = b"<!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;\">]><ClinicalDocument>&b;</ClinicalDocument>";
    let truncated = &note[..note.len() / 2];
    let other_patient = String::from_utf8(note.clone())
        .unwrap()
        .replace("0001000052", "0001000099");
    let big = vec![b'%'; 10_000];
    let hostile: [(&str, &[u8]); 6] = [
        ("H01", xxe),
        ("H02", laughs),
        ("H03", truncated),
        ("H04", b""),
        ("H05", other_patient.as_bytes()),
        ("H06", &big),
    ];
    for (key, bytes) in hostile {
        put(
            &root,
            PATIENT,
            "20240502",
            NOTE_TYPE,
            &content(key, "20240502110000", '1'),
            &[("main_document.xml", bytes)],
        );
    }
    // A link to a file outside the storage, and a second version at the same 発生日時.
    let linked = content("H07", "20240502110000", '1');
    put(&root, PATIENT, "20240502", NOTE_TYPE, &linked, &[]);
    std::os::unix::fs::symlink(
        "/etc/passwd",
        root.join(&PATIENT[..3])
            .join(&PATIENT[3..6])
            .join(PATIENT)
            .join("20240502")
            .join(NOTE_TYPE)
            .join(&linked)
            .join("main_document.xml"),
    )
    .unwrap();
    put(
        &root,
        PATIENT,
        "20240502",
        NOTE_TYPE,
        "0001000052_20240502_L12345_K0001_20240503080000000_02_1",
        &[("main_document.xml", &note)],
    );
    // A content folder whose name is not its folders'.
    put(
        &root,
        PATIENT,
        "20240502",
        NOTE_TYPE,
        "9999999999_20240502_L12345_K9_20240502110000_01_1",
        &[("main_document.xml", &note)],
    );
    // Strays: a file in the patient folder, one above the patient folders.
    let patient_folder = root.join(&PATIENT[..3]).join(&PATIENT[3..6]).join(PATIENT);
    std::fs::write(patient_folder.join("memo.txt"), b"stray").unwrap();
    std::fs::write(root.join("README.txt"), b"stray").unwrap();

    let url = format!("sqlite://{}", dir.path().join("tsunagi.db").display());
    let store = Arc::new(
        SqliteStore::open(&url, Arc::new(FixedClock(1_764_000_000_000_000)))
            .await
            .unwrap(),
    );
    let report = pull(&store, &root, 8192).await;
    let reasons: Vec<String> = report
        .rejected
        .iter()
        .map(|rejection| {
            let folder = Path::new(&rejection.source)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            format!("{folder}: {}", rejection.reason)
        })
        .collect();
    let expect = |key: &str, says: &str| {
        assert!(
            reasons
                .iter()
                .any(|reason| reason.contains(key) && reason.contains(says)),
            "{key} refused for {says:?}: {reasons:#?}"
        );
    };
    expect("H01", "DOCTYPE");
    expect("H02", "DOCTYPE");
    expect("H03", "truncated");
    expect("H04", "empty (0 bytes)");
    expect("H05", "not the folder's patient 0001000052");
    expect("H06", "over the limit of 8192");
    expect("9999999999", "does not begin with the patient");
    expect("main_document.xml", "not a regular file");
    expect("K0001_20240503080000000_0", "same 発生日時");
    expect("memo.txt", "a file directly in a patient folder");
    expect("README.txt", "a file directly under the storage root");
    assert_eq!(report.rejected.len(), 12, "{reasons:#?}");
    expect("H07", "the content folder is empty");
    // Three good versions: three DocumentReferences and three Binaries.
    assert_eq!(
        report.created.get("DocumentReference"),
        Some(&3),
        "{report:?}"
    );
    assert_eq!(report.created.get("Binary"), Some(&3), "{report:?}");

    let access = Access::Unrestricted;
    let older_id = format!("{FACILITY}.{PATIENT}.20240502.L12345.K0001.20240502093000123");
    let newer_id = format!("{FACILITY}.{PATIENT}.20240502.L12345.K0001.20240503080000000");
    let older = store
        .read(&access, "DocumentReference", &older_id)
        .await
        .unwrap()
        .unwrap();
    let newer = store
        .read(&access, "DocumentReference", &newer_id)
        .await
        .unwrap()
        .unwrap();
    let json = |stored: &tsunagi_store::StoredResource| -> serde_json::Value {
        serde_json::from_slice(stored.content.as_deref().unwrap()).unwrap()
    };
    assert_eq!(json(&older)["status"], "superseded");
    assert_eq!(json(&newer)["status"], "current");
    assert_eq!(
        json(&newer)["relatesTo"][0]["target"]["reference"],
        format!("DocumentReference/{older_id}")
    );
    assert_eq!(
        json(&newer)["subject"]["reference"],
        format!("Patient/{FACILITY}.{PATIENT}")
    );
    // The bytes, exactly, behind the PDF's Binary.
    let pdf_ref = json(
        &store
            .read(
                &access,
                "DocumentReference",
                &format!("{FACILITY}.{PATIENT}.20240502.L12345.K0002.20240502100000"),
            )
            .await
            .unwrap()
            .unwrap(),
    );
    let attachment = &pdf_ref["content"][0]["attachment"];
    assert_eq!(attachment["contentType"], "application/pdf");
    assert_eq!(attachment["size"], pdf.len());
    let binary_id = attachment["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("Binary/")
        .to_owned();
    let binary = json(
        &store
            .read(&access, "Binary", &binary_id)
            .await
            .unwrap()
            .unwrap(),
    );
    let sha: [u8; 32] = Sha256::digest(&pdf).into();
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(binary["meta"]["tag"][0]["code"], hex);
    assert_eq!(attachment["extension"][0]["valueString"], hex);
    assert_eq!(store.blob(&sha).await.unwrap(), Some(pdf.clone()));

    // Unchanged: skipped unread, and nothing reported again, strays included.
    let again = pull(&store, &root, 8192).await;
    assert_eq!(again.files_read, 0, "{again:?}");
    assert!(again.rejected.is_empty(), "{:#?}", again.rejected);
    assert!(
        again.created.is_empty() && again.updated.is_empty(),
        "{again:?}"
    );

    // A refused file fixed is read on the next pull; a new version supersedes the current one.
    put(
        &root,
        PATIENT,
        "20240502",
        NOTE_TYPE,
        &content("H04", "20240502110000", '1'),
        &[("main_document.xml", &note)],
    );
    put(
        &root,
        PATIENT,
        "20240502",
        NOTE_TYPE,
        &content("K0001", "20240504080000000", '1'),
        &[("main_document.xml", &note)],
    );
    let fixed = pull(&store, &root, 8192).await;
    assert!(
        fixed.rejected.iter().all(|rejection| {
            !rejection.source.contains("H04")
                && !rejection.source.ends_with("memo.txt")
                && !rejection.source.ends_with("README.txt")
        }),
        "the patient read again, its strays not reported again: {fixed:?}"
    );
    assert_eq!(
        fixed.created.get("DocumentReference"),
        Some(&2),
        "{fixed:?}"
    );
    let newer = store
        .read(&access, "DocumentReference", &newer_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(json(&newer)["status"], "superseded");
    // The hostile ones stay refused and unread, and are not reported twice.
    assert!(
        fixed
            .rejected
            .iter()
            .all(|rejection| !rejection.source.contains("H01")),
        "{fixed:?}"
    );
    // A stored version whose file goes bad: refused, and what was stored of the record stays.
    let newest = content("K0001", "20240504080000000", '1');
    put(
        &root,
        PATIENT,
        "20240502",
        NOTE_TYPE,
        &newest,
        &[("main_document.xml", b"<ClinicalDocument")],
    );
    let broken = pull(&store, &root, 8192).await;
    assert!(
        broken
            .rejected
            .iter()
            .any(|r| r.source.contains(&newest) && r.reason.contains("truncated")),
        "{broken:?}"
    );
    assert!(
        broken.deleted.is_empty() && broken.updated.is_empty(),
        "{broken:?}"
    );
    let newest_id = format!("{FACILITY}.{PATIENT}.20240502.L12345.K0001.20240504080000000");
    let kept = store
        .read(&access, "DocumentReference", &newest_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!kept.deleted);
    assert_eq!(json(&kept)["status"], "current");
    let _ = DEFAULT_MAX_DOCUMENT_BYTES;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_synthetic_regions_extended_storage_is_read_without_a_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let report = tsunagi_synth::generate_extended(dir.path(), 60, 7).unwrap();
    assert!(report.files > 60, "{report:?}");
    let url = format!("sqlite://{}", dir.path().join("tsunagi.db").display());
    let store = Arc::new(
        SqliteStore::open(&url, Arc::new(FixedClock(1_764_000_000_000_000)))
            .await
            .unwrap(),
    );
    let mut documents = 0;
    for facility in &report.facilities {
        let pulled = pull_facility(
            &store,
            &facility.code,
            &facility.root,
            DEFAULT_MAX_DOCUMENT_BYTES,
        )
        .await;
        assert!(pulled.rejected.is_empty(), "{:?}", pulled.rejected);
        assert_eq!(pulled.warning_count, 0, "{:?}", pulled.warnings);
        assert_eq!(pulled.files_seen, facility.files);
        documents += pulled
            .created
            .get("DocumentReference")
            .copied()
            .unwrap_or(0);
    }
    assert_eq!(documents, report.files);
    let counts = store.count_current().await.unwrap();
    assert_eq!(counts.get("DocumentReference"), Some(&report.files));
    assert_eq!(counts.get("Binary"), Some(&report.files));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_chart_is_written_as_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let report = tsunagi_synth::generate_extended_with(dir.path(), 6, 3, 8).unwrap();
    let url = format!("sqlite://{}", dir.path().join("tsunagi.db").display());
    let store = Arc::new(
        SqliteStore::open(&url, Arc::new(FixedClock(1_764_000_000_000_000)))
            .await
            .unwrap(),
    );
    // One byte per batch: every record is written on its own, inside its patient.
    for facility in &report.facilities {
        let pulled = pull_with(
            &store,
            &facility.code,
            &facility.root,
            DEFAULT_MAX_DOCUMENT_BYTES,
            1,
        )
        .await;
        assert!(pulled.rejected.is_empty(), "{:?}", pulled.rejected);
    }
    let counts = store.count_current().await.unwrap();
    assert_eq!(counts.get("DocumentReference"), Some(&report.files));
    // And the checkpoints came with the last records: nothing is read again.
    for facility in &report.facilities {
        let again = pull_with(
            &store,
            &facility.code,
            &facility.root,
            DEFAULT_MAX_DOCUMENT_BYTES,
            1,
        )
        .await;
        assert_eq!(again.files_read, 0, "{again:?}");
        assert_eq!(again.files_skipped_unchanged, facility.files);
    }
}
