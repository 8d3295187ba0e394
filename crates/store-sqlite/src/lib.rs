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
    AssertSqlSafe, QueryBuilder, Row, Sqlite, SqliteConnection, Transaction,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
        SqliteSynchronous,
    },
};
use tsunagi_core::clock::Clock;
use tsunagi_fhir::search::{self, IndexEntry, IndexValue, REGISTRY_VERSION};
use tsunagi_store::{
    ApplyStats, Batch, Operation, ResourceWrite, StoreError, governance::AuditRecord,
};
use tsunagi_store_sql::{
    Engine, SqlStore, db_error, messages,
    migrations::{self, MetaKeys},
    outbox, pow2_sizes,
};

mod epoch;
mod journal;
mod journal_import;

/// The schema, one file per version (`migrations/`), applied by `tsunagi_store_sql::migrations`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
const META_KEYS: MetaKeys = MetaKeys {
    schema: "schema_version",
    registry: "registry_version",
};

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

/// The SQLite store: the shared SQL store over the SQLite engine.
pub type SqliteStore = SqlStore<SqliteEngine>;

/// What is SQLite's own: the pools and their pragmas, migrations, the batch writer, reindexing,
/// the audit journal and the standing epoch.
#[derive(Clone)]
pub struct SqliteEngine {
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

impl std::fmt::Debug for SqliteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEngine").finish_non_exhaustive()
    }
}

impl SqliteEngine {
    /// Opens (creating if missing) the database at a `sqlite://<path>` URL and brings its
    /// schema up to date.
    pub async fn connect(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
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
        Self::migrate(&pool).await?;
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
        Ok(Self {
            pool,
            reader,
            clock,
            journal,
            epoch,
            importing: Arc::default(),
        })
    }

    /// Brings the schema up to date (an upgrade past schema 5 leaves the network's records'
    /// FHIR projections pending in `store_meta`; `SqlStore` writes them once open).
    async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
        let mut connection = pool.acquire().await.map_err(db_error)?;
        let registry = migrations::migrate::<Sqlite>(&mut connection, &MIGRATOR, META_KEYS).await?;
        drop(connection);
        if registry != REGISTRY_VERSION.to_string() {
            Self::reindex_pool(pool).await?;
        }
        Ok(())
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
                messages::insert::<Sqlite>(connection, logged).await?;
                messages::set_state::<Sqlite>(connection, seq, state, &reason).await?;
            }
            Operation::Enqueue(message) => outbox::insert::<Sqlite>(connection, &message).await?,
            Operation::SetDelivery(update) => outbox::update::<Sqlite>(connection, &update).await?,
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
        messages::insert::<Sqlite>(connection, std::mem::take(&mut self.pending_messages)).await?;
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

async fn begin(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, StoreError> {
    pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)
}

#[async_trait::async_trait]
impl Engine for SqliteEngine {
    type Db = Sqlite;
    /// 5 bound values each; SQLite allows 32766.
    const AUDIT_CHUNK: usize = 300;

    async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        SqliteEngine::connect(url, clock).await
    }

    fn writer(&self) -> &SqlitePool {
        &self.pool
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        begin(&self.pool).await
    }

    async fn apply_in(
        &self,
        connection: &mut SqliteConnection,
        batch: Batch,
    ) -> Result<ApplyStats, StoreError> {
        SqliteEngine::apply_in(self, connection, batch).await
    }

    fn standing_changed(&self) -> Result<(), StoreError> {
        match &self.epoch {
            Some(epoch) => epoch.bump(),
            None => Ok(()),
        }
    }

    fn journal(&self, records: &[AuditRecord]) -> Result<bool, StoreError> {
        // The server appends to the journal (see `crate::journal`); other processes insert.
        match &self.journal {
            Some(journal) => journal.append(records),
            None => Ok(false),
        }
    }

    async fn settle_audit(&self) -> Result<(), StoreError> {
        self.import_journal().await.map(drop)
    }

    fn standing_epoch(&self) -> Option<u64> {
        self.epoch.as_ref()?.read()
    }

    async fn start_serving(&self) -> Result<(), StoreError> {
        self.journal_audit().await
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
