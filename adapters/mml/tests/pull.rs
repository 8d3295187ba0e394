//! MML exports pulled into a real SQLite store: Homma's synthetic export becomes
//! DocumentReference, Procedure and Binary in the SS-MIX2 chart's Patient; an unchanged folder
//! is skipped unread; every hostile file is refused with its path and reason, changes nothing,
//! and is not read again until it changes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, sync::Arc};

use tsunagi_adapter::{AdapterContext, NoProgress, PullAdapter, PullReport};
use tsunagi_adapter_mml::{DEFAULT_MAX_FILE_BYTES, MmlAdapter, MmlConfig};
use tsunagi_core::{FacilityId, clock::FixedClock};
use tsunagi_store::Store;
use tsunagi_store_sqlite::SqliteStore;

const HOMMA: &str = "0610300016";

async fn store(dir: &Path) -> Arc<SqliteStore> {
    let url = format!("sqlite://{}", dir.join("t.db").display());
    Arc::new(
        SqliteStore::open(&url, Arc::new(FixedClock(1_764_000_000_000_000)))
            .await
            .unwrap(),
    )
}

async fn pull(store: &Arc<SqliteStore>, root: &Path, max: u64) -> PullReport {
    let adapter = MmlAdapter::new(MmlConfig {
        facility: FacilityId::parse(HOMMA).unwrap(),
        name: None,
        roots: vec![root.to_owned()],
        batch_resources: 50,
        max_file_bytes: max,
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
async fn a_synthetic_export_joins_the_ss_mix2_chart() {
    let dir = tempfile::tempdir().unwrap();
    let generated = tsunagi_synth::generate_mml(dir.path(), 40, 7).unwrap();
    assert!(generated.files > 0);
    let store = store(dir.path()).await;
    let report = pull(&store, &generated.root, DEFAULT_MAX_FILE_BYTES).await;
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(report.files_read, generated.files);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    for kind in ["DocumentReference", "Procedure", "Binary"] {
        assert!(
            report.created.get(kind).copied().unwrap_or(0) > 0,
            "{kind}: {:?}",
            report.created
        );
    }
    // The first chart's patient id is the one Homma's SS-MIX2 storage uses for that person.
    let region = tempfile::tempdir().unwrap();
    tsunagi_synth::generate_region(region.path(), 40, 7).unwrap();
    let first = std::fs::read_dir(&generated.root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .min()
        .unwrap();
    let chart = region
        .path()
        .join(HOMMA)
        .join(&first[..3])
        .join(&first[3..6])
        .join(&first);
    assert!(chart.is_dir(), "{}", chart.display());
    let patient = tsunagi_core::ids::logical_id(&[HOMMA, &first]);
    let documents = store
        .find_by_reference(
            "DocumentReference",
            "patient",
            &format!("Patient/{patient}"),
        )
        .await
        .unwrap();
    assert!(!documents.is_empty(), "{patient} holds the MML documents");
    let procedures = store
        .find_by_reference("Procedure", "patient", &format!("Patient/{patient}"))
        .await
        .unwrap();
    assert!(!procedures.is_empty(), "the first chart has a surgery");
    // Unchanged: nothing is read again.
    let again = pull(&store, &generated.root, DEFAULT_MAX_FILE_BYTES).await;
    assert_eq!(again.files_read, 0);
    assert_eq!(again.files_skipped_unchanged, generated.files);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_files_are_refused_once_until_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("export");
    std::fs::create_dir_all(root.join("p")).unwrap();
    let good = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mml/referral.xml"),
    )
    .unwrap();
    let text = String::from_utf8(good.clone()).unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "p/doctype.xml",
            text.replacen(
                "<Mml ",
                "<!DOCTYPE Mml [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><Mml ",
                1,
            )
            .into_bytes(),
        ),
        ("p/empty.xml", Vec::new()),
        ("p/truncated.xml", good[..good.len() / 3].to_vec()),
        (
            "p/other-patient.xml",
            text.replacen("              00010003\n", "              00099999\n", 1)
                .into_bytes(),
        ),
        (
            "p/big.xml",
            text.replacen("いつもお世話になっております。", &"あ".repeat(40_000), 1)
                .into_bytes(),
        ),
        ("p/good.xml", good.clone()),
        (
            "p/twice.xml",
            text.replacen(
                "<MmlModuleItem>",
                &format!(
                    "<MmlModuleItem>{}</MmlModuleItem>\n    <MmlModuleItem>",
                    &text[text.find("<MmlModuleItem>").unwrap() + "<MmlModuleItem>".len()
                        ..text.find("</MmlModuleItem>").unwrap()]
                ),
                1,
            )
            .into_bytes(),
        ),
    ];
    for (name, bytes) in &files {
        std::fs::write(root.join(name), bytes).unwrap();
    }
    std::os::unix::fs::symlink("/etc/passwd", root.join("p/link.xml")).unwrap();
    let store = store(dir.path()).await;
    let max = (good.len() * 4) as u64;
    let report = pull(&store, &root, max).await;
    let reasons: Vec<(String, String)> = report
        .rejected
        .iter()
        .map(|r| {
            (
                r.source.rsplit('/').next().unwrap().to_owned(),
                r.reason.clone(),
            )
        })
        .collect();
    let reason = |name: &str| {
        reasons
            .iter()
            .find(|(file, _)| file == name)
            .map(|(_, reason)| reason.clone())
            .unwrap_or_else(|| panic!("{name} not refused: {reasons:?}"))
    };
    assert!(reason("doctype.xml").contains("DOCTYPE"));
    assert!(reason("empty.xml").contains("empty"));
    assert!(reason("truncated.xml").contains("XML"));
    assert!(reason("other-patient.xml").contains("00099999"));
    assert!(reason("big.xml").contains("max_file_bytes"));
    assert!(reason("link.xml").contains("link"));
    assert!(reason("twice.xml").contains("twice"));
    assert_eq!(reasons.len(), 7, "{reasons:?}");
    // Only the good file was written.
    assert_eq!(report.created.get("DocumentReference"), Some(&1));
    assert_eq!(report.created.get("Binary"), Some(&1));
    // Again: refused files and the link are neither read nor reported again.
    let again = pull(&store, &root, max).await;
    assert_eq!(again.files_read, 0);
    assert!(again.rejected.is_empty(), "{:?}", again.rejected);
    // A refused file, repaired, is read.
    std::fs::write(
        root.join("p/empty.xml"),
        text.replace(
            "9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a49",
            "0123456789abcdef0123456789abcdef",
        ),
    )
    .unwrap();
    let repaired = pull(&store, &root, max).await;
    assert_eq!(repaired.files_read, 1);
    assert_eq!(repaired.created.get("DocumentReference"), Some(&1));
}

/// Files of `root`: (name, fixture, uid it gets, uid of the edition it revises).
fn editions(root: &Path, files: &[(&str, &str, &str, Option<&str>)]) {
    std::fs::create_dir_all(root).unwrap();
    for (name, fixture, uid, revises) in files {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/mml")
                .join(fixture),
        )
        .unwrap();
        // Every fixture's docId is `<uid>[<parentId …>]</docId>`: replaced whole.
        let start = text.find("<docId>").unwrap();
        let end = text.find("</docId>").unwrap() + "</docId>".len();
        let parent = revises
            .map(|older| format!("<parentId relation=\"oldEdition\">{older}</parentId>"))
            .unwrap_or_default();
        let text = format!(
            "{}<docId><uid>{uid}</uid>{parent}</docId>{}",
            &text[..start],
            &text[end..]
        );
        std::fs::write(root.join(name), text).unwrap();
    }
}

async fn status_of(store: &Arc<SqliteStore>, uid: &str) -> Option<String> {
    let id = tsunagi_mapping::mml::document_id(HOMMA, "00010003", uid);
    store
        .read(
            &tsunagi_store::Access::Unrestricted,
            "DocumentReference",
            &id,
        )
        .await
        .unwrap()
        .map(|stored| {
            stored.to_json().unwrap().unwrap()["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
}

async fn procedures(store: &Arc<SqliteStore>) -> usize {
    let patient = tsunagi_core::ids::logical_id(&[HOMMA, "00010003"]);
    store
        .find_by_reference("Procedure", "patient", &format!("Patient/{patient}"))
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_later_edition_revises_the_older_whichever_file_comes_first() {
    // Read in two pulls, the older edition first.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("export");
    let first = store(dir.path()).await;
    editions(
        &root,
        &[
            ("a-note.xml", "progress-course.xml", "note1", None),
            ("a-surgery.xml", "surgery.xml", "surgery1", None),
        ],
    );
    pull(&first, &root, DEFAULT_MAX_FILE_BYTES).await;
    assert_eq!(status_of(&first, "note1").await.as_deref(), Some("current"));
    assert_eq!(procedures(&first).await, 1);
    editions(
        &root,
        &[
            ("b-note.xml", "progress-course.xml", "note2", Some("note1")),
            ("b-surgery.xml", "surgery.xml", "surgery2", Some("surgery1")),
        ],
    );
    let report = pull(&first, &root, DEFAULT_MAX_FILE_BYTES).await;
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(
        status_of(&first, "note1").await.as_deref(),
        Some("superseded")
    );
    assert_eq!(status_of(&first, "note2").await.as_deref(), Some("current"));
    // The revised surgery's procedure is gone (history kept); the revision's stands.
    assert_eq!(procedures(&first).await, 1);

    // Read in one pull, the newer edition's file first (names sort so): the same outcome.
    let other = tempfile::tempdir().unwrap();
    let root = other.path().join("export");
    let second = store(other.path()).await;
    editions(
        &root,
        &[
            ("a-note.xml", "progress-course.xml", "note2", Some("note1")),
            ("a-surgery.xml", "surgery.xml", "surgery2", Some("surgery1")),
            ("b-note.xml", "progress-course.xml", "note1", None),
            ("b-surgery.xml", "surgery.xml", "surgery1", None),
        ],
    );
    pull(&second, &root, DEFAULT_MAX_FILE_BYTES).await;
    assert_eq!(
        status_of(&second, "note1").await.as_deref(),
        Some("superseded")
    );
    assert_eq!(
        status_of(&second, "note2").await.as_deref(),
        Some("current")
    );
    assert_eq!(procedures(&second).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn editions_are_the_patients_own_and_cycles_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("export");
    let store = store(dir.path()).await;
    // A module revising itself, and two revising each other: nothing is revised.
    editions(
        &root,
        &[
            ("a.xml", "progress-course.xml", "self1", Some("self1")),
            ("b.xml", "progress-course.xml", "loop1", Some("loop2")),
            ("c.xml", "progress-course.xml", "loop2", Some("loop1")),
        ],
    );
    let report = pull(&store, &root, DEFAULT_MAX_FILE_BYTES).await;
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(status_of(&store, "self1").await.as_deref(), Some("current"));
    // The first read of the pair (b.xml: loop1 revises loop2) stands; the second closes the
    // cycle and is reported, not followed.
    assert_eq!(
        status_of(&store, "loop2").await.as_deref(),
        Some("superseded")
    );
    assert_eq!(status_of(&store, "loop1").await.as_deref(), Some("current"));
    assert!(
        report
            .warnings
            .iter()
            .filter(|w| w.contains("ignored"))
            .count()
            >= 2,
        "{:?}",
        report.warnings
    );
    // Another patient's module naming this patient's uid as its older edition revises nothing
    // of this patient's, now or when this patient's file is read again.
    editions(&root, &[("d.xml", "progress-course.xml", "mine", None)]);
    editions(
        &root,
        &[("e.xml", "progress-course.xml", "theirs", Some("mine"))],
    );
    let theirs = std::fs::read_to_string(root.join("e.xml"))
        .unwrap()
        .replace(
            ">00010003</mmlCm:Id></masterId>",
            ">00099999</mmlCm:Id></masterId>",
        );
    std::fs::write(root.join("e.xml"), theirs).unwrap();
    let again = pull(&store, &root, DEFAULT_MAX_FILE_BYTES).await;
    assert!(again.rejected.is_empty(), "{:?}", again.rejected);
    assert_eq!(status_of(&store, "mine").await.as_deref(), Some("current"));
    let file = std::fs::File::options()
        .append(true)
        .open(root.join("d.xml"))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    let reread = pull(&store, &root, DEFAULT_MAX_FILE_BYTES).await;
    assert_eq!(reread.files_read, 1);
    assert_eq!(status_of(&store, "mine").await.as_deref(), Some("current"));
}
