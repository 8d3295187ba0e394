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

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    Sqlite, SqliteConnection, Transaction,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};
use tsunagi_core::clock::Clock;
use tsunagi_store::{ApplyStats, Batch, StoreError, governance::AuditRecord};
use tsunagi_store_sql::{Engine, SqlStore, db_error, hot::Connections};

mod backup;
pub use backup::{integrity_of_file, schema_of_file};
mod epoch;
mod journal;
mod journal_import;
mod migrate;
mod rows;
mod writer;

/// The database file of a `sqlite://` URL (or `sqlite:`; a query string ignored), if it names
/// one.
pub fn database_file(url: &str) -> Option<std::path::PathBuf> {
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
    /// Writes, checkpoints and whole-store scans: a pool of 4 with up to 2 connections kept
    /// between statements (sqlx tests every connection it takes back, through the connection's
    /// worker thread).
    writer_connections: Arc<Connections<Sqlite>>,
    /// The API's reads (read, search, fetch, history…), a pool of its own with up to 4 of its 8
    /// connections kept between statements: memory-mapped, so a large region reads like a small
    /// one. Kept apart so that ingest, which never uses it, keeps its RSS bound.
    reader_connections: Arc<Connections<Sqlite>>,
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
            writer_connections: Arc::new(Connections::new(pool, 2)),
            reader_connections: Arc::new(Connections::new(reader, 4)),
            clock,
            journal,
            epoch,
            importing: Arc::default(),
        })
    }

    /// Closes the pool (checkpointing the WAL).
    pub async fn close(&self) {
        self.reader_connections.close().await;
        self.writer_connections.close().await;
    }
}

/// A writing transaction: SQLite's write lock taken at once (`BEGIN IMMEDIATE`).
async fn begin(
    connections: &Connections<Sqlite>,
) -> Result<Transaction<'static, Sqlite>, StoreError> {
    connections.begin_with("BEGIN IMMEDIATE").await
}

impl SqliteEngine {
    /// The pool of writes, checkpoints and whole-store scans.
    pub(crate) fn pool(&self) -> &SqlitePool {
        self.writer_connections.pool()
    }
}

#[async_trait::async_trait]
impl Engine for SqliteEngine {
    type Db = Sqlite;
    /// 5 bound values each; SQLite allows 32766.
    const AUDIT_CHUNK: usize = 300;

    async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        SqliteEngine::connect(url, clock).await
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        &migrate::MIGRATOR
    }

    fn writer(&self) -> &Connections<Sqlite> {
        &self.writer_connections
    }

    fn reader(&self) -> &Connections<Sqlite> {
        &self.reader_connections
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        begin(&self.writer_connections).await
    }

    async fn begin_small_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        begin(&self.writer_connections).await
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

    async fn hold_node(&self, node: &str) -> Result<Option<tsunagi_store::NodeHold>, StoreError> {
        // A file lock beside the database, named after the node: the operating system lets it
        // go when the process ends, however it ends.
        let database = self.pool().connect_options().get_filename().to_owned();
        if database.as_os_str().is_empty() || database.to_string_lossy().contains(":memory:") {
            return Ok(Some(Box::new(tsunagi_store::HeldForLife(()))));
        }
        let name: String = node
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut path = database.into_os_string();
        path.push(format!(".node-{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| {
                StoreError::database(format!("cannot open {}: {error}", path.to_string_lossy()))
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(tsunagi_store::HeldForLife(file)))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(error)) => Err(StoreError::database(format!(
                "cannot lock {}: {error}",
                path.to_string_lossy()
            ))),
        }
    }
}
