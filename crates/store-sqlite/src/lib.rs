//! The embedded SQLite FHIR store, the default backend (`sqlite://<path>`).
//!
//! Layout (see `migrations/`): `resources` holds the current version of every
//! resource (deleted ones as markers), `resource_history` the earlier versions, `idx_*` the
//! search-index rows of current versions, `checkpoints` the adapters' progress. A batch runs in
//! one `BEGIN IMMEDIATE` transaction; new resources and index rows are written with multi-row
//! INSERTs so a fresh ingest costs a handful of statements per thousand resources.
//!
//! Index rows carry no secondary index on `rid`: when a version is replaced, its old rows are
//! found by re-extracting them from the old content (the registry version stored in
//! `store_meta` guarantees the extractor that wrote them is the one reading them).

use std::{
    collections::{HashMap, HashSet},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use serde_json::Value;
use sqlx::{
    AssertSqlSafe, Connection, QueryBuilder, Row, Sqlite, SqliteConnection, Transaction,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
        SqliteSynchronous,
    },
};
use tsunagi_core::clock::Clock;
use tsunagi_fhir::{
    search::{self, IndexEntry, IndexValue, REGISTRY_VERSION},
    systems::canonical,
};
use tsunagi_store::{
    Access, ApplyStats, Batch, Counts, HistoryCursor, HistoryEntry, Key, Operation, ResourceWrite,
    SearchQuery, Store, StoreError, StoredResource, Visitor,
};

mod epoch;
mod governance;
mod journal;
mod journal_import;
mod messages;
mod outbox;
mod query;

/// Seconds an assertion id is remembered past its `exp` (clock skew between client and us).
const ASSERTION_MEMORY_SLACK: i64 = 60;

const MIGRATION_0001: &str = include_str!("../migrations/0001_initial.sql");
const MIGRATION_0002: &str = include_str!("../migrations/0002_compartments.sql");
const MIGRATION_0003: &str = include_str!("../migrations/0003_history_order.sql");
const MIGRATION_0004: &str = include_str!("../migrations/0004_access.sql");
const MIGRATION_0005: &str = include_str!("../migrations/0005_audit_search.sql");
const MIGRATION_0006: &str = include_str!("../migrations/0006_messages.sql");
const MIGRATION_0007: &str = include_str!("../migrations/0007_outbox.sql");
const MIGRATION_0008: &str = include_str!("../migrations/0008_standing.sql");
const MIGRATION_0009: &str = include_str!("../migrations/0009_lab_reports.sql");
/// Migrations that are one script each, by the schema version they lead to.
const SIMPLE_MIGRATIONS: [(&str, &str); 4] = [
    ("6", MIGRATION_0006),
    ("7", MIGRATION_0007),
    ("8", MIGRATION_0008),
    ("9", MIGRATION_0009),
];
const SCHEMA_VERSION: &str = "9";

/// Compartments written before schema 4 (or re-created by a re-index) get their facility from
/// the SS-MIX2 adapter's source key of their Patient (`ssmix2:<10-digit code>:…`).
const FACILITY_BACKFILL: &str = "UPDATE compartments SET facility = (\
    SELECT substr(r.source_key, 8, 10) FROM resources r \
    WHERE r.tid = 'Patient/' || compartments.patient AND r.source_key LIKE 'ssmix2:%') \
    WHERE facility IS NULL";

/// Rows per multi-row INSERT (SQLite allows 32766 bound parameters).
const RESOURCE_CHUNK: usize = 500;
const INDEX_CHUNK: usize = 1000;

/// A JSON array of `items`, bound as one parameter and read with `json_each` (one statement
/// shape whatever the list's length).
fn json_list<T: Clone + Into<Value>>(items: &[T]) -> String {
    Value::from(items.to_vec()).to_string()
}

/// The database file of a `sqlite://` URL, if it names one.
fn database_file(url: &str) -> Option<std::path::PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.contains(":memory:")).then(|| std::path::PathBuf::from(path))
}

fn db_error(error: sqlx::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    /// Writes, checkpoints and whole-store scans.
    pool: SqlitePool,
    /// The API's reads (read, search, fetch, history…): memory-mapped, so a large region reads
    /// like a small one. Kept apart so that ingest, which never uses it, keeps its RSS bound.
    reader: SqlitePool,
    clock: Arc<dyn Clock>,
    /// The audit journal beside the database file (none for an in-memory database).
    journal: Option<Arc<journal::Journal>>,
    /// The standing epoch beside the database file (none for an in-memory database).
    epoch: Option<Arc<epoch::StandingEpoch>>,
    /// One journal import at a time in this process.
    importing: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at a `sqlite://<path>` URL and brings its
    /// schema up to date.
    pub async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|error| StoreError::Url(format!("{url}: {error}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: every commit syncs the WAL, so what a feed acknowledged survives a power
            // loss, not only a crash of the process (bulk ingest commits large batches, so the
            // extra sync per commit costs little).
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            // 8 KiB pages (set before the first table is created; ignored afterwards): fewer
            // page splits and shallower index B-trees than the 4 KiB default.
            .page_size(8192)
            .pragma("cache_size", "-32768")
            .pragma("temp_store", "memory")
            // Checkpoint the WAL every 16k pages rather than 1k: index pages rewritten by
            // consecutive batches are copied back once, not once per batch.
            .pragma("wal_autocheckpoint", "16384")
            // The writer's multi-row statements alone come in about 250 shapes (see
            // `pow2_sizes`); the searches need their own.
            .statement_cache_capacity(512);
        // One connection per concurrent reader: with 4, eight keep-alive clients queued for a
        // connection and read-by-id throughput fell from 33k to 29k requests/s. The writer
        // still serialises through BEGIN IMMEDIATE; idle connections cost their page cache only
        // once they have read.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .map_err(db_error)?;
        let project = Self::migrate(&pool).await?;
        // Pages are read through a memory map up to SQLite's 2 GiB build limit instead of a
        // pread per page missing from the connection's cache. Mapped pages count in RSS, which
        // is why only this pool maps: measured, it brought the large/small ratios of patient
        // searches to ≤ 1.19, and would have pushed peak ingest RSS to 195 MB.
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .connect_lazy_with(options.pragma("mmap_size", "2147418112"));
        let file = database_file(url);
        let epoch = file
            .as_deref()
            .map(|file| Arc::new(epoch::StandingEpoch::new(file)));
        let journal = file.map(|file| Arc::new(journal::Journal::new(file)));
        let store = Self {
            pool,
            reader,
            clock,
            journal,
            epoch,
            importing: Arc::default(),
        };
        if project {
            store.project_all().await?;
        }
        Ok(store)
    }

    /// Brings the schema up to date; true when the network's records written before schema 5
    /// still need their FHIR projection.
    async fn migrate(pool: &SqlitePool) -> Result<bool, StoreError> {
        let mut connection = pool.acquire().await.map_err(db_error)?;
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'store_meta'",
        )
        .fetch_optional(&mut *connection)
        .await
        .map_err(db_error)?;
        if exists.is_none() {
            sqlx::raw_sql(MIGRATION_0001)
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
            sqlx::raw_sql(MIGRATION_0002)
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
            sqlx::raw_sql(MIGRATION_0003)
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
            sqlx::raw_sql(MIGRATION_0004)
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
            sqlx::raw_sql(MIGRATION_0005)
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
            for (_, script) in SIMPLE_MIGRATIONS {
                sqlx::raw_sql(script)
                    .execute(&mut *connection)
                    .await
                    .map_err(db_error)?;
            }
            sqlx::query("INSERT INTO store_meta (key, value) VALUES ('schema_version', ?), ('registry_version', ?)")
                .bind(SCHEMA_VERSION)
                .bind(REGISTRY_VERSION.to_string())
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
            return Ok(false);
        }
        let mut schema: Option<String> =
            sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'schema_version'")
                .fetch_optional(&mut *connection)
                .await
                .map_err(db_error)?;
        if schema.as_deref() == Some("1") {
            // 0002 recreates the index tables; the registry-version check below refills them.
            let mut transaction = connection.begin().await.map_err(db_error)?;
            sqlx::raw_sql(MIGRATION_0002)
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
            sqlx::query("UPDATE store_meta SET value = '2' WHERE key = 'schema_version'; UPDATE store_meta SET value = '0' WHERE key = 'registry_version'")
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
            transaction.commit().await.map_err(db_error)?;
            schema = Some("2".to_owned());
        }
        if schema.as_deref() == Some("2") {
            let mut transaction = connection.begin().await.map_err(db_error)?;
            sqlx::raw_sql(MIGRATION_0003)
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
            sqlx::query("UPDATE store_meta SET value = '3' WHERE key = 'schema_version'")
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
            transaction.commit().await.map_err(db_error)?;
            schema = Some("3".to_owned());
        }
        if schema.as_deref() == Some("3") {
            let mut transaction = connection.begin().await.map_err(db_error)?;
            sqlx::raw_sql(MIGRATION_0004)
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
            sqlx::query(FACILITY_BACKFILL)
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
            sqlx::query("UPDATE store_meta SET value = '4' WHERE key = 'schema_version'")
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
            transaction.commit().await.map_err(db_error)?;
            schema = Some("4".to_owned());
        }
        if schema.as_deref() == Some("4") {
            let mut transaction = connection.begin().await.map_err(db_error)?;
            sqlx::raw_sql(MIGRATION_0005)
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
            // Records of the network written before schema 5 have no FHIR projection yet; the
            // flag goes in the transaction that writes them (`project_all`), so a crash between
            // the two only means projecting again.
            sqlx::query("UPDATE store_meta SET value = '5' WHERE key = 'schema_version'; INSERT OR REPLACE INTO store_meta (key, value) VALUES ('projections', 'pending')")
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
            transaction.commit().await.map_err(db_error)?;
            schema = Some("5".to_owned());
        }
        for (index, (version, script)) in SIMPLE_MIGRATIONS.iter().enumerate() {
            let from = index + 5;
            if schema.as_deref() != Some(from.to_string().as_str()) {
                continue;
            }
            let mut transaction = connection.begin().await.map_err(db_error)?;
            sqlx::raw_sql(*script)
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
            sqlx::query("UPDATE store_meta SET value = ?1 WHERE key = 'schema_version'")
                .bind(*version)
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
            transaction.commit().await.map_err(db_error)?;
            schema = Some((*version).to_owned());
        }
        if schema.as_deref() != Some(SCHEMA_VERSION) {
            return Err(StoreError::Unsupported(format!(
                "database schema version {} is not {SCHEMA_VERSION}; this build cannot open it",
                schema.unwrap_or_default()
            )));
        }
        let registry: Option<String> =
            sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'registry_version'")
                .fetch_optional(&mut *connection)
                .await
                .map_err(db_error)?;
        let pending: Option<String> =
            sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'projections'")
                .fetch_optional(&mut *connection)
                .await
                .map_err(db_error)?;
        if registry.as_deref() != Some(REGISTRY_VERSION.to_string().as_str()) {
            drop(connection);
            Self::reindex_pool(pool).await?;
        }
        Ok(pending.is_some())
    }

    /// Applies `batch` inside the caller's transaction (the governance records write their FHIR
    /// projection with it, so both commit or neither does).
    pub(crate) async fn apply_in(
        &self,
        connection: &mut SqliteConnection,
        batch: Batch,
    ) -> Result<ApplyStats, StoreError> {
        let mut writer = BatchWriter {
            now: self.clock.now_micros(),
            next_rid: 1,
            existing: HashMap::new(),
            by_source: HashMap::new(),
            pending_rows: Vec::new(),
            pending_positions: HashMap::new(),
            pending_history: Vec::new(),
            pending_index: HashMap::new(),
            compartments: CompartmentIds::default(),
            checkpoints: std::collections::BTreeMap::new(),
            systems: SystemIds::default(),
            pending_messages: Vec::new(),
            stats: ApplyStats::default(),
        };
        writer.preload(connection, &batch).await?;
        for operation in batch.operations {
            writer.apply(connection, operation).await?;
        }
        writer.flush(connection).await?;
        writer.flush_checkpoints(connection).await?;
        Ok(writer.stats)
    }

    /// Rebuilds every index row from stored content (after a search-registry change).
    pub async fn reindex(&self) -> Result<(), StoreError> {
        Self::reindex_pool(&self.pool).await
    }

    async fn reindex_pool(pool: &SqlitePool) -> Result<(), StoreError> {
        let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        for table in [
            "idx_token",
            "idx_string",
            "idx_date",
            "idx_reference",
            "idx_quantity",
        ] {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
        }
        let mut systems = SystemIds::load(&mut transaction).await?;
        let mut compartments = CompartmentIds::default();
        let mut last_rid = 0i64;
        loop {
            let rows = sqlx::query("SELECT rid, type, content FROM resources WHERE deleted = 0 AND rid > ? ORDER BY rid LIMIT 1000")
                .bind(last_rid)
                .fetch_all(&mut *transaction)
                .await
                .map_err(db_error)?;
            if rows.is_empty() {
                break;
            }
            let mut entries = Vec::new();
            for row in &rows {
                let rid: i64 = row.try_get("rid").map_err(db_error)?;
                let resource_type: String = row.try_get("type").map_err(db_error)?;
                let content: Vec<u8> = row.try_get("content").map_err(db_error)?;
                let value: Value = serde_json::from_slice(&content)
                    .map_err(|error| StoreError::Corrupt(error.to_string()))?;
                let compartment = search::compartment_patient(&resource_type, &value);
                let pat = compartments
                    .resolve(&mut transaction, compartment.as_deref(), None)
                    .await?;
                sqlx::query("UPDATE resources SET pat = ? WHERE rid = ?")
                    .bind(pat)
                    .bind(rid)
                    .execute(&mut *transaction)
                    .await
                    .map_err(db_error)?;
                let index_pat = index_pat(&resource_type, pat);
                for entry in search::extract(&resource_type, &value) {
                    entries.push((rid, index_pat, entry));
                }
                last_rid = rid;
            }
            insert_index_rows(&mut transaction, &mut systems, entries).await?;
        }
        sqlx::query(FACILITY_BACKFILL)
            .execute(&mut *transaction)
            .await
            .map_err(db_error)?;
        sqlx::query("UPDATE store_meta SET value = ? WHERE key = 'registry_version'")
            .bind(REGISTRY_VERSION.to_string())
            .execute(&mut *transaction)
            .await
            .map_err(db_error)?;
        transaction.commit().await.map_err(db_error)
    }

    fn db<'a>(&'a self, access: &'a Access) -> query::Db<'a> {
        query::Db {
            pool: &self.reader,
            access,
        }
    }

    /// Closes the pool (checkpointing the WAL).
    pub async fn close(&self) {
        self.reader.close().await;
        self.pool.close().await;
    }
}

/// What the batch knows about an existing resource.
#[derive(Debug, Clone)]
struct Existing {
    rid: i64,
    /// `compartments.id` of the resource (`resources.pat`).
    pat: i64,
    resource_type: String,
    version: i64,
    deleted: bool,
    hash: Option<u64>,
    source_key: Option<String>,
}

/// A resource first written in this batch, kept in memory until the batch flushes, so that a
/// later version in the same batch folds into it without any statement.
struct NewRow {
    rid: i64,
    pat: i64,
    tid: String,
    resource_type: String,
    id: String,
    version: i64,
    deleted: bool,
    source_key: String,
    hash: Option<u64>,
    content: Option<Vec<u8>>,
    index: Vec<IndexEntry>,
}

/// An earlier version to archive.
struct HistoryRow {
    rid: i64,
    version: i64,
    last_updated: i64,
    deleted: bool,
    content: Option<Vec<u8>>,
}

struct BatchWriter {
    now: i64,
    next_rid: i64,
    existing: HashMap<String, Existing>,
    by_source: HashMap<String, Vec<String>>,
    /// New resources of the batch, by position; `pending_positions` maps rid → position.
    pending_rows: Vec<NewRow>,
    pending_positions: HashMap<i64, usize>,
    /// Earlier versions of resources created in this batch.
    pending_history: Vec<HistoryRow>,
    /// Index rows of resources that already existed in the database, by rid, with the
    /// compartment the rows carry.
    pending_index: HashMap<i64, (i64, Vec<IndexEntry>)>,
    /// Compartment patient id → `compartments.id`.
    compartments: CompartmentIds,
    /// Checkpoints of the batch (last write per key wins), written with multi-row upserts.
    checkpoints: std::collections::BTreeMap<(String, String), Vec<u8>>,
    /// Token system URL → `token_systems.id`.
    systems: SystemIds,
    /// Inbound messages to log, in order (written together, before any state change).
    pending_messages: Vec<tsunagi_store::InboundMessage>,
    stats: ApplyStats,
}

/// The `token_systems` dictionary as seen inside one transaction.
#[derive(Default)]
struct SystemIds(HashMap<String, i64>);

impl SystemIds {
    async fn load(connection: &mut SqliteConnection) -> Result<Self, StoreError> {
        let rows = sqlx::query("SELECT id, system FROM token_systems")
            .fetch_all(&mut *connection)
            .await
            .map_err(db_error)?;
        let mut map = HashMap::with_capacity(rows.len());
        for row in rows {
            map.insert(
                row.try_get("system").map_err(db_error)?,
                row.try_get("id").map_err(db_error)?,
            );
        }
        Ok(Self(map))
    }

    /// The id of a system, if it has one.
    fn get(&self, system: &str) -> Option<i64> {
        self.0.get(system).copied()
    }

    /// The id of a system, adding it to the dictionary when new.
    async fn id(
        &mut self,
        connection: &mut SqliteConnection,
        system: &str,
    ) -> Result<i64, StoreError> {
        if let Some(id) = self.0.get(system) {
            return Ok(*id);
        }
        let id: i64 =
            sqlx::query_scalar("INSERT INTO token_systems (system) VALUES (?) RETURNING id")
                .bind(system)
                .fetch_one(&mut *connection)
                .await
                .map_err(db_error)?;
        self.0.insert(system.to_owned(), id);
        Ok(id)
    }
}

/// The `compartments` dictionary as seen inside one transaction (only the patients a batch
/// touches are loaded).
#[derive(Default)]
struct CompartmentIds(HashMap<String, i64>);

impl CompartmentIds {
    /// Loads (creating where missing) the ids of `patients`, each with the facility holding
    /// it (a compartment keeps the facility that first wrote it).
    async fn load(
        &mut self,
        connection: &mut SqliteConnection,
        patients: &[(&str, Option<&str>)],
    ) -> Result<(), StoreError> {
        if patients.is_empty() {
            return Ok(());
        }
        let pairs: Vec<Vec<Value>> = patients
            .iter()
            .map(|(patient, facility)| vec![Value::from(*patient), Value::from(*facility)])
            .collect();
        sqlx::query(
            "INSERT INTO compartments (patient, facility) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1) WHERE true \
             ON CONFLICT (patient) DO UPDATE SET facility = excluded.facility WHERE facility IS NULL",
        )
        .bind(json_list(&pairs))
        .execute(&mut *connection)
        .await
        .map_err(db_error)?;
        let names: Vec<&str> = patients.iter().map(|(patient, _)| *patient).collect();
        let list = json_list(&names);
        let rows = sqlx::query(
            "SELECT id, patient FROM compartments WHERE patient IN (SELECT value FROM json_each(?1))",
        )
        .bind(&list)
        .fetch_all(&mut *connection)
        .await
        .map_err(db_error)?;
        for row in rows {
            self.0.insert(
                row.try_get("patient").map_err(db_error)?,
                row.try_get("id").map_err(db_error)?,
            );
        }
        Ok(())
    }

    /// The id of one patient's compartment (0 for none), creating it when new.
    async fn resolve(
        &mut self,
        connection: &mut SqliteConnection,
        patient: Option<&str>,
        facility: Option<&str>,
    ) -> Result<i64, StoreError> {
        let Some(patient) = patient else {
            return Ok(0);
        };
        if let Some(id) = self.0.get(patient) {
            return Ok(*id);
        }
        self.load(connection, &[(patient, facility)]).await?;
        self.0
            .get(patient)
            .copied()
            .ok_or_else(|| StoreError::Database(format!("compartment of {patient} not created")))
    }
}

/// The compartment id an index row carries: a Patient's own rows carry 0, so that searches for
/// patients (by identifier, name, birth date) are one key range over the whole region.
fn index_pat(resource_type: &str, pat: i64) -> i64 {
    if resource_type == "Patient" { 0 } else { pat }
}

fn bump(map: &mut std::collections::BTreeMap<String, u64>, resource_type: &str) {
    match map.get_mut(resource_type) {
        Some(count) => *count += 1,
        None => {
            map.insert(resource_type.to_owned(), 1);
        }
    }
}

/// Splits `items` into the chunks [`pow2_sizes`] gives.
fn pow2_chunks<T>(items: &[T], max: usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut rest = items;
    for size in pow2_sizes(items.len(), max) {
        let (head, tail) = rest.split_at(size);
        chunks.push(head);
        rest = tail;
    }
    chunks
}

/// Rows up to which a multi-row statement is sized exactly rather than split in powers of two.
const EXACT_TAIL: usize = 16;

const BY_SOURCE_KEY: &str = "SELECT rid, pat, tid, type, version, deleted, hash, source_key FROM resources WHERE source_key IN (SELECT value FROM json_each(?1))";
const BY_TID: &str = "SELECT rid, pat, tid, type, version, deleted, hash, source_key FROM resources WHERE tid IN (SELECT value FROM json_each(?1))";

/// Rows of `resources` selected by `sql` (`BY_SOURCE_KEY` or `BY_TID`) for `values`, bound as one
/// JSON array.
async fn existing_rows<V: AsRef<str>>(
    connection: &mut SqliteConnection,
    sql: &'static str,
    values: &[V],
) -> Result<Vec<(String, Existing)>, StoreError> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<&str> = values.iter().map(AsRef::as_ref).collect();
    let list = json_list(&list);
    let rows = sqlx::query(sql)
        .bind(list)
        .fetch_all(&mut *connection)
        .await
        .map_err(db_error)?;
    rows.iter().map(existing_from_row).collect()
}

fn existing_from_row(row: &SqliteRow) -> Result<(String, Existing), StoreError> {
    let hash: Option<i64> = row.try_get("hash").map_err(db_error)?;
    Ok((
        row.try_get("tid").map_err(db_error)?,
        Existing {
            rid: row.try_get("rid").map_err(db_error)?,
            pat: row.try_get("pat").map_err(db_error)?,
            resource_type: row.try_get("type").map_err(db_error)?,
            version: row.try_get("version").map_err(db_error)?,
            deleted: row.try_get::<i64, _>("deleted").map_err(db_error)? != 0,
            hash: hash.map(|h| h as u64),
            source_key: row.try_get("source_key").map_err(db_error)?,
        },
    ))
}

impl BatchWriter {
    async fn preload(
        &mut self,
        connection: &mut SqliteConnection,
        batch: &Batch,
    ) -> Result<(), StoreError> {
        let mut source_keys: Vec<&str> = Vec::new();
        let mut tids: Vec<String> = Vec::new();
        for operation in &batch.operations {
            match operation {
                Operation::ReplaceSource {
                    source_key,
                    resources,
                    ..
                } => {
                    source_keys.push(source_key);
                    tids.extend(resources.iter().map(ResourceWrite::type_and_id));
                }
                Operation::DeleteSource { source_key } => source_keys.push(source_key),
                Operation::PutCheckpoint { .. }
                | Operation::LogMessage(_)
                | Operation::SetMessageState { .. }
                | Operation::Enqueue(_)
                | Operation::SetDelivery(_) => {}
            }
        }
        source_keys.sort_unstable();
        source_keys.dedup();
        for (tid, existing) in existing_rows(connection, BY_SOURCE_KEY, &source_keys).await? {
            if let Some(source) = &existing.source_key {
                self.by_source
                    .entry(source.clone())
                    .or_default()
                    .push(tid.clone());
            }
            self.existing.insert(tid, existing);
        }
        tids.retain(|tid| !self.existing.contains_key(tid));
        tids.sort_unstable();
        tids.dedup();
        for (tid, existing) in existing_rows(connection, BY_TID, &tids).await? {
            self.existing.insert(tid, existing);
        }
        self.systems = SystemIds::load(connection).await?;
        let mut patients: Vec<(&str, Option<&str>)> = batch
            .operations
            .iter()
            .flat_map(|operation| match operation {
                Operation::ReplaceSource {
                    resources,
                    facility,
                    ..
                } => resources
                    .iter()
                    .filter_map(|write| {
                        Some((write.compartment.as_deref()?, Some(facility.as_str())))
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        patients.sort_unstable();
        patients.dedup();
        self.compartments.load(connection, &patients).await?;
        let max_rid: Option<i64> = sqlx::query_scalar("SELECT MAX(rid) FROM resources")
            .fetch_one(&mut *connection)
            .await
            .map_err(db_error)?;
        self.next_rid = max_rid.unwrap_or(0) + 1;
        Ok(())
    }

    async fn apply(
        &mut self,
        connection: &mut SqliteConnection,
        operation: Operation,
    ) -> Result<(), StoreError> {
        match operation {
            Operation::ReplaceSource {
                source_key,
                facility,
                resources,
            } => {
                let mut listed = HashSet::new();
                for write in &resources {
                    if !listed.insert(write.type_and_id()) {
                        return Err(StoreError::Invalid(format!(
                            "{} appears twice in source record {source_key}",
                            write.type_and_id()
                        )));
                    }
                }
                for write in resources {
                    self.upsert(connection, &source_key, &facility, write)
                        .await?;
                }
                let previous = self.by_source.get(&source_key).cloned().unwrap_or_default();
                for tid in previous {
                    if !listed.contains(&tid) {
                        self.delete(connection, &tid).await?;
                    }
                }
                self.by_source
                    .insert(source_key, listed.into_iter().collect());
            }
            Operation::DeleteSource { source_key } => {
                let previous = self.by_source.get(&source_key).cloned().unwrap_or_default();
                for tid in previous {
                    self.delete(connection, &tid).await?;
                }
            }
            Operation::PutCheckpoint { scope, key, value } => {
                self.checkpoints.insert((scope, key), value);
            }
            Operation::LogMessage(message) => self.pending_messages.push(*message),
            Operation::SetMessageState { seq, state, reason } => {
                let logged = std::mem::take(&mut self.pending_messages);
                messages::insert(connection, logged).await?;
                messages::set_state(connection, seq, state, &reason).await?;
            }
            Operation::Enqueue(message) => outbox::insert(connection, &message).await?,
            Operation::SetDelivery(update) => outbox::update(connection, &update).await?,
        }
        Ok(())
    }

    async fn upsert(
        &mut self,
        connection: &mut SqliteConnection,
        source_key: &str,
        facility: &str,
        write: ResourceWrite,
    ) -> Result<(), StoreError> {
        let tid = write.type_and_id();
        let pat = self
            .compartments
            .resolve(connection, write.compartment.as_deref(), Some(facility))
            .await?;
        let Some(existing) = self.existing.get(&tid).cloned() else {
            let rid = self.next_rid;
            self.next_rid += 1;
            bump(&mut self.stats.created, &write.resource_type);
            self.existing.insert(
                tid.clone(),
                Existing {
                    rid,
                    pat,
                    resource_type: write.resource_type.clone(),
                    version: 1,
                    deleted: false,
                    hash: Some(write.hash),
                    source_key: Some(source_key.to_owned()),
                },
            );
            self.pending_positions.insert(rid, self.pending_rows.len());
            self.pending_rows.push(NewRow {
                rid,
                pat,
                tid,
                resource_type: write.resource_type,
                id: write.id,
                version: 1,
                deleted: false,
                source_key: source_key.to_owned(),
                hash: Some(write.hash),
                content: Some(write.content),
                index: write.index,
            });
            if self.pending_rows.len() >= RESOURCE_CHUNK * 4 {
                self.flush(connection).await?;
            }
            return Ok(());
        };
        let unchanged = !existing.deleted && existing.hash == Some(write.hash);
        if unchanged {
            bump(&mut self.stats.unchanged, &write.resource_type);
            if existing.source_key.as_deref() != Some(source_key) {
                if let Some(&position) = self.pending_positions.get(&existing.rid) {
                    self.pending_rows[position].source_key = source_key.to_owned();
                } else {
                    sqlx::query("UPDATE resources SET source_key = ? WHERE rid = ?")
                        .bind(source_key)
                        .bind(existing.rid)
                        .execute(&mut *connection)
                        .await
                        .map_err(db_error)?;
                }
                self.move_source(&tid, existing.source_key.as_deref(), source_key);
                if let Some(entry) = self.existing.get_mut(&tid) {
                    entry.source_key = Some(source_key.to_owned());
                }
            }
            return Ok(());
        }
        let version = existing.version + 1;
        if let Some(&position) = self.pending_positions.get(&existing.rid) {
            // Created earlier in this batch: fold the new version in memory.
            let row = &mut self.pending_rows[position];
            self.pending_history.push(HistoryRow {
                rid: row.rid,
                version: row.version,
                last_updated: self.now,
                deleted: row.deleted,
                content: row.content.take(),
            });
            row.version = version;
            row.pat = pat;
            row.deleted = false;
            row.source_key = source_key.to_owned();
            row.hash = Some(write.hash);
            row.content = Some(write.content);
            row.index = write.index;
        } else {
            if !existing.deleted {
                self.remove_index_rows(connection, &existing).await?;
            }
            self.archive(connection, existing.rid).await?;
            sqlx::query("UPDATE resources SET version = ?, last_updated = ?, deleted = 0, source_key = ?, hash = ?, content = ?, pat = ? WHERE rid = ?")
                .bind(version)
                .bind(self.now)
                .bind(source_key)
                .bind(write.hash as i64)
                .bind(&write.content)
                .bind(pat)
                .bind(existing.rid)
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
            self.pending_index.insert(
                existing.rid,
                (index_pat(&write.resource_type, pat), write.index),
            );
        }
        bump(&mut self.stats.updated, &write.resource_type);
        self.move_source(&tid, existing.source_key.as_deref(), source_key);
        self.existing.insert(
            tid,
            Existing {
                version,
                pat,
                deleted: false,
                hash: Some(write.hash),
                source_key: Some(source_key.to_owned()),
                ..existing
            },
        );
        Ok(())
    }

    fn move_source(&mut self, tid: &str, from: Option<&str>, to: &str) {
        if from == Some(to) {
            return;
        }
        if let Some(from) = from
            && let Some(list) = self.by_source.get_mut(from)
        {
            list.retain(|item| item != tid);
        }
    }

    async fn delete(
        &mut self,
        connection: &mut SqliteConnection,
        tid: &str,
    ) -> Result<(), StoreError> {
        let Some(existing) = self.existing.get(tid).cloned() else {
            return Ok(());
        };
        if existing.deleted {
            return Ok(());
        }
        if let Some(&position) = self.pending_positions.get(&existing.rid) {
            let row = &mut self.pending_rows[position];
            self.pending_history.push(HistoryRow {
                rid: row.rid,
                version: row.version,
                last_updated: self.now,
                deleted: row.deleted,
                content: row.content.take(),
            });
            row.version += 1;
            row.deleted = true;
            row.hash = None;
            row.index.clear();
        } else {
            self.remove_index_rows(connection, &existing).await?;
            self.archive(connection, existing.rid).await?;
            sqlx::query("UPDATE resources SET version = version + 1, last_updated = ?, deleted = 1, hash = NULL, content = NULL WHERE rid = ?")
                .bind(self.now)
                .bind(existing.rid)
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
        }
        bump(&mut self.stats.deleted, &existing.resource_type);
        self.existing.insert(
            tid.to_owned(),
            Existing {
                version: existing.version + 1,
                deleted: true,
                hash: None,
                ..existing
            },
        );
        Ok(())
    }

    async fn archive(&self, connection: &mut SqliteConnection, rid: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO resource_history (rid, version, last_updated, deleted, content) SELECT rid, version, last_updated, deleted, content FROM resources WHERE rid = ?")
            .bind(rid)
            .execute(&mut *connection)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Removes the index rows of an existing resource's current version: rows not yet flushed
    /// are dropped from memory, flushed ones are found by re-extracting them from the stored
    /// content.
    async fn remove_index_rows(
        &mut self,
        connection: &mut SqliteConnection,
        existing: &Existing,
    ) -> Result<(), StoreError> {
        if self.pending_index.remove(&existing.rid).is_some() {
            return Ok(());
        }
        let content: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT content FROM resources WHERE rid = ?")
                .bind(existing.rid)
                .fetch_one(&mut *connection)
                .await
                .map_err(db_error)?;
        let Some(content) = content else {
            return Ok(());
        };
        let value: Value = serde_json::from_slice(&content)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let pat = index_pat(&existing.resource_type, existing.pat);
        for entry in search::extract(&existing.resource_type, &value) {
            let param = i64::from(entry.param);
            let query = match &entry.value {
                IndexValue::Token { system, code } => {
                    let Some(system_id) = self.systems.get(system) else {
                        continue;
                    };
                    sqlx::query("DELETE FROM idx_token WHERE param = ? AND code = ? AND system_id = ? AND pat = ? AND rid = ?")
                        .bind(param)
                        .bind(code.clone())
                        .bind(system_id)
                        .bind(pat)
                }
                IndexValue::String(text) => sqlx::query("DELETE FROM idx_string WHERE param = ? AND value = ? AND pat = ? AND rid = ?")
                    .bind(param)
                    .bind(text.clone())
                    .bind(pat),
                IndexValue::Date { start, end } => sqlx::query("DELETE FROM idx_date WHERE param = ? AND start = ? AND \"end\" = ? AND pat = ? AND rid = ?")
                    .bind(param)
                    .bind(*start)
                    .bind(*end)
                    .bind(pat),
                IndexValue::Reference { target_type, target_id } => sqlx::query("DELETE FROM idx_reference WHERE param = ? AND target_id = ? AND target_type = ? AND rid = ?")
                    .bind(param)
                    .bind(target_id.clone())
                    .bind(target_type.clone()),
                IndexValue::Quantity { value, system, code } => sqlx::query("DELETE FROM idx_quantity WHERE param = ? AND code = ? AND value = ? AND system = ? AND pat = ? AND rid = ?")
                    .bind(param)
                    .bind(code.clone())
                    .bind(*value)
                    .bind(system.clone())
                    .bind(pat),
            };
            query
                .bind(existing.rid)
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    async fn flush_checkpoints(
        &mut self,
        connection: &mut SqliteConnection,
    ) -> Result<(), StoreError> {
        let checkpoints: Vec<((String, String), Vec<u8>)> =
            std::mem::take(&mut self.checkpoints).into_iter().collect();
        for chunk in pow2_chunks(&checkpoints, RESOURCE_CHUNK) {
            let mut query =
                QueryBuilder::<Sqlite>::new("INSERT INTO checkpoints (scope, key, value) ");
            query.push_values(chunk, |mut row, ((scope, key), value)| {
                row.push_bind(scope.as_str())
                    .push_bind(key.as_str())
                    .push_bind(value.as_slice());
            });
            query.push(" ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value");
            query
                .build()
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    async fn flush(&mut self, connection: &mut SqliteConnection) -> Result<(), StoreError> {
        messages::insert(connection, std::mem::take(&mut self.pending_messages)).await?;
        // Values are moved into the statements, not copied: sqlx copies borrowed strings and
        // byte slices into fresh allocations, owned ones it takes as they are.
        let mut rows = std::mem::take(&mut self.pending_rows);
        self.pending_positions.clear();
        let mut entries: Vec<(i64, i64, IndexEntry)> = Vec::new();
        for row in &mut rows {
            let rid = row.rid;
            let pat = index_pat(&row.resource_type, row.pat);
            entries.extend(row.index.drain(..).map(|entry| (rid, pat, entry)));
        }
        for (rid, (pat, index)) in std::mem::take(&mut self.pending_index) {
            entries.extend(index.into_iter().map(|entry| (rid, pat, entry)));
        }
        let now = self.now;
        let mut remaining = rows.into_iter();
        for size in pow2_sizes(remaining.len(), RESOURCE_CHUNK) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO resources (rid, pat, tid, type, id, version, last_updated, deleted, source_key, hash, content) ",
            );
            query.push_values(remaining.by_ref().take(size), |mut row, new| {
                row.push_bind(new.rid)
                    .push_bind(new.pat)
                    .push_bind(new.tid)
                    .push_bind(new.resource_type)
                    .push_bind(new.id)
                    .push_bind(new.version)
                    .push_bind(now)
                    .push_bind(i64::from(new.deleted))
                    .push_bind(new.source_key)
                    .push_bind(new.hash.map(|h| h as i64))
                    .push_bind(new.content);
            });
            query
                .build()
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
        }
        let history = std::mem::take(&mut self.pending_history);
        let mut remaining = history.into_iter();
        for size in pow2_sizes(remaining.len(), RESOURCE_CHUNK) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO resource_history (rid, version, last_updated, deleted, content) ",
            );
            query.push_values(remaining.by_ref().take(size), |mut row, old| {
                row.push_bind(old.rid)
                    .push_bind(old.version)
                    .push_bind(old.last_updated)
                    .push_bind(i64::from(old.deleted))
                    .push_bind(old.content);
            });
            query
                .build()
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
        }
        insert_index_rows(connection, &mut self.systems, entries).await
    }
}

/// Chunk sizes for `len` rows: powers of two, at most `max`, and a last chunk of at most
/// [`EXACT_TAIL`] rows sized exactly. Multi-row statements so come in a few dozen shapes whose
/// prepared statements stay cached, and a small batch (a stop-and-wait feed's group) takes one
/// statement per table rather than one per bit of its row count: each statement is a round
/// trip to SQLite's thread.
pub(crate) fn pow2_sizes(len: usize, max: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut rest = len;
    while rest > 0 {
        if rest <= EXACT_TAIL.min(max) {
            sizes.push(rest);
            break;
        }
        let mut size = max.min(rest).next_power_of_two();
        if size > rest || size > max {
            size /= 2;
        }
        let size = size.max(1);
        sizes.push(size);
        rest -= size;
    }
    sizes
}

/// Inserts owned rows in power-of-two chunks (a handful of cached statement shapes).
async fn insert_chunks<T, F>(
    connection: &mut SqliteConnection,
    head: &'static str,
    rows: Vec<T>,
    mut bind: F,
) -> Result<(), StoreError>
where
    F: FnMut(&mut sqlx::query_builder::Separated<'_, Sqlite, &'static str>, T),
{
    let mut remaining = rows.into_iter();
    for size in pow2_sizes(remaining.len(), INDEX_CHUNK) {
        let mut query = QueryBuilder::<Sqlite>::new(head);
        query.push_values(remaining.by_ref().take(size), |mut row, value| {
            bind(&mut row, value)
        });
        query
            .build()
            .execute(&mut *connection)
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

async fn insert_index_rows(
    connection: &mut SqliteConnection,
    systems: &mut SystemIds,
    entries: Vec<(i64, i64, IndexEntry)>,
) -> Result<(), StoreError> {
    let mut tokens = Vec::new();
    let mut strings = Vec::new();
    let mut dates = Vec::new();
    let mut references = Vec::new();
    let mut quantities = Vec::new();
    for (rid, pat, entry) in entries {
        let param = i64::from(entry.param);
        match entry.value {
            IndexValue::Token { system, code } => {
                let system_id = systems.id(connection, &system).await?;
                tokens.push((param, code, pat, system_id, rid))
            }
            IndexValue::String(text) => strings.push((param, pat, text, rid)),
            IndexValue::Date { start, end } => dates.push((param, pat, start, end, rid)),
            IndexValue::Reference {
                target_type,
                target_id,
            } => references.push((param, target_id, target_type, rid)),
            IndexValue::Quantity {
                value,
                system,
                code,
            } => quantities.push((param, code, pat, value, system, rid)),
        }
    }
    // Sorted rows land in the WITHOUT ROWID B-trees in key order: far fewer page splits.
    tokens.sort_unstable();
    strings.sort_unstable();
    dates.sort_unstable();
    references.sort_unstable();
    quantities.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    insert_chunks(
        connection,
        "INSERT OR IGNORE INTO idx_token (param, code, pat, system_id, rid) ",
        tokens,
        |row, (param, code, pat, system, rid)| {
            row.push_bind(param)
                .push_bind(code)
                .push_bind(pat)
                .push_bind(system)
                .push_bind(rid);
        },
    )
    .await?;
    insert_chunks(
        connection,
        "INSERT OR IGNORE INTO idx_string (param, pat, value, rid) ",
        strings,
        |row, (param, pat, value, rid)| {
            row.push_bind(param)
                .push_bind(pat)
                .push_bind(value)
                .push_bind(rid);
        },
    )
    .await?;
    insert_chunks(
        connection,
        "INSERT OR IGNORE INTO idx_date (param, pat, start, \"end\", rid) ",
        dates,
        |row, (param, pat, start, end, rid)| {
            row.push_bind(param)
                .push_bind(pat)
                .push_bind(start)
                .push_bind(end)
                .push_bind(rid);
        },
    )
    .await?;
    insert_chunks(
        connection,
        "INSERT OR IGNORE INTO idx_reference (param, target_id, target_type, rid) ",
        references,
        |row, (param, target_id, target_type, rid)| {
            row.push_bind(param)
                .push_bind(target_id)
                .push_bind(target_type)
                .push_bind(rid);
        },
    )
    .await?;
    insert_chunks(
        connection,
        "INSERT OR IGNORE INTO idx_quantity (param, code, pat, value, system, rid) ",
        quantities,
        |row, (param, code, pat, value, system, rid)| {
            row.push_bind(param)
                .push_bind(code)
                .push_bind(pat)
                .push_bind(value)
                .push_bind(system)
                .push_bind(rid);
        },
    )
    .await
}

fn stored_from_row(row: &SqliteRow) -> Result<StoredResource, StoreError> {
    Ok(StoredResource {
        resource_type: row.try_get("type").map_err(db_error)?,
        id: row.try_get("id").map_err(db_error)?,
        version: row.try_get("version").map_err(db_error)?,
        last_updated: row.try_get("last_updated").map_err(db_error)?,
        deleted: row.try_get::<i64, _>("deleted").map_err(db_error)? != 0,
        content: row.try_get("content").map_err(db_error)?,
        patient: row.try_get("patient").map_err(db_error)?,
    })
}

/// The permitted-rows condition of statements over `resources r LEFT JOIN compartments c ON
/// c.id = r.pat`, with the viewer bound as `?2` (NULL for [`Access::Unrestricted`]) and the
/// instant as `?3`: resources outside every compartment, compartments the viewer holds, and
/// compartments a consent in force lets it see. [`query::push_guard`] is the same test for
/// statements built piece by piece.
const GUARD: &str = "(?2 IS NULL OR r.pat = 0 OR c.facility = ?2 OR EXISTS (SELECT 1 FROM access a WHERE a.viewer = ?2 AND a.pat = r.pat AND a.not_before <= ?3 AND a.not_after > ?3))";

/// The `?2` and `?3` of [`GUARD`] (and of `query::permitted_with_links`).
pub(crate) fn viewer(access: &Access) -> (Option<&str>, i64) {
    match access {
        Access::Facility { code, at } => (Some(code.as_str()), *at),
        Access::Unrestricted => (None, 0),
    }
}

async fn begin(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, StoreError> {
    pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn apply(&self, batch: Batch) -> Result<ApplyStats, StoreError> {
        let mut transaction = begin(&self.pool).await?;
        let stats = self.apply_in(&mut transaction, batch).await?;
        transaction.commit().await.map_err(db_error)?;
        Ok(stats)
    }

    async fn read(
        &self,
        access: &Access,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredResource>, StoreError> {
        let (viewer, at) = viewer(access);
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT r.type, r.id, r.version, r.last_updated, r.deleted, r.content, c.patient \
             FROM resources r LEFT JOIN compartments c ON c.id = r.pat WHERE r.tid = ?1 AND {GUARD}"
        )))
        .bind(format!("{resource_type}/{id}"))
        .bind(viewer)
        .bind(at)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        row.as_ref().map(stored_from_row).transpose()
    }

    async fn vread(
        &self,
        access: &Access,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<StoredResource>, StoreError> {
        if let Some(current) = self.read(access, resource_type, id).await?
            && current.version == version
        {
            return Ok(Some(current));
        }
        let (viewer, at) = viewer(access);
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT r.type, r.id, h.version, h.last_updated, h.deleted, h.content, c.patient \
             FROM resource_history h JOIN resources r ON r.rid = h.rid LEFT JOIN compartments c ON c.id = r.pat \
             WHERE r.tid = ?1 AND h.version = ?4 AND {GUARD}"
        )))
        .bind(format!("{resource_type}/{id}"))
        .bind(viewer)
        .bind(at)
        .bind(version)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        row.as_ref().map(stored_from_row).transpose()
    }

    async fn history(
        &self,
        access: &Access,
        resource_type: &str,
        id: &str,
    ) -> Result<Vec<StoredResource>, StoreError> {
        let (viewer, at) = viewer(access);
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT r.type, r.id, r.version, r.last_updated, r.deleted, r.content, c.patient \
             FROM resources r LEFT JOIN compartments c ON c.id = r.pat WHERE r.tid = ?1 AND {GUARD} \
             UNION ALL \
             SELECT r.type, r.id, h.version, h.last_updated, h.deleted, h.content, c.patient \
             FROM resource_history h JOIN resources r ON r.rid = h.rid LEFT JOIN compartments c ON c.id = r.pat \
             WHERE r.tid = ?1 AND {GUARD} \
             ORDER BY version DESC"
        )))
        .bind(format!("{resource_type}/{id}"))
        .bind(viewer)
        .bind(at)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter().map(stored_from_row).collect()
    }

    async fn checkpoint(&self, scope: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT value FROM checkpoints WHERE scope = ? AND key = ?")
            .bind(scope)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn checkpoints_in(
        &self,
        scopes: &[String],
    ) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        if scopes.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(scopes)
            .map_err(|error| StoreError::Invalid(error.to_string()))?;
        sqlx::query_as(
            "SELECT scope, key, value FROM checkpoints \
             WHERE scope IN (SELECT value FROM json_each(?1)) ORDER BY scope, key",
        )
        .bind(list)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn checkpoints(&self, scope: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT key, value FROM checkpoints WHERE scope = ? ORDER BY key")
            .bind(scope)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("key").map_err(db_error)?,
                    row.try_get("value").map_err(db_error)?,
                ))
            })
            .collect()
    }

    async fn for_each_current(&self, visit: &mut Visitor<'_>) -> Result<u64, StoreError> {
        let mut last = String::new();
        let mut count = 0u64;
        loop {
            let rows = sqlx::query(
                "SELECT r.tid, r.type, r.id, r.version, r.last_updated, r.deleted, r.content, c.patient FROM resources r LEFT JOIN compartments c ON c.id = r.pat WHERE r.deleted = 0 AND r.tid > ? ORDER BY r.tid LIMIT 500",
            )
            .bind(&last)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
            if rows.is_empty() {
                return Ok(count);
            }
            for row in &rows {
                last = row.try_get("tid").map_err(db_error)?;
                visit(stored_from_row(row)?)?;
                count += 1;
            }
        }
    }

    async fn count_current(&self) -> Result<Counts, StoreError> {
        let rows = sqlx::query(
            "SELECT type, COUNT(*) AS n FROM resources WHERE deleted = 0 GROUP BY type",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut counts = Counts::new();
        for row in rows {
            let count: i64 = row.try_get("n").map_err(db_error)?;
            counts.insert(row.try_get("type").map_err(db_error)?, count as u64);
        }
        Ok(counts)
    }

    async fn find_by_token(
        &self,
        resource_type: &str,
        param: &str,
        system: Option<&str>,
        code: &str,
    ) -> Result<Vec<String>, StoreError> {
        let Some(definition) = search::param(resource_type, param) else {
            return Err(StoreError::Invalid(format!(
                "unknown search parameter {resource_type}.{param}"
            )));
        };
        let rows = match system {
            Some(system) => sqlx::query("SELECT r.id FROM idx_token t JOIN resources r ON r.rid = t.rid WHERE t.param = ? AND t.code = ? AND t.system_id = (SELECT id FROM token_systems WHERE system = ?) AND r.deleted = 0 ORDER BY r.id")
                .bind(i64::from(definition.id))
                .bind(code)
                .bind(canonical(system))
                .fetch_all(&self.pool)
                .await,
            None => sqlx::query("SELECT r.id FROM idx_token t JOIN resources r ON r.rid = t.rid WHERE t.param = ? AND t.code = ? AND r.deleted = 0 ORDER BY r.id")
                .bind(i64::from(definition.id))
                .bind(code)
                .fetch_all(&self.pool)
                .await,
        }
        .map_err(db_error)?;
        rows.iter()
            .map(|row| row.try_get("id").map_err(db_error))
            .collect()
    }

    async fn find_by_reference(
        &self,
        resource_type: &str,
        param: &str,
        target: &str,
    ) -> Result<Vec<String>, StoreError> {
        let Some(definition) = search::param(resource_type, param) else {
            return Err(StoreError::Invalid(format!(
                "unknown search parameter {resource_type}.{param}"
            )));
        };
        let Some((target_type, target_id)) = search::split_reference(target) else {
            return Err(StoreError::Invalid(format!("{target} is not Type/id")));
        };
        let rows = sqlx::query("SELECT r.id FROM idx_reference x JOIN resources r ON r.rid = x.rid WHERE x.param = ? AND x.target_id = ? AND x.target_type = ? AND r.deleted = 0 ORDER BY r.id")
            .bind(i64::from(definition.id))
            .bind(target_id)
            .bind(target_type)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| row.try_get("id").map_err(db_error))
            .collect()
    }

    async fn search(&self, access: &Access, query: &SearchQuery) -> Result<Vec<Key>, StoreError> {
        query::search(self.db(access), query).await
    }

    async fn count(&self, access: &Access, query: &SearchQuery) -> Result<u64, StoreError> {
        query::count(self.db(access), query).await
    }

    async fn fetch(
        &self,
        access: &Access,
        keys: &[Key],
    ) -> Result<Vec<StoredResource>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (viewer, at) = viewer(access);
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT r.rid, r.type, r.id, r.version, r.last_updated, r.deleted, r.content, c.patient \
             FROM resources r LEFT JOIN compartments c ON c.id = r.pat \
             WHERE r.rid IN (SELECT value FROM json_each(?1)) AND r.deleted = 0 AND {GUARD}"
        )))
        .bind(json_list(keys))
        .bind(viewer)
        .bind(at)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        let mut by_key = HashMap::with_capacity(rows.len());
        for row in &rows {
            let rid: i64 = row.try_get("rid").map_err(db_error)?;
            by_key.insert(rid, stored_from_row(row)?);
        }
        Ok(keys.iter().filter_map(|key| by_key.remove(key)).collect())
    }

    async fn keys_of(
        &self,
        access: &Access,
        references: &[(String, String)],
    ) -> Result<Vec<Key>, StoreError> {
        if references.is_empty() {
            return Ok(Vec::new());
        }
        let tids: Vec<String> = references
            .iter()
            .map(|(resource_type, id)| format!("{resource_type}/{id}"))
            .collect();
        let (viewer, at) = viewer(access);
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT r.rid FROM resources r LEFT JOIN compartments c ON c.id = r.pat \
             WHERE r.tid IN (SELECT value FROM json_each(?1)) AND r.deleted = 0 AND {GUARD} ORDER BY r.rid"
        )))
        .bind(json_list(&tids))
        .bind(viewer)
        .bind(at)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)
    }

    async fn referencing(
        &self,
        access: &Access,
        param: u16,
        targets: &[(String, String)],
        limit: usize,
    ) -> Result<Vec<Key>, StoreError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<Vec<&str>> = targets
            .iter()
            .map(|(resource_type, id)| vec![id.as_str(), resource_type.as_str()])
            .collect();
        let (viewer, at) = viewer(access);
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT DISTINCT x.rid FROM json_each(?1) t \
             JOIN idx_reference x ON x.param = ?4 AND x.target_id = json_extract(t.value, '$[0]') AND x.target_type = json_extract(t.value, '$[1]') \
             JOIN resources r ON r.rid = x.rid LEFT JOIN compartments c ON c.id = r.pat \
             WHERE {GUARD} ORDER BY x.rid LIMIT ?5"
        )))
        .bind(json_list(&pairs))
        .bind(viewer)
        .bind(at)
        .bind(i64::from(param))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)
    }

    async fn compartment(
        &self,
        access: &Access,
        patient: &str,
        types: &[String],
        since: Option<i64>,
    ) -> Result<Vec<Key>, StoreError> {
        let members = query::linked_scope(self.db(access), patient).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let (viewer, at) = viewer(access);
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT r.rid FROM resources r LEFT JOIN compartments c ON c.id = r.pat \
             WHERE r.pat IN (SELECT value FROM json_each(?1)) AND r.deleted = 0 \
             AND (json_array_length(?4) = 0 OR r.type IN (SELECT value FROM json_each(?4))) \
             AND (?5 IS NULL OR r.last_updated >= ?5) AND {GUARD} \
             ORDER BY r.type <> 'Patient', r.rid"
        )))
        .bind(json_list(&members))
        .bind(viewer)
        .bind(at)
        .bind(json_list(types))
        .bind(since)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)
    }

    async fn history_all(
        &self,
        access: &Access,
        resource_type: Option<&str>,
        since: Option<i64>,
        after: Option<&HistoryCursor>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        // Each side (current versions, earlier versions) is read newest first through its
        // `last_updated` index and stops after one page; the two pages are merged. The cursor
        // keeps rows after (last_updated, type, id, version) in (DESC, ASC, ASC, DESC) order;
        // its redundant `last_updated <= ?` bounds the index range.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT type, id, version, last_updated, deleted, content, patient FROM (",
        );
        // INDEXED BY and CROSS JOIN (which fixes the join order in SQLite): without statistics
        // the planner prefers scanning and sorting everything, or looping over the resources.
        let current = if resource_type.is_some() {
            "resources r INDEXED BY resources_type_updated"
        } else {
            "resources r INDEXED BY resources_updated"
        };
        for (index, (table, prefix)) in [
            (current, "r."),
            (
                "resource_history h INDEXED BY resource_history_updated CROSS JOIN resources r ON r.rid = h.rid",
                "h.",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            if index > 0 {
                sql.push(" UNION ALL ");
            }
            sql.push(format!(
                "SELECT * FROM (SELECT r.type AS type, r.id AS id, {prefix}version AS version, {prefix}last_updated AS last_updated, {prefix}deleted AS deleted, {prefix}content AS content, (SELECT patient FROM compartments WHERE id = r.pat) AS patient FROM {table} WHERE 1"
            ));
            tsunagi_store_sql::push_guard(&mut sql, access, "r.pat");
            if let Some(resource_type) = resource_type {
                sql.push(" AND r.type = ");
                sql.push_bind(resource_type.to_owned());
                if index > 0 {
                    // Earlier versions carry no type: test membership in one set of the type's
                    // rows instead of looking every version's resource up.
                    sql.push(" AND h.rid IN (SELECT rid FROM resources WHERE type = ");
                    sql.push_bind(resource_type.to_owned());
                    sql.push(")");
                }
            }
            if let Some(since) = since {
                sql.push(format!(" AND {prefix}last_updated >= "));
                sql.push_bind(since);
            }
            if let Some(cursor) = after {
                sql.push(format!(" AND {prefix}last_updated <= "));
                sql.push_bind(cursor.last_updated);
                sql.push(format!(" AND ({prefix}last_updated < "));
                sql.push_bind(cursor.last_updated);
                sql.push(" OR r.type > ");
                sql.push_bind(cursor.resource_type.clone());
                sql.push(" OR (r.type = ");
                sql.push_bind(cursor.resource_type.clone());
                sql.push(" AND (r.id > ");
                sql.push_bind(cursor.id.clone());
                sql.push(" OR (r.id = ");
                sql.push_bind(cursor.id.clone());
                sql.push(format!(" AND {prefix}version < "));
                sql.push_bind(cursor.version);
                sql.push("))))");
            }
            sql.push(format!(
                " ORDER BY {prefix}last_updated DESC, r.type, r.id, {prefix}version DESC LIMIT "
            ));
            sql.push_bind(limit);
            sql.push(")");
        }
        sql.push(") ORDER BY last_updated DESC, type, id, version DESC LIMIT ");
        sql.push_bind(limit);
        let rows = sql
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        rows.iter().map(stored_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{pow2_chunks, pow2_sizes};

    #[test]
    fn chunks_come_in_power_of_two_shapes_and_a_short_exact_tail() {
        let items: Vec<u32> = (0..1000).collect();
        let sizes: Vec<usize> = pow2_chunks(&items, 256).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![256, 256, 256, 128, 64, 32, 8]);
        assert_eq!(sizes.iter().sum::<usize>(), 1000);
        assert!(pow2_chunks::<u32>(&[], 8).is_empty());
        assert_eq!(
            pow2_chunks(&items[..5], 500)
                .iter()
                .map(|c| c.len())
                .collect::<Vec<_>>(),
            vec![5]
        );
        let sizes: Vec<usize> = pow2_chunks(&items[..150], 1000)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, vec![128, 16, 6]);
        assert_eq!(pow2_sizes(13, 1000), vec![13]);
    }
}
