//! A database written by schema 1 (before patient compartments) opens with this build: it is
//! migrated to schema 2 and re-indexed, and patient-scoped searches then find its data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use serde_json::json;
use sqlx::{Connection, SqliteConnection};
use tsunagi_core::clock::FixedClock;
use tsunagi_fhir::query::SearchQuery;
use tsunagi_store::{Store, governance::Governance};
use tsunagi_store_sqlite::SqliteStore;

const SCHEMA_1: &str = include_str!("../migrations/0001_initial.sql");

#[tokio::test]
async fn a_schema_1_database_is_migrated_and_reindexed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let url = format!("sqlite://{}", path.display());
    {
        let mut old = SqliteConnection::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        sqlx::raw_sql(SCHEMA_1).execute(&mut old).await.unwrap();
        sqlx::query("INSERT INTO store_meta (key, value) VALUES ('schema_version', '1'), ('registry_version', '2')")
            .execute(&mut old)
            .await
            .unwrap();
        let rows = [
            (
                1,
                "Patient",
                "p1",
                json!({"resourceType": "Patient", "id": "p1", "gender": "female"}),
            ),
            (
                2,
                "Observation",
                "o1",
                json!({"resourceType": "Observation", "id": "o1", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-01-02"}),
            ),
            (
                3,
                "Observation",
                "o2",
                json!({"resourceType": "Observation", "id": "o2", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                "subject": {"reference": "Patient/p2"}, "effectiveDateTime": "2024-01-03"}),
            ),
        ];
        for (rid, resource_type, id, content) in rows {
            sqlx::query("INSERT INTO resources (rid, tid, type, id, version, last_updated, deleted, source_key, hash, content) VALUES (?, ?, ?, ?, 1, 1700000000000000, 0, 'old', 0, ?)")
                .bind(rid)
                .bind(format!("{resource_type}/{id}"))
                .bind(resource_type)
                .bind(id)
                .bind(serde_json::to_vec(&content).unwrap())
                .execute(&mut old)
                .await
                .unwrap();
        }
        old.close().await.unwrap();
    }
    let store = SqliteStore::open(&url, Arc::new(FixedClock(1_700_000_000_000_000)))
        .await
        .unwrap();
    let query = |pairs: &[(&str, &str)]| {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        SearchQuery::parse("Observation", &pairs, 1_700_000_000, true).unwrap()
    };
    let by_patient = store
        .search(
            &tsunagi_store::Access::Unrestricted,
            &query(&[("patient", "p1"), ("code", "http://loinc.org|718-7")]),
        )
        .await
        .unwrap();
    assert_eq!(by_patient.len(), 1);
    let fetched = store
        .fetch(&tsunagi_store::Access::Unrestricted, &by_patient)
        .await
        .unwrap();
    assert_eq!(fetched[0].id, "o1");
    assert_eq!(
        store
            .search(
                &tsunagi_store::Access::Unrestricted,
                &query(&[("code", "718-7")])
            )
            .await
            .unwrap()
            .len(),
        2
    );
    let compartment = store
        .compartment(&tsunagi_store::Access::Unrestricted, "p1", &[], None)
        .await
        .unwrap();
    assert_eq!(compartment.len(), 2, "the patient and its observation");
    drop(store);
    // Opening again changes nothing.
    let again = SqliteStore::open(&url, Arc::new(FixedClock(1_700_000_000_000_000)))
        .await
        .unwrap();
    assert_eq!(
        again
            .search(
                &tsunagi_store::Access::Unrestricted,
                &query(&[("patient", "Patient/p2")])
            )
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A schema-4 database (facilities, participants and consents without FHIR resources) gains
/// their projections when it is opened by this build.
#[tokio::test]
async fn a_schema_4_database_gets_its_directory_and_consents_as_resources() {
    use tsunagi_store::{Access, Store};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("v4.db").display());
    let clock = Arc::new(FixedClock(1_700_000_000_000_000));
    drop(SqliteStore::open(&url, clock.clone()).await.unwrap());
    {
        // Turn it back into schema 4: records written by raw SQL, as schema 4 did, and no
        // migration table (builds of schema 4 kept the version in `store_meta` only).
        let mut old = SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO facilities (code, name, kind, created_at) VALUES ('0610100010', '荘内病院', 'hospital', 0); \
             INSERT INTO participants (id, name, facility, role, active, created_at) VALUES ('dr', 'dr', '0610100010', 'doctor', 1, 0); \
             DROP INDEX audit_id; DROP INDEX audit_facility; \
             ALTER TABLE audit DROP COLUMN id; ALTER TABLE audit DROP COLUMN facility; DROP TABLE messages; DROP TABLE outbox; \
             ALTER TABLE clients DROP COLUMN serves; ALTER TABLE facilities DROP COLUMN active; DROP TABLE revocations; DROP TABLE lab_reports; DROP TABLE blob_parts; DROP TABLE blobs; DROP TABLE idx_text_fts; DROP TABLE idx_text; DROP TABLE pull_holds; DROP TABLE search_snapshots; DROP TABLE search_snapshot_keys; \
             UPDATE store_meta SET value = '4' WHERE key = 'schema_version'; DROP TABLE _sqlx_migrations;",
        )
        .execute(&mut old)
        .await
        .unwrap();
    }
    let store = SqliteStore::open(&url, clock).await.unwrap();
    for (resource_type, id) in [
        ("Organization", "0610100010"),
        ("Practitioner", "dr"),
        ("PractitionerRole", "dr"),
    ] {
        assert!(
            store
                .read(&Access::Unrestricted, resource_type, id)
                .await
                .unwrap()
                .is_some(),
            "{resource_type}/{id}"
        );
    }
    // Schema 8: facilities written before it are active; nothing is revoked.
    use tsunagi_store::Governance;
    assert!(store.facilities().await.unwrap()[0].active);
    let standing = store
        .token_standing(&tsunagi_store::governance::TokenFacts {
            token_id: "t".into(),
            subject: "dr".into(),
            client: "operator".into(),
            facility: "0610100010".into(),
            user: true,
            issued_at: 0,
        })
        .await
        .unwrap();
    assert!(standing.facility_active && !standing.revoked && standing.user.is_some());
}

/// A database with a migration this build does not know (written by a newer build) is refused
/// by name, not opened and not changed.
#[tokio::test]
async fn a_database_of_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("new.db").display());
    let clock = Arc::new(FixedClock(1_700_000_000_000_000));
    // A node serving it sees its schema is this build's, then a newer node's migration.
    let serving = SqliteStore::open(&url, clock.clone()).await.unwrap();
    assert_eq!(serving.schema_status().await.unwrap(), None);
    {
        let mut newer = SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', 1, x'00', 0)",
        )
        .execute(&mut newer)
        .await
        .unwrap();
    }
    let said = serving.schema_status().await.unwrap().unwrap();
    assert!(said.contains("9999") && said.contains("newer"), "{said}");
    drop(serving);
    let refused = SqliteStore::open(&url, clock)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        refused.contains("9999") && refused.contains("newer"),
        "{refused}"
    );
}

/// A reindex (after a search-registry change) rebuilds the words of `_content` too: the FTS5
/// index follows the rows its triggers see deleted and inserted.
#[tokio::test]
async fn a_reindex_refills_the_words() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = SqliteStore::open(&url, Arc::new(FixedClock(1_700_000_000_000_000)))
        .await
        .unwrap();
    tsunagi_store::conformance_text::load_words(&store).await;
    assert!(tsunagi_store::conformance_text::words_are_found(&store).await);
    store.reindex().await.unwrap();
    assert!(tsunagi_store::conformance_text::words_are_found(&store).await);
}

/// A schema-11 database kept each document's bytes in one `blobs` row: schema 12 cuts them
/// into parts, and every byte reads back the same.
#[tokio::test]
async fn a_schema_11_blob_is_cut_into_parts() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("v11.db").display());
    let clock = Arc::new(FixedClock(1_700_000_000_000_000));
    drop(SqliteStore::open(&url, clock.clone()).await.unwrap());
    let part = tsunagi_store::BLOB_PART_BYTES;
    let (large, small, empty) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    let bytes: Vec<u8> = (0..part * 2 + 7).map(|n| (n % 241) as u8).collect();
    {
        // Back to schema 11: whole contents in `blobs.bytes`, no parts.
        let mut old = SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "DROP TABLE blob_parts; ALTER TABLE blobs ADD COLUMN bytes BLOB NOT NULL DEFAULT x''; \
             DELETE FROM _sqlx_migrations WHERE version = 12;",
        )
        .execute(&mut old)
        .await
        .unwrap();
        for (sha, content) in [
            (large, bytes.clone()),
            (small, b"<ClinicalDocument/>".to_vec()),
            (empty, Vec::new()),
        ] {
            sqlx::query("INSERT INTO blobs (sha256, size, bytes) VALUES (?1, ?2, ?3)")
                .bind(sha.as_slice())
                .bind(content.len() as i64)
                .bind(content)
                .execute(&mut old)
                .await
                .unwrap();
        }
    }
    let store = SqliteStore::open(&url, clock).await.unwrap();
    assert_eq!(store.blob(&large).await.unwrap(), Some(bytes));
    assert_eq!(
        store.blob_part(&large, part as u64 * 2).await.unwrap(),
        Some((
            part as u64 * 2,
            (0..7).map(|n| ((part * 2 + n) % 241) as u8).collect()
        ))
    );
    assert_eq!(
        store.blob(&small).await.unwrap(),
        Some(b"<ClinicalDocument/>".to_vec())
    );
    assert_eq!(store.blob(&empty).await.unwrap(), Some(Vec::new()));
}
