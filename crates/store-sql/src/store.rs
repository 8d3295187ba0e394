//! The store both databases share: [`SqlStore`] implements the store's traits once, over an
//! [`Engine`] that supplies only what truly differs between backends — opening and migrating,
//! the tuned bulk write path, how a writing transaction starts, and where audit records go
//! first (SQLite's journal).

use std::{ops::Deref, sync::Arc};

use sqlx::{Database, Transaction};
use tsunagi_core::clock::Clock;
use tsunagi_store::{
    ApplyStats, Batch, Governance, StoreError, governance::AuditRecord, projection,
};

use crate::{
    dialect::{Dialect, db_error, stmt},
    hot::{Connections, Lease},
};

/// What a backend supplies to [`SqlStore`].
#[async_trait::async_trait]
pub trait Engine: Clone + Send + Sync + 'static {
    /// The database.
    type Db: Dialect;
    /// Audit records per multi-row INSERT (5 values each; the database's limit on bound values).
    const AUDIT_CHUNK: usize;

    /// Opens (creating when the backend can) the database at `url` and brings its schema up
    /// to date.
    async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError>
    where
        Self: Sized;
    /// Writes, governance and whole-store scans: reads that must see the latest write.
    fn writer(&self) -> &Connections<Self::Db>;
    /// The API's reads of clinical data.
    fn reader(&self) -> &Connections<Self::Db>;
    /// The clock records are stamped with.
    fn clock(&self) -> &Arc<dyn Clock>;
    /// This build's schema migrations for the database.
    fn migrator(&self) -> &'static sqlx::migrate::Migrator;
    /// A transaction that may write (serialised with every other writer).
    async fn begin_write(&self) -> Result<Transaction<'static, Self::Db>, StoreError>;
    /// A transaction for a small write that need not wait for bulk writers (a replayed
    /// assertion id): SQLite takes its write lock at once (`BEGIN IMMEDIATE`); PostgreSQL's row
    /// locks suffice.
    async fn begin_small_write(&self) -> Result<Transaction<'static, Self::Db>, StoreError> {
        self.writer().begin().await
    }
    /// Applies `batch` inside the caller's writing transaction.
    async fn apply_in(
        &self,
        connection: &mut <Self::Db as Database>::Connection,
        batch: Batch,
    ) -> Result<ApplyStats, StoreError>;
    /// Called inside the transaction of a change to what tokens stand on, before it commits
    /// (PostgreSQL: a notification, delivered to every node when the change commits).
    async fn standing_changing(
        &self,
        _connection: &mut <Self::Db as Database>::Connection,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// Called after a committed change to what tokens stand on.
    fn standing_changed(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Appends audit records somewhere faster than the database, if the backend has such a
    /// place now; `Ok(false)`: insert them.
    fn journal(&self, _records: &[AuditRecord]) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Moves what [`Engine::journal`] holds into the database before the audit is read.
    async fn settle_audit(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// A number that moves whenever what tokens stand on changes, if the backend keeps one.
    fn standing_epoch(&self) -> Option<u64> {
        None
    }
    /// Holds the name `node` for this process while the guard lives (`None`: another live
    /// process holds it). See `Outbox::hold_node`.
    async fn hold_node(&self, node: &str) -> Result<Option<tsunagi_store::NodeHold>, StoreError>;
    /// Readies the backend to serve the API.
    async fn start_serving(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A store on a SQL database: the read side, governance, the audit, the outbox and the message
/// log, written once for both backends. Dereferences to its [`Engine`] for what is the
/// backend's own (closing, reindexing, the journal).
#[derive(Clone)]
pub struct SqlStore<E> {
    engine: E,
}

impl<E> Deref for SqlStore<E> {
    type Target = E;
    fn deref(&self) -> &E {
        &self.engine
    }
}

impl<E> std::fmt::Debug for SqlStore<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").finish_non_exhaustive()
    }
}

/// Runs a write to its end in a task of its own, whether or not its caller still waits. A caller
/// that stops waiting (a client that hangs up, a timeout) must not cut a write off between two
/// messages of the wire protocol: PostgreSQL's COPY cut after its end was sent would leave its
/// pooled connection one answer behind, and the next statement on it would read another's
/// answer. So a write, once begun, commits or rolls back whole, as it would have.
pub(crate) async fn to_the_end<T: Send + 'static>(
    write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(write)
        .await
        .map_err(|error| StoreError::database(format!("the write stopped: {error}")))?
}

impl<E: Engine> SqlStore<E> {
    /// Opens the database at `url` (see [`Engine::open`]).
    pub async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Self::with_engine(E::open(url, clock).await?).await
    }

    /// The store over an opened, migrated engine; writes the FHIR projections an upgrade left
    /// pending (see [`SqlStore::project_all`]).
    pub async fn with_engine(engine: E) -> Result<Self, StoreError> {
        let store = Self { engine };
        let mut connection = store.write_connection().await?;
        let pending = stmt("SELECT value FROM store_meta WHERE key = 'projections'")
            .fetch_optional::<E::Db>(&mut *connection)
            .await?;
        drop(connection);
        if pending.is_some() {
            store.project_all().await?;
        }
        Ok(store)
    }

    /// The engine.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    pub(crate) async fn write_connection(&self) -> Result<Lease<'_, E::Db>, StoreError> {
        self.engine.writer().acquire().await
    }

    pub(crate) async fn read_connection(&self) -> Result<Lease<'_, E::Db>, StoreError> {
        self.engine.reader().acquire().await
    }

    /// Writes the FHIR projection of every facility, participant and consent (after an upgrade
    /// from a schema that had none), and clears the pending flag in the same transaction.
    pub async fn project_all(&self) -> Result<(), StoreError> {
        let mut operations = Vec::new();
        for facility in &self.facilities().await? {
            operations.push(projection::facility(facility)?);
        }
        for participant in &self.participants().await? {
            operations.push(projection::participant(participant)?);
        }
        for consent in &self.consents(None).await? {
            operations.push(projection::consent(consent)?);
        }
        let mut transaction = self.engine.begin_write().await?;
        self.engine
            .apply_in(&mut *transaction, Batch { operations })
            .await?;
        stmt("DELETE FROM store_meta WHERE key = 'projections'")
            .execute::<E::Db>(&mut *transaction)
            .await?;
        transaction.commit().await.map_err(db_error)
    }
}
