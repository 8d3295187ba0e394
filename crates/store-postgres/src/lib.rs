//! The PostgreSQL FHIR store (`postgres://…`), for a region that outgrows one machine: the same
//! model as the SQLite store (`migrations/`), the same [`Store`] contract, checked by the
//! same conformance suite against a real server.
//!
//! Everything but writing is `tsunagi-store-sql`'s, shared with SQLite: reads, search,
//! governance, the audit, the outbox and the message log, and the consent guard. This crate
//! keeps connecting, the schema and its migrations, the writer lock, the batch writer
//! ([`writer`]: planned in memory, written in bulk) and reindexing. Not yet: an audit journal
//! (records are committed directly).
//!
//! Writes: one transaction per batch under a transaction-level advisory lock (one writer at a
//! time, like SQLite's `BEGIN IMMEDIATE`); a replaced version's index rows are deleted by `rid`
//! (every index table has a `rid` index).

use std::{str::FromStr, sync::Arc};

use sqlx::{
    AssertSqlSafe, Executor, PgConnection, Postgres, Row,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};
use tsunagi_core::clock::Clock;
use tsunagi_fhir::search::{self, REGISTRY_VERSION};
use tsunagi_store::{ApplyStats, Batch, StoreError};
use tsunagi_store_sql::{
    Engine, SqlStore, db_error,
    hot::{Connections, PING_WHEN_IDLE},
    migrations::{self, MetaKeys},
};

/// The advisory-lock class of node names (the other key is the name's hash).
const NODE_LOCK_CLASS: i32 = 0x7453_4e44;

/// The schema, one file per version (`migrations/`), applied by `tsunagi_store_sql::migrations`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
const META_KEYS: MetaKeys = MetaKeys {
    schema: "schema",
    registry: "registry",
};
/// Connections of the pool's 8 kept checked out between statements (a round trip fewer for each
/// statement: sqlx tests every connection it takes back); the other 4 are always the pool's.
const KEPT_CONNECTIONS: usize = 4;

/// The advisory lock every writing transaction holds ("tsunagi" in ASCII, as a number).
const WRITER_LOCK: i64 = 0x0074_7375_6e61_6769;

/// The PostgreSQL store: the shared SQL store over the PostgreSQL engine.
pub type PostgresStore = SqlStore<PostgresEngine>;

mod copy;
mod index_rows;
mod standing;
mod writer;
use writer::{BatchWriter, index_pat};

/// What is PostgreSQL's own: the pool, the schema and its migrations, the writer lock and the
/// batch writer.
#[derive(Clone)]
pub struct PostgresEngine {
    /// The pool, with up to [`KEPT_CONNECTIONS`] connections kept between statements.
    connections: Arc<Connections<Postgres>>,
    clock: Arc<dyn Clock>,
    /// This node's standing epoch, heard from the other nodes' changes once it serves.
    epoch: Arc<standing::ListenedEpoch>,
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
            // A connection idle for a while is pinged before use (one round trip), so one the
            // server or a proxy dropped is replaced, not handed to a request; one in steady use
            // is not. sqlx's default pinged on every acquire too: a round trip on the path of
            // every statement. (sqlx still pings each connection it takes back, in a task of
            // its own, off the request's path.)
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_WHEN_IDLE {
                        sqlx::Connection::ping(connection).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(db_error)?;
        Self::migrate(&pool).await?;
        Ok(Self {
            connections: Arc::new(Connections::new(pool, KEPT_CONNECTIONS)),
            clock,
            epoch: Arc::default(),
        })
    }

    /// Whether this store's connections to the server are encrypted (TLS), as the server sees
    /// one of them (`pg_stat_ssl`). The URL decides: `sslmode=verify-full` and `sslrootcert=…`
    /// as with libpq; without `sslmode`, TLS is used when the server offers it (`prefer`).
    pub async fn uses_tls(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(self.connections.pool())
            .await
            .map_err(db_error)
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
        Self::reindex_pool(self.connections.pool(), false).await
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
        let mut writer = BatchWriter::new(&mut transaction, 0);
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
                writer.queue_index(rid, index_pat(&resource_type, pat), entries);
                last_rid = rid;
            }
            writer.flush().await?;
        }
        migrations::finish_reindex::<Postgres>(&mut transaction, META_KEYS).await?;
        transaction.commit().await.map_err(db_error)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.connections.close().await;
    }
}

/// A node name's session advisory lock, on the connection that holds it.
struct NameHold {
    connection: PgConnection,
    /// The holding session's backend, as `pg_locks` names it.
    pid: i32,
    /// The lock's second key (the schema's and the name's hash).
    key: i32,
    /// For asking about that session over another connection.
    pool: sqlx::PgPool,
}

/// The `pg_locks` row of a hold: backend `$1`, keys `$2` and `$3` (`oid`s are unsigned).
const THIS_HOLD: &str = "pid = $1 AND locktype = 'advisory' AND objsubid = 2 \
     AND classid = (($2::int8 + 4294967296) % 4294967296)::oid \
     AND objid = (($3::int8 + 4294967296) % 4294967296)::oid";

/// How long a check of the hold waits for an answer.
const HOLD_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[async_trait::async_trait]
impl tsunagi_store::HeldName for NameHold {
    /// Held while the session answers. A session that failed is taken as ended, and its
    /// backend, should it linger with the lock, is ended too, so the name can be held again at
    /// once. A session that is only slow (a busy server) is asked about over the pool: held
    /// while `pg_locks` shows its lock. When that cannot be asked either (the server, or this
    /// node's pool, does not answer), it still counts as held and the next check asks again:
    /// meanwhile the claims' fences keep delivery at least once.
    async fn still_held(&mut self) -> bool {
        let ping = sqlx::query("SELECT 1").execute(&mut self.connection);
        match tokio::time::timeout(HOLD_CHECK_TIMEOUT, ping).await {
            Ok(Ok(_)) => true,
            Ok(Err(_)) => {
                let end = sqlx::query(AssertSqlSafe(format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE {THIS_HOLD}"
                )))
                .bind(self.pid)
                .bind(i64::from(NODE_LOCK_CLASS))
                .bind(i64::from(self.key))
                .execute(&self.pool);
                // Best effort: a server that cannot be reached has ended the session anyway.
                if !matches!(
                    tokio::time::timeout(HOLD_CHECK_TIMEOUT, end).await,
                    Ok(Ok(_))
                ) {
                    tracing::warn!(target: "tsunagi::outbox", pid = self.pid, "the node name's failed session could not be ended; its lock lasts until PostgreSQL notices the connection is gone");
                }
                false
            }
            Err(_) => {
                let holds = sqlx::query_scalar::<_, bool>(AssertSqlSafe(format!(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE {THIS_HOLD} AND granted)"
                )))
                .bind(self.pid)
                .bind(i64::from(NODE_LOCK_CLASS))
                .bind(i64::from(self.key))
                .fetch_one(&self.pool);
                !matches!(
                    tokio::time::timeout(HOLD_CHECK_TIMEOUT, holds).await,
                    Ok(Ok(false))
                )
            }
        }
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
        let options = (*self.connections.pool().connect_options()).clone();
        let mut connection = <PgConnection as sqlx::Connection>::connect_with(&options)
            .await
            .map_err(db_error)?;
        let (held, pid, key): (bool, i32, i32) =
            // The schema is part of the key: two regions in one database are apart.
            sqlx::query_as(
                "SELECT pg_try_advisory_lock($1, hashtext(current_schema() || ':' || $2)), \
                 pg_backend_pid(), hashtext(current_schema() || ':' || $2)",
            )
                .bind(NODE_LOCK_CLASS)
                .bind(node)
                .fetch_one(&mut connection)
                .await
                .map_err(db_error)?;
        Ok(held.then(|| {
            Box::new(NameHold {
                connection,
                pid,
                key,
                pool: self.connections.pool().clone(),
            }) as tsunagi_store::NodeHold
        }))
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    fn writer(&self) -> &Connections<Postgres> {
        &self.connections
    }

    fn reader(&self) -> &Connections<Postgres> {
        &self.connections
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    async fn standing_changing(&self, connection: &mut PgConnection) -> Result<(), StoreError> {
        standing::notify(connection).await
    }

    fn standing_changed(&self) -> Result<(), StoreError> {
        // This process's own changes hold at once; the others' when their notification comes.
        self.epoch.forget();
        Ok(())
    }

    fn standing_epoch(&self) -> Option<u64> {
        self.epoch.read()
    }

    async fn start_serving(&self) -> Result<(), StoreError> {
        self.epoch.start(self.connections.pool());
        Ok(())
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        let mut transaction = self.connections.begin().await?;
        lock_writer(&mut transaction).await?;
        Ok(transaction)
    }

    async fn apply_in(
        &self,
        connection: &mut PgConnection,
        batch: Batch,
    ) -> Result<ApplyStats, StoreError> {
        let mut writer = BatchWriter::new(connection, self.clock.now_micros());
        writer.apply_batch(batch).await?;
        Ok(writer.stats)
    }
}
