//! The PostgreSQL FHIR store (`postgres://…`), for a region that outgrows one machine: the same
//! model as the SQLite store (`src/schema.sql`), the same [`Store`] contract, checked by the
//! same conformance suite against a real server.
//!
//! Status: the whole conformance suite passes against a real server — storage semantics,
//! search (`query.rs`, the SQLite planner in PostgreSQL's dialect), includes, compartments,
//! history, the governance records and the access policy matrix; the CLI opens `postgres://`
//! URLs for every command. Not yet: a reindex after a search-registry change (such a database
//! is refused with a message), an audit journal (records are committed directly), and tuned
//! bulk writes (each resource is written with plain statements).
//!
//! Writes: one transaction per batch under a transaction-level advisory lock (one writer at a
//! time, like SQLite's `BEGIN IMMEDIATE`). Each resource is written with plain statements; a
//! replaced version's index rows are deleted by `rid` (every index table has a `rid` index).

use std::{collections::HashMap, str::FromStr, sync::Arc};

use sqlx::{
    AssertSqlSafe, Executor, PgConnection, Postgres, QueryBuilder, Row,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow},
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

/// The whole schema (version [`SCHEMA_VERSION`]).
const SCHEMA: &str = include_str!("schema.sql");
/// Schema 2: the inbound message log, added to schema 1 databases in place.
const SCHEMA_2: &str = include_str!("messages.sql");
/// Schema 3: the outbound queue, added in place.
const SCHEMA_3: &str = include_str!("outbox.sql");
/// Schema 4: portals' served facilities, facility deactivation, revocations.
const SCHEMA_4: &str = include_str!("standing.sql");
const SCHEMA_5: &str = include_str!("lab_reports.sql");
const SCHEMA_VERSION: &str = "5";
/// Seconds an assertion id is remembered past its `exp` (clock skew between client and us).
const ASSERTION_MEMORY_SLACK: i64 = 60;
/// The advisory lock every writing transaction holds ("tsunagi" in ASCII, as a number).
const WRITER_LOCK: i64 = 0x0074_7375_6e61_6769;

/// The permitted-rows condition over `resources r LEFT JOIN compartments c ON c.id = r.pat`,
/// with the viewer as `$2` (NULL: unrestricted) and the instant as `$3`; the same test as the
/// SQLite store's `GUARD`.
const GUARD: &str = "($2::text IS NULL OR r.pat = 0 OR c.facility = $2 OR EXISTS (SELECT 1 FROM access a WHERE a.viewer = $2 AND a.pat = r.pat AND a.not_before <= $3 AND a.not_after > $3))";

mod governance;
mod messages;
mod outbox;
mod query;

fn db_error(error: sqlx::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

/// The `$2` and `$3` of [`GUARD`].
fn viewer(access: &Access) -> (Option<&str>, i64) {
    match access {
        Access::Facility { code, at } => (Some(code.as_str()), *at),
        Access::Unrestricted => (None, 0),
    }
}

/// The compartment id an index row carries: a Patient's own rows carry 0 (as in SQLite).
fn index_pat(resource_type: &str, pat: i64) -> i64 {
    if resource_type == "Patient" { 0 } else { pat }
}

fn bump(map: &mut Counts, resource_type: &str) {
    *map.entry(resource_type.to_owned()).or_default() += 1;
}

fn stored_from_row(row: &PgRow) -> Result<StoredResource, StoreError> {
    Ok(StoredResource {
        resource_type: row.try_get("type").map_err(db_error)?,
        id: row.try_get("id").map_err(db_error)?,
        version: row.try_get("version").map_err(db_error)?,
        last_updated: row.try_get("last_updated").map_err(db_error)?,
        deleted: row.try_get("deleted").map_err(db_error)?,
        content: row.try_get("content").map_err(db_error)?,
        patient: row.try_get("patient").map_err(db_error)?,
    })
}

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/database`) and creates the schema in an
    /// empty database.
    pub async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Self::open_in_schema(url, None, clock).await
    }

    /// [`PostgresStore::open`] inside PostgreSQL schema `schema` (created when missing): several
    /// stores share one database, as the tests do.
    pub async fn open_in_schema(
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

    /// Creates the schema in an empty database; refuses one of another schema version or
    /// search-registry version (the stored index rows would not be the ones this build reads).
    async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
        let mut transaction = pool.begin().await.map_err(db_error)?;
        lock_writer(&mut transaction).await?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'store_meta')",
        )
        .fetch_one(&mut *transaction)
        .await
        .map_err(db_error)?;
        if !exists {
            sqlx::raw_sql(SCHEMA)
                .execute(&mut *transaction)
                .await
                .map_err(db_error)?;
            sqlx::query(
                "INSERT INTO store_meta (key, value) VALUES ('schema', '1'), ('registry', $1)",
            )
            .bind(REGISTRY_VERSION.to_string())
            .execute(&mut *transaction)
            .await
            .map_err(db_error)?;
        }
        // Each step reads the version the previous one left.
        for (from, script, to) in [
            ("1", SCHEMA_2, "2"),
            ("2", SCHEMA_3, "3"),
            ("3", SCHEMA_4, "4"),
            ("4", SCHEMA_5, "5"),
        ] {
            let current: Option<String> =
                sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'schema'")
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(db_error)?;
            if current.as_deref() == Some(from) {
                sqlx::raw_sql(script)
                    .execute(&mut *transaction)
                    .await
                    .map_err(db_error)?;
                sqlx::query("UPDATE store_meta SET value = $1 WHERE key = 'schema'")
                    .bind(to)
                    .execute(&mut *transaction)
                    .await
                    .map_err(db_error)?;
            }
        }
        let meta: HashMap<String, String> =
            sqlx::query_as("SELECT key, value FROM store_meta WHERE key IN ('schema', 'registry')")
                .fetch_all(&mut *transaction)
                .await
                .map_err(db_error)?
                .into_iter()
                .collect();
        transaction.commit().await.map_err(db_error)?;
        if meta.get("schema").map(String::as_str) != Some(SCHEMA_VERSION) {
            return Err(StoreError::Unsupported(format!(
                "this PostgreSQL database has store schema {:?}; this build reads schema {SCHEMA_VERSION}",
                meta.get("schema")
            )));
        }
        if meta.get("registry") != Some(&REGISTRY_VERSION.to_string()) {
            return Err(StoreError::Unsupported(format!(
                "this PostgreSQL database was indexed with search registry {:?}; this build uses {REGISTRY_VERSION}, and reindexing is not yet available on PostgreSQL",
                meta.get("registry")
            )));
        }
        Ok(())
    }

    /// A transaction holding the writer lock.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        let mut transaction = self.pool.begin().await.map_err(db_error)?;
        lock_writer(&mut transaction).await?;
        Ok(transaction)
    }

    /// Applies `batch` inside a transaction that holds the writer lock.
    pub(crate) async fn apply_in(
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

    fn db<'a>(&'a self, access: &'a Access) -> query::Db<'a> {
        query::Db {
            pool: &self.pool,
            access,
        }
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
                messages::insert(&mut *self.connection, &message).await?;
            }
            Operation::SetMessageState { seq, state, reason } => {
                messages::set_state(&mut *self.connection, seq, state, &reason).await?;
            }
            Operation::Enqueue(message) => {
                outbox::insert(&mut *self.connection, &message).await?;
            }
            Operation::SetDelivery(update) => {
                outbox::update(&mut *self.connection, &update).await?;
            }
        }
        Ok(())
    }

    /// The compartment id of `patient` (0 for none), created when new; a compartment keeps
    /// the facility that first wrote it.
    async fn compartment(
        &mut self,
        patient: Option<&str>,
        facility: &str,
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
            .compartment(write.compartment.as_deref(), facility)
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
            }
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
impl Store for PostgresStore {
    async fn apply(&self, batch: Batch) -> Result<ApplyStats, StoreError> {
        let mut transaction = self.begin_write().await?;
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
             FROM resources r LEFT JOIN compartments c ON c.id = r.pat WHERE r.tid = $1 AND {GUARD}"
        )))
        .bind(format!("{resource_type}/{id}"))
        .bind(viewer)
        .bind(at)
        .fetch_optional(&self.pool)
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
        let (viewer, at) = viewer(access);
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT r.type, r.id, r.version, r.last_updated, r.deleted, r.content, c.patient \
             FROM resources r LEFT JOIN compartments c ON c.id = r.pat \
             WHERE r.tid = $1 AND r.version = $4 AND {GUARD} \
             UNION ALL \
             SELECT r.type, r.id, h.version, h.last_updated, h.deleted, h.content, c.patient \
             FROM resource_history h JOIN resources r ON r.rid = h.rid LEFT JOIN compartments c ON c.id = r.pat \
             WHERE r.tid = $1 AND h.version = $4 AND {GUARD}"
        )))
        .bind(format!("{resource_type}/{id}"))
        .bind(viewer)
        .bind(at)
        .bind(version)
        .fetch_optional(&self.pool)
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
             FROM resources r LEFT JOIN compartments c ON c.id = r.pat WHERE r.tid = $1 AND {GUARD} \
             UNION ALL \
             SELECT r.type, r.id, h.version, h.last_updated, h.deleted, h.content, c.patient \
             FROM resource_history h JOIN resources r ON r.rid = h.rid LEFT JOIN compartments c ON c.id = r.pat \
             WHERE r.tid = $1 AND {GUARD} \
             ORDER BY version DESC"
        )))
        .bind(format!("{resource_type}/{id}"))
        .bind(viewer)
        .bind(at)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(stored_from_row).collect()
    }

    async fn checkpoint(&self, scope: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT value FROM checkpoints WHERE scope = $1 AND key = $2")
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
        sqlx::query_as(
            "SELECT scope, key, value FROM checkpoints WHERE scope = ANY($1) ORDER BY scope, key",
        )
        .bind(scopes)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn checkpoints(&self, scope: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        sqlx::query_as("SELECT key, value FROM checkpoints WHERE scope = $1 ORDER BY key")
            .bind(scope)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn for_each_current(&self, visit: &mut Visitor<'_>) -> Result<u64, StoreError> {
        let mut last = String::new();
        let mut count = 0u64;
        loop {
            let rows = sqlx::query(
                "SELECT r.tid, r.type, r.id, r.version, r.last_updated, r.deleted, r.content, c.patient \
                 FROM resources r LEFT JOIN compartments c ON c.id = r.pat \
                 WHERE NOT r.deleted AND r.tid > $1 ORDER BY r.tid LIMIT 500",
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
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT type, COUNT(*) FROM resources WHERE NOT deleted GROUP BY type")
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(resource_type, n)| (resource_type, n.max(0) as u64))
            .collect())
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
        sqlx::query_scalar(
            "SELECT r.id FROM idx_token t JOIN resources r ON r.rid = t.rid \
             WHERE t.param = $1 AND t.code = $2 AND NOT r.deleted \
             AND ($3::text IS NULL OR t.system_id = (SELECT id FROM token_systems WHERE system = $3)) \
             ORDER BY r.id",
        )
        .bind(i64::from(definition.id))
        .bind(code)
        .bind(system.map(canonical))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)
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
        sqlx::query_scalar(
            "SELECT r.id FROM idx_reference x JOIN resources r ON r.rid = x.rid \
             WHERE x.param = $1 AND x.target_id = $2 AND x.target_type = $3 AND NOT r.deleted ORDER BY r.id",
        )
        .bind(i64::from(definition.id))
        .bind(target_id)
        .bind(target_type)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)
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
             WHERE r.rid = ANY($1) AND NOT r.deleted AND {GUARD}"
        )))
        .bind(keys)
        .bind(viewer)
        .bind(at)
        .fetch_all(&self.pool)
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
             WHERE r.tid = ANY($1) AND NOT r.deleted AND {GUARD} ORDER BY r.rid"
        )))
        .bind(&tids)
        .bind(viewer)
        .bind(at)
        .fetch_all(&self.pool)
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
        let types: Vec<&str> = targets.iter().map(|(t, _)| t.as_str()).collect();
        let ids: Vec<&str> = targets.iter().map(|(_, id)| id.as_str()).collect();
        let (viewer, at) = viewer(access);
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT DISTINCT x.rid FROM UNNEST($1::text[], $4::text[]) AS t (target_type, target_id) \
             JOIN idx_reference x ON x.param = $5 AND x.target_id = t.target_id AND x.target_type = t.target_type \
             JOIN resources r ON r.rid = x.rid LEFT JOIN compartments c ON c.id = r.pat \
             WHERE {GUARD} ORDER BY x.rid LIMIT $6"
        )))
        .bind(&types)
        .bind(viewer)
        .bind(at)
        .bind(&ids)
        .bind(i64::from(param))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
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
        let (viewer, at) = viewer(access);
        // The patient's compartment if the viewer may see it, with the compartments linked to
        // it (紐付け); a compartment one may not see adds nothing, so naming it never reveals
        // its links. Rows are still subject to the row guard.
        let permitted = "($2::text IS NULL OR p.facility = $2 OR EXISTS (SELECT 1 FROM access a WHERE a.viewer = $2 AND a.pat = p.id AND a.not_before <= $3 AND a.not_after > $3))";
        sqlx::query_scalar(AssertSqlSafe(format!(
            "WITH own AS (SELECT p.id FROM compartments p WHERE p.patient = $1 AND {permitted}), \
             scope AS (SELECT id FROM own UNION SELECT l2.compartment FROM own \
                JOIN patient_links l1 ON l1.compartment = own.id JOIN patient_links l2 ON l2.regional = l1.regional) \
             SELECT r.rid FROM resources r LEFT JOIN compartments c ON c.id = r.pat \
             WHERE r.pat IN (SELECT id FROM scope) AND NOT r.deleted \
             AND (cardinality($4::text[]) = 0 OR r.type = ANY($4)) \
             AND ($5::bigint IS NULL OR r.last_updated >= $5) AND {GUARD} \
             ORDER BY r.type <> 'Patient', r.rid"
        )))
        .bind(patient)
        .bind(viewer)
        .bind(at)
        .bind(types)
        .bind(since)
        .fetch_all(&self.pool)
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
        // Current and earlier versions, each side newest first and cut at one page, merged in
        // [`HistoryCursor`] order: (last_updated DESC, type, id, version DESC).
        let (viewer, at) = viewer(access);
        let (cursor_updated, cursor_type, cursor_id, cursor_version) = match after {
            Some(cursor) => (
                Some(cursor.last_updated),
                Some(cursor.resource_type.as_str()),
                Some(cursor.id.as_str()),
                Some(cursor.version),
            ),
            None => (None, None, None, None),
        };
        let side = |prefix: &str, from: &str| {
            format!(
                "(SELECT r.type, r.id, {prefix}version AS version, {prefix}last_updated AS last_updated, \
                 {prefix}deleted AS deleted, {prefix}content AS content, c.patient \
                 FROM {from} LEFT JOIN compartments c ON c.id = r.pat \
                 WHERE {GUARD} AND ($4::text IS NULL OR r.type = $4) \
                 AND ($5::bigint IS NULL OR {prefix}last_updated >= $5) \
                 AND ($6::bigint IS NULL OR {prefix}last_updated < $6 OR ({prefix}last_updated = $6 AND \
                      (r.type > $7 OR (r.type = $7 AND (r.id > $8 OR (r.id = $8 AND {prefix}version < $9)))))) \
                 ORDER BY {prefix}last_updated DESC, r.type, r.id, {prefix}version DESC LIMIT $1)"
            )
        };
        let sql = format!(
            "SELECT * FROM ({} UNION ALL {}) AS page ORDER BY last_updated DESC, type, id, version DESC LIMIT $1",
            side("r.", "resources r"),
            side("h.", "resource_history h JOIN resources r ON r.rid = h.rid"),
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(viewer)
            .bind(at)
            .bind(resource_type)
            .bind(since)
            .bind(cursor_updated)
            .bind(cursor_type)
            .bind(cursor_id)
            .bind(cursor_version)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(stored_from_row).collect()
    }
}
