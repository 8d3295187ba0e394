//! The SQLite schema: `migrations/` applied through `tsunagi_store_sql::migrations`, and the
//! reindex that rebuilds index rows and compartments when the search registry changed.

use serde_json::Value;
use sqlx::{Row, Sqlite, SqlitePool};
use tsunagi_fhir::search::{self, REGISTRY_VERSION};
use tsunagi_store::StoreError;
use tsunagi_store_sql::{
    db_error,
    migrations::{self, MetaKeys},
};

use crate::{
    SqliteEngine,
    rows::{CompartmentIds, SystemIds, index_pat, insert_index_rows},
};

/// The schema, one file per version (`migrations/`), applied by `tsunagi_store_sql::migrations`.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
const META_KEYS: MetaKeys = MetaKeys {
    schema: "schema_version",
    registry: "registry_version",
};

impl SqliteEngine {
    /// Brings the schema up to date (an upgrade past schema 5 leaves the network's records'
    /// FHIR projections pending in `store_meta`; `SqlStore` writes them once open).
    pub(crate) async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
        let mut connection = pool.acquire().await.map_err(db_error)?;
        let registry = migrations::migrate::<Sqlite>(&mut connection, &MIGRATOR, META_KEYS).await?;
        drop(connection);
        if registry != REGISTRY_VERSION.to_string() {
            Self::reindex_pool(pool, true).await?;
        }
        Ok(())
    }

    /// Rebuilds every index row and compartment from stored content (after a search-registry
    /// change).
    pub async fn reindex(&self) -> Result<(), StoreError> {
        Self::reindex_pool(self.pool(), false).await
    }

    pub(crate) async fn reindex_pool(
        pool: &SqlitePool,
        only_if_stale: bool,
    ) -> Result<(), StoreError> {
        let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        if !migrations::begin_reindex::<Sqlite>(&mut transaction, META_KEYS, only_if_stale).await? {
            return Ok(());
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
        migrations::finish_reindex::<Sqlite>(&mut transaction, META_KEYS).await?;
        transaction.commit().await.map_err(db_error)
    }
}
