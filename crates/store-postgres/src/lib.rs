//! The PostgreSQL FHIR store (`postgres://…`), for a region that outgrows one machine: the same
//! model as the SQLite store (`migrations/`), the same [`Store`] contract, checked by the
//! same conformance suite against a real server.
//!
//! Everything but writing is `tsunagi-store-sql`'s, shared with SQLite: reads, search,
//! governance, the audit, the outbox and the message log, and the consent guard. This crate
//! keeps connecting, the schema and its migrations, the writer lock, the batch writer and
//! reindexing. Not yet: an audit journal (records are committed directly) and tuned bulk writes
//! (each resource is written with plain statements).
//!
//! Writes: one transaction per batch under a transaction-level advisory lock (one writer at a
//! time, like SQLite's `BEGIN IMMEDIATE`). Each resource is written with plain statements; a
//! replaced version's index rows are deleted by `rid` (every index table has a `rid` index).

use std::{collections::HashMap, str::FromStr, sync::Arc};

use sqlx::{
    AssertSqlSafe, Executor, PgConnection, Postgres, QueryBuilder, Row,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};
use tsunagi_core::clock::Clock;
use tsunagi_fhir::search::{self, IndexEntry, IndexValue, REGISTRY_VERSION};
use tsunagi_store::{ApplyStats, Batch, Counts, Operation, ResourceWrite, StoreError};
use tsunagi_store_sql::{
    Engine, SqlStore, audit, blobs, db_error, messages,
    migrations::{self, MetaKeys},
    outbox,
};

/// The schema, one file per version (`migrations/`), applied by `tsunagi_store_sql::migrations`.
/// The advisory-lock class of node names (the other key is the name's hash).
const NODE_LOCK_CLASS: i32 = 0x7453_4e44;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
const META_KEYS: MetaKeys = MetaKeys {
    schema: "schema",
    registry: "registry",
};
/// The advisory lock every writing transaction holds ("tsunagi" in ASCII, as a number).
const WRITER_LOCK: i64 = 0x0074_7375_6e61_6769;

/// The compartment id an index row carries: a Patient's own rows carry 0 (as in SQLite).
fn index_pat(resource_type: &str, pat: i64) -> i64 {
    if resource_type == "Patient" { 0 } else { pat }
}

fn bump(map: &mut Counts, resource_type: &str) {
    *map.entry(resource_type.to_owned()).or_default() += 1;
}

/// The PostgreSQL store: the shared SQL store over the PostgreSQL engine.
pub type PostgresStore = SqlStore<PostgresEngine>;

/// What is PostgreSQL's own: the pool, the schema and its migrations, the writer lock and the
/// batch writer.
#[derive(Clone)]
pub struct PostgresEngine {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PostgresEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEngine").finish_non_exhaustive()
    }
}

impl PostgresEngine {
    /// Connects to `url` (`postgres://user@host:port/database`) inside PostgreSQL schema
    /// `schema` when one is named (created when missing: several stores share one database, as
    /// the tests do), and brings the store's schema up to date.
    pub async fn connect_in_schema(
        url: &str,
        schema: Option<&str>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let mut options =
            PgConnectOptions::from_str(url).map_err(|error| StoreError::Url(error.to_string()))?;
        if let Some(schema) = schema
            && !schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(StoreError::Url(format!(
                "schema {schema}: use lower-case letters, digits and _"
            )));
        }
        // One connection first: a server that is down or refuses us fails at once, by name,
        // instead of after the pool's acquire timeout.
        let mut connection = <PgConnection as sqlx::Connection>::connect_with(&options)
            .await
            .map_err(db_error)?;
        if let Some(schema) = schema {
            connection
                .execute(AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS {schema}"
                )))
                .await
                .map_err(db_error)?;
            options = options.options([("search_path", schema)]);
        }
        drop(connection);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(db_error)?;
        Self::migrate(&pool).await?;
        Ok(Self { pool, clock })
    }

    /// Drops `schema` and everything in it (a benchmark's or a test's own schema).
    pub async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
        if !schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(StoreError::Url(format!(
                "schema {schema}: use lower-case letters, digits and _"
            )));
        }
        let options =
            PgConnectOptions::from_str(url).map_err(|error| StoreError::Url(error.to_string()))?;
        let mut connection = <PgConnection as sqlx::Connection>::connect_with(&options)
            .await
            .map_err(db_error)?;
        connection
            .execute(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Brings the schema up to date, and the index rows when they were extracted by another
    /// search registry than this build's.
    async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
        let mut connection = pool.acquire().await.map_err(db_error)?;
        let registry =
            migrations::migrate::<Postgres>(&mut connection, &MIGRATOR, META_KEYS).await?;
        drop(connection);
        if registry != REGISTRY_VERSION.to_string() {
            Self::reindex_pool(pool, true).await?;
        }
        Ok(())
    }

    /// Rebuilds every index row, and every resource's compartment, from stored content (after a
    /// search-registry change), in one writing transaction.
    pub async fn reindex(&self) -> Result<(), StoreError> {
        Self::reindex_pool(&self.pool, false).await
    }

    async fn reindex_pool(pool: &PgPool, only_if_stale: bool) -> Result<(), StoreError> {
        let mut transaction = pool.begin().await.map_err(db_error)?;
        // Nodes starting together wait here; the first reindexes, the others find it done.
        lock_writer(&mut transaction).await?;
        if !migrations::begin_reindex::<Postgres>(&mut transaction, META_KEYS, only_if_stale)
            .await?
        {
            return Ok(());
        }
        let mut writer = BatchWriter {
            connection: &mut transaction,
            now: 0,
            systems: HashMap::new(),
            compartments: HashMap::new(),
            stats: ApplyStats::default(),
        };
        let mut last_rid = 0i64;
        loop {
            let rows = sqlx::query(
                "SELECT rid, type, content FROM resources \
                 WHERE NOT deleted AND rid > $1 ORDER BY rid LIMIT 1000",
            )
            .bind(last_rid)
            .fetch_all(&mut *writer.connection)
            .await
            .map_err(db_error)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let rid: i64 = row.try_get("rid").map_err(db_error)?;
                let resource_type: String = row.try_get("type").map_err(db_error)?;
                let content: Vec<u8> = row.try_get("content").map_err(db_error)?;
                let value: serde_json::Value = serde_json::from_slice(&content)
                    .map_err(|error| StoreError::Corrupt(error.to_string()))?;
                let patient = search::compartment_patient(&resource_type, &value);
                // An existing compartment keeps its facility; one the reindex creates gets it in
                // `finish_reindex`, from its Patient's source key, or stays without one.
                let pat = writer.compartment(patient.as_deref(), None).await?;
                sqlx::query("UPDATE resources SET pat = $1 WHERE rid = $2")
                    .bind(pat)
                    .bind(rid)
                    .execute(&mut *writer.connection)
                    .await
                    .map_err(db_error)?;
                let entries = search::extract(&resource_type, &value);
                writer
                    .insert_index(rid, index_pat(&resource_type, pat), entries)
                    .await?;
                last_rid = rid;
            }
        }
        migrations::finish_reindex::<Postgres>(&mut transaction, META_KEYS).await?;
        transaction.commit().await.map_err(db_error)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Takes the writer lock for the rest of the transaction.
async fn lock_writer(connection: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITER_LOCK)
        .execute(&mut *connection)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// The current row of a resource, as a batch sees it.
struct Existing {
    rid: i64,
    resource_type: String,
    deleted: bool,
    hash: Option<i64>,
    source_key: Option<String>,
}

/// One batch's writes, inside its transaction.
struct BatchWriter<'c> {
    connection: &'c mut PgConnection,
    now: i64,
    systems: HashMap<String, i64>,
    compartments: HashMap<String, i64>,
    stats: ApplyStats,
}

impl BatchWriter<'_> {
    async fn apply(&mut self, operation: Operation) -> Result<(), StoreError> {
        match operation {
            Operation::ReplaceSource {
                source_key,
                facility,
                resources,
            } => {
                let mut listed = Vec::with_capacity(resources.len());
                for write in &resources {
                    let tid = write.type_and_id();
                    if listed.contains(&tid) {
                        return Err(StoreError::Invalid(format!(
                            "{tid} appears twice in source record {source_key}"
                        )));
                    }
                    listed.push(tid);
                }
                for write in resources {
                    self.upsert(&source_key, &facility, write).await?;
                }
                let dropped: Vec<String> = sqlx::query_scalar(
                    "SELECT tid FROM resources WHERE source_key = $1 AND NOT deleted AND NOT (tid = ANY($2)) ORDER BY rid",
                )
                .bind(&source_key)
                .bind(&listed)
                .fetch_all(&mut *self.connection)
                .await
                .map_err(db_error)?;
                for tid in dropped {
                    self.delete(&tid).await?;
                }
            }
            Operation::DeleteSource { source_key } => {
                let held: Vec<String> = sqlx::query_scalar(
                    "SELECT tid FROM resources WHERE source_key = $1 AND NOT deleted ORDER BY rid",
                )
                .bind(&source_key)
                .fetch_all(&mut *self.connection)
                .await
                .map_err(db_error)?;
                for tid in held {
                    self.delete(&tid).await?;
                }
            }
            Operation::PutCheckpoint { scope, key, value } => {
                sqlx::query(
                    "INSERT INTO checkpoints (scope, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (scope, key) DO UPDATE SET value = EXCLUDED.value",
                )
                .bind(scope)
                .bind(key)
                .bind(value)
                .execute(&mut *self.connection)
                .await
                .map_err(db_error)?;
            }
            Operation::LogMessage(message) => {
                messages::insert::<Postgres>(&mut *self.connection, vec![*message]).await?;
            }
            Operation::SetMessageState { seq, state, reason } => {
                messages::set_state::<Postgres>(&mut *self.connection, seq, state, &reason).await?;
            }
            Operation::Enqueue(message) => {
                outbox::insert::<Postgres>(&mut *self.connection, &message).await?;
            }
            Operation::SetDelivery(update) => {
                outbox::update::<Postgres>(&mut *self.connection, &update).await?;
            }
            Operation::Audit(record) => {
                audit::insert::<Postgres>(&mut *self.connection, std::slice::from_ref(&*record), 1)
                    .await?;
            }
            Operation::PutBlob { sha256, bytes } => {
                blobs::insert::<Postgres>(&mut *self.connection, &sha256, bytes).await?;
            }
        }
        Ok(())
    }

    /// The compartment id of `patient` (0 for none), created when new; a compartment keeps
    /// the facility that first wrote it.
    async fn compartment(
        &mut self,
        patient: Option<&str>,
        facility: Option<&str>,
    ) -> Result<i64, StoreError> {
        let Some(patient) = patient else {
            return Ok(0);
        };
        if let Some(id) = self.compartments.get(patient) {
            return Ok(*id);
        }
        sqlx::query(
            "INSERT INTO compartments (patient, facility) VALUES ($1, $2) \
             ON CONFLICT (patient) DO UPDATE SET facility = EXCLUDED.facility WHERE compartments.facility IS NULL",
        )
        .bind(patient)
        .bind(facility)
        .execute(&mut *self.connection)
        .await
        .map_err(db_error)?;
        let id: i64 = sqlx::query_scalar("SELECT id FROM compartments WHERE patient = $1")
            .bind(patient)
            .fetch_one(&mut *self.connection)
            .await
            .map_err(db_error)?;
        self.compartments.insert(patient.to_owned(), id);
        Ok(id)
    }

    async fn existing(&mut self, tid: &str) -> Result<Option<Existing>, StoreError> {
        let row = sqlx::query(
            "SELECT rid, type, deleted, hash, source_key FROM resources WHERE tid = $1",
        )
        .bind(tid)
        .fetch_optional(&mut *self.connection)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            Ok(Existing {
                rid: row.try_get("rid").map_err(db_error)?,
                resource_type: row.try_get("type").map_err(db_error)?,
                deleted: row.try_get("deleted").map_err(db_error)?,
                hash: row.try_get("hash").map_err(db_error)?,
                source_key: row.try_get("source_key").map_err(db_error)?,
            })
        })
        .transpose()
    }

    async fn upsert(
        &mut self,
        source_key: &str,
        facility: &str,
        write: ResourceWrite,
    ) -> Result<(), StoreError> {
        let pat = self
            .compartment(write.compartment.as_deref(), Some(facility))
            .await?;
        let hash = write.hash as i64;
        let Some(existing) = self.existing(&write.tid).await? else {
            let rid: i64 = sqlx::query_scalar(
                "INSERT INTO resources (tid, type, id, version, last_updated, deleted, source_key, hash, content, pat) \
                 VALUES ($1, $2, $3, 1, $4, FALSE, $5, $6, $7, $8) RETURNING rid",
            )
            .bind(&write.tid)
            .bind(&write.resource_type)
            .bind(&write.id)
            .bind(self.now)
            .bind(source_key)
            .bind(hash)
            .bind(&write.content)
            .bind(pat)
            .fetch_one(&mut *self.connection)
            .await
            .map_err(db_error)?;
            bump(&mut self.stats.created, &write.resource_type);
            return self
                .insert_index(rid, index_pat(&write.resource_type, pat), write.index)
                .await;
        };
        if !existing.deleted && existing.hash == Some(hash) {
            bump(&mut self.stats.unchanged, &write.resource_type);
            if existing.source_key.as_deref() != Some(source_key) {
                sqlx::query("UPDATE resources SET source_key = $1 WHERE rid = $2")
                    .bind(source_key)
                    .bind(existing.rid)
                    .execute(&mut *self.connection)
                    .await
                    .map_err(db_error)?;
            }
            return Ok(());
        }
        self.remove_index(existing.rid).await?;
        self.archive(existing.rid).await?;
        sqlx::query(
            "UPDATE resources SET version = version + 1, last_updated = $1, deleted = FALSE, source_key = $2, hash = $3, content = $4, pat = $5 WHERE rid = $6",
        )
        .bind(self.now)
        .bind(source_key)
        .bind(hash)
        .bind(&write.content)
        .bind(pat)
        .bind(existing.rid)
        .execute(&mut *self.connection)
        .await
        .map_err(db_error)?;
        bump(&mut self.stats.updated, &write.resource_type);
        self.insert_index(
            existing.rid,
            index_pat(&write.resource_type, pat),
            write.index,
        )
        .await
    }

    async fn delete(&mut self, tid: &str) -> Result<(), StoreError> {
        let Some(existing) = self.existing(tid).await? else {
            return Ok(());
        };
        if existing.deleted {
            return Ok(());
        }
        self.remove_index(existing.rid).await?;
        self.archive(existing.rid).await?;
        sqlx::query(
            "UPDATE resources SET version = version + 1, last_updated = $1, deleted = TRUE, hash = NULL, content = NULL WHERE rid = $2",
        )
        .bind(self.now)
        .bind(existing.rid)
        .execute(&mut *self.connection)
        .await
        .map_err(db_error)?;
        bump(&mut self.stats.deleted, &existing.resource_type);
        Ok(())
    }

    /// Copies the current version into history.
    async fn archive(&mut self, rid: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO resource_history (rid, version, last_updated, deleted, content) \
             SELECT rid, version, last_updated, deleted, content FROM resources WHERE rid = $1",
        )
        .bind(rid)
        .execute(&mut *self.connection)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn remove_index(&mut self, rid: i64) -> Result<(), StoreError> {
        for table in [
            "idx_text",
            "idx_token",
            "idx_string",
            "idx_date",
            "idx_reference",
            "idx_quantity",
        ] {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE rid = $1")))
                .bind(rid)
                .execute(&mut *self.connection)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    async fn system_id(&mut self, system: &str) -> Result<i64, StoreError> {
        if let Some(id) = self.systems.get(system) {
            return Ok(*id);
        }
        sqlx::query(
            "INSERT INTO token_systems (system) VALUES ($1) ON CONFLICT (system) DO NOTHING",
        )
        .bind(system)
        .execute(&mut *self.connection)
        .await
        .map_err(db_error)?;
        let id: i64 = sqlx::query_scalar("SELECT id FROM token_systems WHERE system = $1")
            .bind(system)
            .fetch_one(&mut *self.connection)
            .await
            .map_err(db_error)?;
        self.systems.insert(system.to_owned(), id);
        Ok(id)
    }

    /// Writes one resource's index rows, one multi-row INSERT per table.
    async fn insert_index(
        &mut self,
        rid: i64,
        pat: i64,
        index: Vec<IndexEntry>,
    ) -> Result<(), StoreError> {
        let mut tokens = Vec::new();
        let mut strings = Vec::new();
        let mut dates = Vec::new();
        let mut references = Vec::new();
        let mut quantities = Vec::new();
        let mut texts = Vec::new();
        for entry in index {
            let param = i64::from(entry.param);
            match entry.value {
                IndexValue::Token { system, code } => {
                    tokens.push((param, code, self.system_id(&system).await?));
                }
                IndexValue::String(text) => strings.push((param, text)),
                IndexValue::Date { start, end } => dates.push((param, start, end)),
                IndexValue::Reference {
                    target_type,
                    target_id,
                } => references.push((param, target_id, target_type)),
                IndexValue::Quantity {
                    value,
                    system,
                    code,
                } => quantities.push((param, code, value, system)),
                IndexValue::Text { narrative, other } => texts.push((param, narrative, other)),
            }
        }
        for (param, narrative, other) in texts {
            sqlx::query(
                "INSERT INTO idx_text (rid, param, pat, narrative, other) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(rid)
            .bind(param)
            .bind(pat)
            .bind(narrative)
            .bind(other)
            .execute(&mut *self.connection)
            .await
            .map_err(db_error)?;
        }
        if !tokens.is_empty() {
            let mut sql = QueryBuilder::<Postgres>::new(
                "INSERT INTO idx_token (param, code, pat, system_id, rid) ",
            );
            sql.push_values(tokens, |mut row, (param, code, system)| {
                row.push_bind(param)
                    .push_bind(code)
                    .push_bind(pat)
                    .push_bind(system)
                    .push_bind(rid);
            });
            sql.push(" ON CONFLICT DO NOTHING");
            self.run(sql).await?;
        }
        if !strings.is_empty() {
            let mut sql =
                QueryBuilder::<Postgres>::new("INSERT INTO idx_string (param, pat, value, rid) ");
            sql.push_values(strings, |mut row, (param, value)| {
                row.push_bind(param)
                    .push_bind(pat)
                    .push_bind(value)
                    .push_bind(rid);
            });
            sql.push(" ON CONFLICT DO NOTHING");
            self.run(sql).await?;
        }
        if !dates.is_empty() {
            let mut sql = QueryBuilder::<Postgres>::new(
                "INSERT INTO idx_date (param, pat, start, \"end\", rid) ",
            );
            sql.push_values(dates, |mut row, (param, start, end)| {
                row.push_bind(param)
                    .push_bind(pat)
                    .push_bind(start)
                    .push_bind(end)
                    .push_bind(rid);
            });
            sql.push(" ON CONFLICT DO NOTHING");
            self.run(sql).await?;
        }
        if !references.is_empty() {
            let mut sql = QueryBuilder::<Postgres>::new(
                "INSERT INTO idx_reference (param, target_id, target_type, rid) ",
            );
            sql.push_values(references, |mut row, (param, target_id, target_type)| {
                row.push_bind(param)
                    .push_bind(target_id)
                    .push_bind(target_type)
                    .push_bind(rid);
            });
            sql.push(" ON CONFLICT DO NOTHING");
            self.run(sql).await?;
        }
        if !quantities.is_empty() {
            let mut sql = QueryBuilder::<Postgres>::new(
                "INSERT INTO idx_quantity (param, code, pat, value, system, rid) ",
            );
            sql.push_values(quantities, |mut row, (param, code, value, system)| {
                row.push_bind(param)
                    .push_bind(code)
                    .push_bind(pat)
                    .push_bind(value)
                    .push_bind(system)
                    .push_bind(rid);
            });
            sql.push(" ON CONFLICT DO NOTHING");
            self.run(sql).await?;
        }
        Ok(())
    }

    async fn run(&mut self, mut sql: QueryBuilder<Postgres>) -> Result<(), StoreError> {
        sql.build()
            .execute(&mut *self.connection)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Engine for PostgresEngine {
    type Db = Postgres;
    /// 5 bound values each; PostgreSQL allows 65535.
    const AUDIT_CHUNK: usize = 1000;

    async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Self::connect_in_schema(url, None, clock).await
    }

    async fn hold_node(&self, node: &str) -> Result<Option<tsunagi_store::NodeHold>, StoreError> {
        // A session advisory lock on a connection of its own, kept for the process's life:
        // PostgreSQL lets it go when that session ends, however the process ends.
        let options = (*self.pool.connect_options()).clone();
        let mut connection = <PgConnection as sqlx::Connection>::connect_with(&options)
            .await
            .map_err(db_error)?;
        let held: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext('tsunagi-node:' || $2))")
                .bind(NODE_LOCK_CLASS)
                .bind(node)
                .fetch_one(&mut connection)
                .await
                .map_err(db_error)?;
        Ok(held.then(|| Box::new(std::sync::Mutex::new(connection)) as tsunagi_store::NodeHold))
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        let mut transaction = self.pool.begin().await.map_err(db_error)?;
        lock_writer(&mut transaction).await?;
        Ok(transaction)
    }

    async fn apply_in(
        &self,
        connection: &mut PgConnection,
        batch: Batch,
    ) -> Result<ApplyStats, StoreError> {
        let mut writer = BatchWriter {
            connection,
            now: self.clock.now_micros(),
            systems: HashMap::new(),
            compartments: HashMap::new(),
            stats: ApplyStats::default(),
        };
        for operation in batch.operations {
            writer.apply(operation).await?;
        }
        Ok(writer.stats)
    }
}
