//! The server's audit journal, switched on and imported: `tsunagi serve` journals the records
//! of every access beside the database (`crate::journal`), and this moves them into the `audit`
//! table in the background and before any read of the trail, each batch in one transaction with
//! the import position.

use tsunagi_core::metrics;
use tsunagi_store::StoreError;

use tsunagi_store_sql::{Engine, audit};

use crate::{SqliteEngine, begin, db_error, journal::Journal};

impl SqliteEngine {
    /// Journals this process's audit records (see `crate::journal`): imports what earlier runs
    /// left, appends to a new generation from now on, and imports every 100 ms in the
    /// background. Only the server calls this; without it records are inserted directly. A
    /// database without a file (in memory) keeps inserting directly.
    pub async fn journal_audit(&self) -> Result<(), StoreError> {
        self.journal_audit_rotating_at(crate::journal::ROTATE_BYTES)
            .await
    }

    /// [`SqliteEngine::journal_audit`], beginning a new journal file whenever the current one
    /// passes `bytes` (64 MiB in the server; tests use a few bytes to see files rotate).
    pub async fn journal_audit_rotating_at(&self, bytes: u64) -> Result<(), StoreError> {
        let Some(journal) = self.journal.clone() else {
            return Ok(());
        };
        let (generation, _) = self.import_journal().await?;
        journal.start_appending(generation, bytes.max(1))?;
        // The task holds the journal weakly: it stops once every handle of the store is gone.
        let weak = std::sync::Arc::downgrade(&journal);
        drop(journal);
        let store = Self {
            journal: None,
            ..self.clone()
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(journal) = weak.upgrade() else {
                    return;
                };
                if let Err(error) = store.import_from(&journal).await {
                    tracing::warn!(target: "tsunagi::audit", %error, "audit journal import failed; retrying");
                }
            }
        });
        Ok(())
    }

    /// Moves journaled audit records into the `audit` table (see `crate::journal`); returns the
    /// import position (generation, offset) afterwards.
    pub(crate) async fn import_journal(&self) -> Result<(u64, u64), StoreError> {
        match &self.journal {
            Some(journal) => self.import_from(journal).await,
            None => Ok((0, 0)),
        }
    }

    async fn import_from(&self, journal: &Journal) -> Result<(u64, u64), StoreError> {
        let _one_at_a_time = self.importing.lock().await;
        let began = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |elapsed| elapsed.as_secs_f64());
        let files = journal.files()?;
        let mut transaction = begin(&self.writer_connections).await?;
        let position: Option<String> =
            sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'audit_journal'")
                .fetch_optional(&mut *transaction)
                .await
                .map_err(db_error)?;
        let (mut generation, mut offset) = position
            .as_deref()
            .and_then(|text| text.split_once(':'))
            .and_then(|(g, o)| Some((g.parse::<u64>().ok()?, o.parse::<u64>().ok()?)))
            .unwrap_or((0, 0));
        let start = (generation, offset);
        let mut imported = 0usize;
        let pending: Vec<&(u64, std::path::PathBuf)> =
            files.iter().filter(|(g, _)| *g >= generation).collect();
        for (index, (file_generation, path)) in pending.iter().enumerate() {
            let from = if *file_generation == generation {
                offset
            } else {
                0
            };
            let (records, end) = Journal::read_from(path, from)?;
            audit::insert::<sqlx::Sqlite>(&mut transaction, &records, Self::AUDIT_CHUNK).await?;
            imported += records.len();
            match pending.get(index + 1) {
                // A later generation exists: this one is complete (any cut frame at its end
                // belongs to a request that was never answered).
                Some((next, _)) => (generation, offset) = (*next, 0),
                None => (generation, offset) = (*file_generation, end),
            }
        }
        if (generation, offset) != start {
            sqlx::query(
                "INSERT OR REPLACE INTO store_meta (key, value) VALUES ('audit_journal', ?1)",
            )
            .bind(format!("{generation}:{offset}"))
            .execute(&mut *transaction)
            .await
            .map_err(db_error)?;
            transaction.commit().await.map_err(db_error)?;
        } else {
            transaction.rollback().await.map_err(db_error)?;
        }
        // Generations before the one being imported from are in the table.
        for (file_generation, path) in &files {
            if *file_generation < generation {
                let _ = std::fs::remove_file(path);
            }
        }
        if imported > 0 {
            tracing::debug!(target: "tsunagi::audit", imported, "audit journal imported");
            metrics::count(&metrics::AUDIT_IMPORTED, &[], imported as u64);
        }
        // Everything journaled before this import began is in the table now.
        metrics::set(&metrics::AUDIT_IMPORTED_AT, &[], began);
        Ok((generation, offset))
    }
}
