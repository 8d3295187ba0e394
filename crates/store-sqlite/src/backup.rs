//! An online copy of the embedded store: the audit journal imported first (so every access
//! answered before the copy began is in it), then `VACUUM INTO` a new file — one read
//! transaction, so the copy is the database as of one instant while writers go on, compacted
//! and whole (no WAL beside it).

use std::{path::Path, str::FromStr};

use sqlx::{Connection, sqlite::SqliteConnectOptions};
use tsunagi_store::StoreError;
use tsunagi_store_sql::Engine;

use crate::{SqliteEngine, db_error};

/// A database file opened read-only, neither created nor migrated.
async fn read_only(file: &Path) -> Result<sqlx::SqliteConnection, StoreError> {
    if !file.is_file() {
        return Err(StoreError::Invalid(format!(
            "{} is not a database file",
            file.display()
        )));
    }
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", file.display()))
        .map_err(|error| StoreError::Url(format!("{}: {error}", file.display())))?
        .read_only(true)
        .create_if_missing(false);
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .map_err(db_error)
}

/// Whether the database in `file` holds exactly this build's schema, read without creating,
/// migrating or writing anything (`Some(reason)` when not): a backup or restore by a binary of
/// another version must not upgrade a live database.
pub async fn schema_of_file(file: &Path) -> Result<Option<String>, StoreError> {
    let mut connection = read_only(file).await?;
    let status = tsunagi_store_sql::migrations::check::<sqlx::Sqlite>(
        &mut connection,
        &crate::migrate::MIGRATOR,
    )
    .await;
    let _ = connection.close().await;
    status
}

/// SQLite's integrity check of the database in `file`, read-only: `None` when whole.
pub async fn integrity_of_file(file: &Path) -> Result<Option<String>, StoreError> {
    let mut connection = read_only(file).await?;
    let found: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check")
        .fetch_all(&mut connection)
        .await
        .map_err(db_error)?;
    let _ = connection.close().await;
    let said: Vec<String> = found.into_iter().map(|(line,)| line).collect();
    Ok(if said == ["ok"] {
        None
    } else {
        Some(said.join("; "))
    })
}

impl SqliteEngine {
    /// Writes a consistent copy of the database to `target` (a file that must not exist yet),
    /// after moving every journaled audit record into it.
    pub async fn backup_into(&self, target: &Path) -> Result<(), StoreError> {
        if target.exists() {
            return Err(StoreError::Invalid(format!(
                "{} exists already: a backup is written to a new file",
                target.display()
            )));
        }
        self.settle_audit().await?;
        let target = target.to_str().ok_or_else(|| {
            StoreError::Invalid(format!("{} is not a UTF-8 path", target.display()))
        })?;
        let mut connection = self.pool().acquire().await.map_err(db_error)?;
        sqlx::query("VACUUM INTO ?1")
            .bind(target)
            .execute(&mut *connection)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}
