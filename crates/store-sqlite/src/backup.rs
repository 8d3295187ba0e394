//! An online copy of the embedded store: the audit journal imported first (so every access
//! answered before the copy began is in it), then `VACUUM INTO` a new file — one read
//! transaction, so the copy is the database as of one instant while writers go on, compacted
//! and whole (no WAL beside it).

use std::path::Path;

use tsunagi_store::StoreError;
use tsunagi_store_sql::Engine;

use crate::{SqliteEngine, db_error};

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
        let mut connection = self.writer().acquire().await.map_err(db_error)?;
        sqlx::query("VACUUM INTO ?1")
            .bind(target)
            .execute(&mut *connection)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// The database's own check of a file (`PRAGMA integrity_check`): `None` when whole, else
    /// what it found.
    pub async fn integrity(&self) -> Result<Option<String>, StoreError> {
        let mut connection = self.writer().acquire().await.map_err(db_error)?;
        let found: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check")
            .fetch_all(&mut *connection)
            .await
            .map_err(db_error)?;
        let said: Vec<String> = found.into_iter().map(|(line,)| line).collect();
        Ok(if said == ["ok"] {
            None
        } else {
            Some(said.join("; "))
        })
    }
}
