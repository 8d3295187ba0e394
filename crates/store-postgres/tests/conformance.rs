//! The shared store conformance suite against a real PostgreSQL server
//! (`TSUNAGI_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`, as on CI
//! machines). Each test runs in its own schema, named after its process (nextest runs every
//! test in a process of its own); schemas of processes that have ended are dropped first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use sqlx::Connection;
use tsunagi_core::clock::FixedClock;
use tsunagi_store_postgres::{PostgresEngine, PostgresStore};

const PREFIX: &str = "tsunagi_t_";

fn url() -> String {
    std::env::var("TSUNAGI_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Drops the schemas of test processes that no longer run.
async fn drop_stale_schemas() {
    let mut connection = sqlx::PgConnection::connect(&url())
        .await
        .expect("PostgreSQL at TSUNAGI_TEST_POSTGRES (default 127.0.0.1:5432, database test)");
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tsunagi\\_t\\_%'",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    for schema in schemas {
        let pid = schema
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            // Another test process may be dropping it too.
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut connection)
            .await;
        }
    }
}

/// A new, empty schema of its own (named after this process).
async fn new_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    drop_stale_schemas().await;
    let schema = format!(
        "{PREFIX}{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut connection = sqlx::PgConnection::connect(&url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut connection)
    .await
    .unwrap();
    schema
}

async fn open(schema: &str) -> Result<PostgresStore, tsunagi_store::StoreError> {
    let engine = PostgresEngine::connect_in_schema(
        &url(),
        Some(schema),
        Arc::new(FixedClock(1_700_000_000_000_000)),
    )
    .await?;
    PostgresStore::with_engine(engine).await
}

async fn fresh() -> PostgresStore {
    open(&new_schema().await).await.unwrap()
}

/// Runs `sql` inside `schema`, as an operator (or an older build) would.
async fn run_in(schema: &str, sql: &str) {
    let mut connection = sqlx::PgConnection::connect(&url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET search_path TO {schema}; {sql}"
    )))
    .execute(&mut connection)
    .await
    .unwrap();
}

/// A database indexed by another search registry is reindexed when opened: index rows and
/// compartments are rebuilt from stored content, and the registry version recorded.
#[tokio::test]
async fn a_database_of_another_search_registry_is_reindexed() {
    use tsunagi_store::{Access, Batch, Operation, ResourceWrite, Store};
    let schema = new_schema().await;
    let store = open(&schema).await.unwrap();
    let patient = serde_json::json!({"resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11234567890", "value": "0001"}]});
    let observation = serde_json::json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "urn:oid:1.2.392.200119.4.504", "code": "3A010000002327101"}]},
        "subject": {"reference": "Patient/p1"}});
    store
        .apply(Batch {
            operations: vec![Operation::ReplaceSource {
                source_key: "test:1".into(),
                facility: "1234567890".into(),
                resources: vec![
                    ResourceWrite::from_json("Patient", "p1", &patient).unwrap(),
                    ResourceWrite::from_json("Observation", "o1", &observation).unwrap(),
                ],
            }],
        })
        .await
        .unwrap();
    let found = || async {
        let store = open(&schema).await.unwrap();
        let by_code = store
            .find_by_token("Observation", "code", None, "3A010000002327101")
            .await
            .unwrap();
        let by_subject = store
            .find_by_reference("Observation", "subject", "Patient/p1")
            .await
            .unwrap();
        let everything = store
            .compartment(&Access::Unrestricted, "p1", &[], None)
            .await
            .unwrap();
        // The holding facility still sees its patient's rows; another facility does not.
        let holder = Access::Facility {
            code: "1234567890".into(),
            at: 1_700_000_000_000_000,
        };
        let stranger = Access::Facility {
            code: "0987654321".into(),
            at: 1_700_000_000_000_000,
        };
        let seen = (
            store
                .read(&holder, "Observation", "o1")
                .await
                .unwrap()
                .is_some(),
            store
                .read(&stranger, "Observation", "o1")
                .await
                .unwrap()
                .is_some(),
        );
        (by_code, by_subject, everything.len(), seen)
    };
    let before = found().await;
    assert_eq!(before.0, vec!["o1".to_owned()]);
    assert_eq!(before.1, vec!["o1".to_owned()]);
    assert_eq!(before.2, 2);
    assert_eq!(before.3, (true, false));
    drop(store);
    // As an older build left it: other index rows (here none) and an older registry.
    run_in(
        &schema,
        "DELETE FROM idx_token; DELETE FROM idx_reference; DELETE FROM idx_string; \
         UPDATE resources SET pat = 0; UPDATE store_meta SET value = '0' WHERE key = 'registry'",
    )
    .await;
    assert_eq!(found().await, before);
    let mut connection = sqlx::PgConnection::connect(&url()).await.unwrap();
    let registry: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT value FROM {schema}.store_meta WHERE key = 'registry'"
    )))
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert_eq!(registry, tsunagi_fhir::search::REGISTRY_VERSION.to_string());
}

/// Migrations are files applied once: a database of the builds before them (schema recorded
/// only in `store_meta`) is taken over without running what it has, and one with a migration
/// this build does not know is refused by name.
#[tokio::test]
async fn a_reindex_refills_the_words() {
    let store = fresh().await;
    tsunagi_store::conformance_text::load_words(&store).await;
    assert!(tsunagi_store::conformance_text::words_are_found(&store).await);
    store.reindex().await.unwrap();
    assert!(tsunagi_store::conformance_text::words_are_found(&store).await);
}

#[tokio::test]
async fn migrations_take_over_older_databases_and_refuse_newer_ones() {
    let schema = new_schema().await;
    drop(open(&schema).await.unwrap());
    // A schema-4 database of a build before migration files: no migration table, no lab list.
    run_in(
        &schema,
        "DROP TABLE _sqlx_migrations; DROP TABLE lab_reports; DROP TABLE blob_parts; DROP TABLE blobs; DROP TABLE idx_text; DROP TABLE pull_holds; \
         DROP TABLE search_snapshots; DROP TABLE search_snapshot_keys; \
         ALTER TABLE outbox DROP COLUMN lease_owner, DROP COLUMN lease_until, DROP COLUMN fence; \
         UPDATE store_meta SET value = '4' WHERE key = 'schema'",
    )
    .await;
    let store = open(&schema).await.unwrap();
    use tsunagi_store::Governance;
    assert_eq!(
        store.lab_reports_for("x").await.unwrap(),
        Vec::<String>::new()
    );
    drop(store);
    run_in(
        &schema,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, '\\x00', 0)",
    )
    .await;
    let refused = open(&schema).await.err().unwrap().to_string();
    assert!(
        refused.contains("9999") && refused.contains("newer"),
        "{refused}"
    );
}

/// A schema-7 database kept each document's bytes in one `blobs` row: schema 8 cuts them into
/// parts, and every byte reads back the same.
#[tokio::test]
async fn a_schema_7_blob_is_cut_into_parts() {
    let schema = new_schema().await;
    drop(open(&schema).await.unwrap());
    run_in(
        &schema,
        "DROP TABLE blob_parts; ALTER TABLE blobs ADD COLUMN bytes BYTEA NOT NULL DEFAULT ''::bytea; \
         DELETE FROM _sqlx_migrations WHERE version = 8; \
         INSERT INTO blobs (sha256, size, bytes) SELECT decode(repeat('01', 32), 'hex'), length(b), b \
           FROM (SELECT decode(repeat('0102', 1048580), 'hex') AS b) AS content; \
         INSERT INTO blobs (sha256, size, bytes) VALUES (decode(repeat('02', 32), 'hex'), 0, ''::bytea)",
    )
    .await;
    let store = open(&schema).await.unwrap();
    use tsunagi_store::Store;
    let expected: Vec<u8> = [1u8, 2].repeat(1_048_580);
    let part = tsunagi_store::BLOB_PART_BYTES as u64;
    assert_eq!(
        store
            .blob_part(&[1; 32], part * 2)
            .await
            .unwrap()
            .unwrap()
            .0,
        part * 2
    );
    assert_eq!(store.blob(&[1; 32]).await.unwrap(), Some(expected));
    assert_eq!(store.blob(&[2; 32]).await.unwrap(), Some(Vec::new()));
}

/// Schema 11: a resource's JSON large enough to be compressed is compressed with LZ4 (this
/// server has it), and is read back whole.
#[tokio::test]
async fn large_resources_are_compressed_with_lz4() {
    use tsunagi_store::{Access, Batch, Operation, ResourceWrite, Store};
    let schema = new_schema().await;
    let store = open(&schema).await.unwrap();
    let text = "経過良好。".repeat(400);
    let note = serde_json::json!({"resourceType": "Communication", "id": "c1",
        "status": "completed", "payload": [{"contentString": text}]});
    store
        .apply(Batch {
            operations: vec![Operation::ReplaceSource {
                source_key: "test:note".into(),
                facility: "1234567890".into(),
                resources: vec![ResourceWrite::from_json("Communication", "c1", &note).unwrap()],
            }],
        })
        .await
        .unwrap();
    let mut connection = sqlx::PgConnection::connect(&url()).await.unwrap();
    let (method, stored, whole): (Option<String>, i32, i32) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT pg_column_compression(content), pg_column_size(content), length(content) \
             FROM {schema}.resources WHERE tid = 'Communication/c1'"
        )))
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(method.as_deref(), Some("lz4"));
    assert!(stored * 4 < whole, "{stored} of {whole} bytes");
    let read = store
        .read(&Access::Unrestricted, "Communication", "c1")
        .await
        .unwrap()
        .unwrap();
    let json = read.to_json().unwrap().unwrap();
    assert_eq!(json["payload"][0]["contentString"], text.as_str());
}

/// A node name's hold lives in a database session: when the session ends (a restart, a dropped
/// connection), the hold says so, and another process may take the name.
#[tokio::test]
async fn a_node_name_held_by_a_session_that_ended_is_known_lost() {
    use tsunagi_store::Outbox;
    let schema = new_schema().await;
    let store = open(&schema).await.unwrap();
    let mut hold = store.hold_node("gw-check").await.unwrap().unwrap();
    assert!(hold.still_held().await);
    assert!(store.hold_node("gw-check").await.unwrap().is_none());
    let mut connection = sqlx::PgConnection::connect(&url()).await.unwrap();
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_locks \
         WHERE locktype = 'advisory' AND objsubid = 2 AND classid = 1951616580::oid \
         AND objid = ((hashtext($1)::bigint + 4294967296) % 4294967296)::oid",
    )
    .bind(format!("{schema}:gw-check"))
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert_eq!(ended, 1);
    assert!(!hold.still_held().await);
    let mut taken = None;
    for _ in 0..100 {
        taken = store.hold_node("gw-check").await.unwrap();
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(taken.unwrap().still_held().await);
}

tsunagi_store::store_conformance_suite!(fresh());

tsunagi_store::store_access_suite!(fresh());

/// A NUL bound as text (PostgreSQL's text cannot hold U+0000) is the request's fault: an
/// `Invalid` error (400 at the edge), not a database failure (500). The API refuses it in
/// search values before; other lookups reach the database with it.
#[tokio::test]
async fn a_nul_bound_as_text_is_an_invalid_request() {
    use tsunagi_store::{Access, Store, StoreError};
    let store = fresh().await;
    let error = store
        .read(&Access::Unrestricted, "Patient", "p\u{0}1")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Invalid(message) if message.contains("cannot store")),
        "{error:?}"
    );
}

/// Connections kept between statements (`tsunagi_store_sql::hot`): a read finds one even when
/// everything else of the pool is taken, and connections the server ended while they were kept
/// (a restart, a proxy's idle timeout) are replaced once idle, so the next read succeeds.
#[tokio::test]
async fn kept_connections_serve_reads_and_are_replaced_when_the_server_ended_them() {
    use tsunagi_store::{Access, Store};
    use tsunagi_store_sql::{Engine, stmt};
    let store = Arc::new(fresh().await);
    let connections = store.engine().reader();
    // Eight at once: the backends of the pool's connections, up to four of them kept after.
    let backends = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let row = stmt("SELECT pg_backend_pid() AS pid, pg_sleep(0.05)")
                .fetch_one_in(store.engine().reader())
                .await
                .unwrap();
            sqlx::Row::get::<i32, _>(&row, "pid")
        })
    });
    let mut pids = Vec::new();
    for backend in backends.collect::<Vec<_>>() {
        pids.push(backend.await.unwrap());
    }

    // The rest of the pool taken: a read still gets a kept connection.
    let mut taken = Vec::new();
    for _ in 0..4 {
        taken.push(connections.pool().acquire().await.unwrap());
    }
    assert_eq!(
        (connections.pool().size(), connections.pool().num_idle()),
        (8, 0),
        "the pool is not all taken: the read below would show nothing"
    );
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.read(&Access::Unrestricted, "Patient", "nobody"),
    )
    .await
    .expect("a read waited for the pool while connections were kept");
    assert!(read.unwrap().is_none());
    // And a transaction, which goes to the pool itself, gets a kept one back from it.
    let transaction = tokio::time::timeout(std::time::Duration::from_secs(10), connections.begin())
        .await
        .expect("a transaction waited for the pool while connections were kept");
    transaction.unwrap().rollback().await.unwrap();
    drop(taken);

    let mut admin = sqlx::PgConnection::connect(&url()).await.unwrap();
    let ended: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE pid = ANY($1)) AS t",
    )
    .bind(&pids)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(ended >= 4, "only {ended} of the pool's backends were found");
    tokio::time::sleep(
        tsunagi_store_sql::hot::PING_WHEN_IDLE + std::time::Duration::from_millis(200),
    )
    .await;
    for _ in 0..8 {
        let read = store.read(&Access::Unrestricted, "Patient", "nobody").await;
        assert!(read.unwrap().is_none());
    }
}
