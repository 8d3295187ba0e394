//! Schema migrations on either database: each backend's `migrations/` folder, embedded with
//! `sqlx::migrate!` and applied in order, once, under sqlx's migration lock (on PostgreSQL an
//! advisory lock, so of several nodes starting together one migrates and the others wait). A
//! migration that needs more than SQL leaves a flag in `store_meta` that code acts on after
//! opening: the search registry's version (a mismatch reindexes) and pending projections.
//!
//! Databases created before migrations were files record their schema only in `store_meta`;
//! the first open marks the migrations they already have as applied, then runs the rest.

use sqlx::{
    Database,
    migrate::{MigrateError, Migrator},
};
use tsunagi_fhir::search::REGISTRY_VERSION;
use tsunagi_store::StoreError;

use crate::dialect::{Cells, Dialect, stmt};

/// The `store_meta` keys a backend keeps its schema and search-registry versions under.
#[derive(Debug, Clone, Copy)]
pub struct MetaKeys {
    /// The last migration applied (read by builds that predate migration files).
    pub schema: &'static str,
    /// The search registry the index rows were extracted with.
    pub registry: &'static str,
}

fn migrate_error(error: MigrateError) -> StoreError {
    match error {
        MigrateError::VersionMissing(version) => StoreError::Unsupported(format!(
            "this database has migration {version}, which this build does not know: it was \
             written by a newer Tsunagi"
        )),
        MigrateError::VersionMismatch(version) => StoreError::Unsupported(format!(
            "migration {version} of this database differs from this build's file of that \
             version: a migration file was edited after it was applied"
        )),
        other => StoreError::database(format!("migrating the schema: {other}")),
    }
}

async fn table_exists<D: Dialect>(
    connection: &mut <D as Database>::Connection,
    table: &str,
) -> Result<bool, StoreError> {
    Ok(stmt(D::TABLE_EXISTS)
        .arg(table)
        .fetch_optional::<D>(connection)
        .await?
        .is_some())
}

/// Whether the database's schema is exactly `migrator`'s: every migration of this build
/// applied, and none this build does not know (a newer node migrated it). The reason when not.
pub async fn check<D: Dialect>(
    connection: &mut <D as Database>::Connection,
    migrator: &Migrator,
) -> Result<Option<String>, StoreError> {
    let newest = migrator
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0);
    let applied = match stmt("SELECT MAX(version) AS newest FROM _sqlx_migrations WHERE success")
        .fetch_optional::<D>(connection)
        .await?
    {
        Some(row) => row.opt_int("newest")?.unwrap_or(0),
        None => 0,
    };
    Ok(match applied.cmp(&newest) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Less => Some(format!(
            "the database's schema is at migration {applied}, this build's at {newest}"
        )),
        std::cmp::Ordering::Greater => Some(format!(
            "the database has migration {applied}, which this build does not know: a newer \
             Tsunagi migrated it"
        )),
    })
}

/// Brings the schema up to `migrator`'s last migration; gives the search-registry version the
/// index rows were written with (the caller reindexes when it is not this build's).
pub async fn migrate<D: Dialect>(
    connection: &mut <D as Database>::Connection,
    migrator: &Migrator,
    keys: MetaKeys,
) -> Result<String, StoreError> {
    if !table_exists::<D>(connection, "_sqlx_migrations").await?
        && table_exists::<D>(connection, "store_meta").await?
    {
        let row = stmt("SELECT value FROM store_meta WHERE key = ?1")
            .arg(keys.schema)
            .fetch_optional::<D>(connection)
            .await?;
        let recorded = match row {
            Some(row) => row.text("value")?,
            None => String::new(),
        };
        let version: i64 = recorded.parse().map_err(|_| {
            StoreError::Unsupported(format!(
                "this database records schema {recorded:?}, which this build cannot read"
            ))
        })?;
        D::migrate(connection, migrator, Some(version))
            .await
            .map_err(migrate_error)?;
    }
    D::migrate(connection, migrator, None)
        .await
        .map_err(migrate_error)?;
    let latest = migrator
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0);
    stmt(
        "INSERT INTO store_meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .arg(keys.schema)
    .arg(latest.to_string())
    .execute::<D>(connection)
    .await?;
    // A new database has no index rows yet: they will be this build's.
    stmt("INSERT INTO store_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING")
        .arg(keys.registry)
        .arg(REGISTRY_VERSION.to_string())
        .execute::<D>(connection)
        .await?;
    stmt("SELECT value FROM store_meta WHERE key = ?1")
        .arg(keys.registry)
        .fetch_one::<D>(connection)
        .await?
        .text("value")
}

/// The search-index tables (a reindex empties and refills them; a replaced version's rows are
/// deleted from each).
pub const INDEX_TABLES: [&str; 6] = [
    "idx_text",
    "idx_token",
    "idx_string",
    "idx_date",
    "idx_reference",
    "idx_quantity",
];

/// Compartments without a facility get it from the SS-MIX2 adapter's source key of their
/// Patient (`ssmix2:<10-digit code>:…`); others stay without one (only the operator sees them).
const FACILITY_BACKFILL: &str = "UPDATE compartments SET facility = (\
    SELECT substr(r.source_key, 8, 10) FROM resources r \
    WHERE r.tid = 'Patient/' || compartments.patient AND r.source_key LIKE 'ssmix2:%') \
    WHERE facility IS NULL";

/// The first step of a reindex, inside the caller's writing transaction (which serialises
/// reindexes): `false` when `only_if_stale` and the index rows are already this build's (another
/// node reindexed first); else the index tables are emptied for the backend's writer to refill.
pub async fn begin_reindex<D: Dialect>(
    connection: &mut <D as Database>::Connection,
    keys: MetaKeys,
    only_if_stale: bool,
) -> Result<bool, StoreError> {
    if only_if_stale {
        let row = stmt("SELECT value FROM store_meta WHERE key = ?1")
            .arg(keys.registry)
            .fetch_optional::<D>(connection)
            .await?;
        let current = row.map(|row| row.text("value")).transpose()?;
        if current == Some(REGISTRY_VERSION.to_string()) {
            return Ok(false);
        }
    }
    for table in INDEX_TABLES {
        stmt(format!("DELETE FROM {table}"))
            .execute::<D>(connection)
            .await?;
    }
    Ok(true)
}

/// The last step of a reindex: compartments the reindex created get their facility where the
/// source key tells it, every consent's permitted set is recomputed over the compartments as
/// they now are, and this build's registry version is recorded.
pub async fn finish_reindex<D: Dialect>(
    connection: &mut <D as Database>::Connection,
    keys: MetaKeys,
) -> Result<(), StoreError> {
    stmt(FACILITY_BACKFILL).execute::<D>(connection).await?;
    crate::changes::recompute_all::<D>(connection).await?;
    stmt("UPDATE store_meta SET value = ?1 WHERE key = ?2")
        .arg(REGISTRY_VERSION.to_string())
        .arg(keys.registry)
        .execute::<D>(connection)
        .await?;
    Ok(())
}
