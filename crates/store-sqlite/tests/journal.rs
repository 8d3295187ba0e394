//! The audit journal (crates/store-sqlite/src/journal.rs) over real files: records appended by a
//! journaling process are seen by every reader of the trail, in this process or another,
//! exactly once; a restart after a crash keeps every complete record and drops a frame cut
//! short; imported generations are deleted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{io::Write, sync::Arc};

use tsunagi_core::clock::FixedClock;
use tsunagi_store::governance::{AuditFilter, AuditRecord, Governance, ListedAudit};
use tsunagi_store_sqlite::SqliteStore;

const NOW: i64 = 1_700_000_000_000_000;

fn record(n: i64) -> AuditRecord {
    AuditRecord {
        id: format!("a{n}"),
        recorded: NOW + n,
        patient: Some(format!("p{}", n % 2)),
        facility: Some("0610100010".into()),
        event: format!(r#"{{"resourceType":"AuditEvent","id":"a{n}"}}"#).into_bytes(),
    }
}

fn journal_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".audit-"))
        .collect();
    names.sort();
    names
}

/// The ten newest records of the trail.
async fn newest_ten(store: &SqliteStore) -> Vec<ListedAudit> {
    store
        .audit(&AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
}

fn ids(listed: &[ListedAudit]) -> Vec<&str> {
    listed.iter().map(|l| l.record.id.as_str()).collect()
}

async fn open(url: &str) -> SqliteStore {
    SqliteStore::open(url, Arc::new(FixedClock(NOW)))
        .await
        .unwrap()
}

#[tokio::test]
async fn journaled_records_are_read_once_by_every_process_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let server = open(&url).await;
    server.journal_audit().await.unwrap();
    server
        .append_audit(&[record(1), record(2), record(3)])
        .await
        .unwrap();
    assert_eq!(journal_files(dir.path()), vec!["t.db.audit-1"]);

    // Another process (the operator's CLI) reads the trail: it imports the journal first.
    let operator = open(&url).await;
    assert_eq!(operator.audit_count().await.unwrap(), 3);
    // The server reading too imports nothing twice.
    assert_eq!(server.audit_count().await.unwrap(), 3);
    server.append_audit(&[record(4), record(5)]).await.unwrap();
    let newest = newest_ten(&operator).await;
    assert_eq!(ids(&newest), vec!["a5", "a4", "a3", "a2", "a1"]);
    assert_eq!(newest[0].record, record(5));

    // The server appends one more and dies in the middle of a further write.
    server.append_audit(&[record(6)]).await.unwrap();
    drop(server);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("t.db.audit-1"))
        .unwrap();
    file.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(file);

    // The restarted server keeps every complete record, drops the cut frame, and appends to a
    // new generation; the old one is deleted once imported.
    let restarted = open(&url).await;
    restarted.journal_audit().await.unwrap();
    assert_eq!(restarted.audit_count().await.unwrap(), 6);
    restarted.append_audit(&[record(7)]).await.unwrap();
    assert_eq!(operator.audit_count().await.unwrap(), 7);
    assert_eq!(journal_files(dir.path()), vec!["t.db.audit-2"]);
    // Records imported from the journal are as append-only as any.
    let mut connection = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    assert!(
        sqlx::query("DELETE FROM audit")
            .execute(&mut connection)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn without_journaling_records_are_inserted_directly() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = open(&url).await;
    store.append_audit(&[record(1)]).await.unwrap();
    assert!(journal_files(dir.path()).is_empty());
    assert_eq!(store.audit_count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_full_journal_file_rotates_and_imported_generations_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let server = open(&url).await;
    // Each record's frame is over 50 bytes: every append fills a file.
    server.journal_audit_rotating_at(50).await.unwrap();
    for n in 1..=3 {
        server.append_audit(&[record(n)]).await.unwrap();
    }
    // Generations 1–3 are full; appends now go to an empty generation 4.
    assert_eq!(
        journal_files(dir.path()),
        vec![
            "t.db.audit-1",
            "t.db.audit-2",
            "t.db.audit-3",
            "t.db.audit-4"
        ]
    );
    // A reader imports all three full files, in order, and they are deleted.
    let listed = newest_ten(&open(&url).await).await;
    assert_eq!(ids(&listed), vec!["a3", "a2", "a1"]);
    assert_eq!(journal_files(dir.path()), vec!["t.db.audit-4"]);
    // Appending and importing go on in the new generation, nothing twice.
    server.append_audit(&[record(4)]).await.unwrap();
    assert_eq!(server.audit_count().await.unwrap(), 4);
    assert_eq!(open(&url).await.audit_count().await.unwrap(), 4);
}
