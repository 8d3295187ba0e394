//! The SQLite batch writer, the tuned bulk path: a batch's operations folded in memory, then
//! written with multi-row INSERTs in power-of-two chunks (a few dozen cached statement shapes),
//! index rows of replaced versions found by re-extracting the old content, checkpoints and
//! message-log rows in the same transaction.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, sqlite::SqliteRow};
use tsunagi_fhir::search::{self, IndexEntry, IndexValue};
use tsunagi_store::{ApplyStats, Batch, Operation, ResourceWrite, StoreError};
use tsunagi_store_sql::{audit, blobs, db_error, messages, outbox, pow2_sizes};

use crate::{
    SqliteEngine,
    rows::{
        CompartmentIds, RESOURCE_CHUNK, SystemIds, bump, index_pat, insert_index_rows, json_list,
        pow2_chunks,
    },
};
impl SqliteEngine {
    /// Applies `batch` inside the caller's transaction (the governance records write their FHIR
    /// projection with it, so both commit or neither does).
    pub(crate) async fn apply_in(
        &self,
        connection: &mut SqliteConnection,
        batch: Batch,
    ) -> Result<ApplyStats, StoreError> {
        let mut writer = BatchWriter {
            now: self.clock.now_micros(),
            next_rid: 1,
            existing: HashMap::new(),
            by_source: HashMap::new(),
            pending_rows: Vec::new(),
            pending_positions: HashMap::new(),
            pending_history: Vec::new(),
            pending_index: HashMap::new(),
            compartments: CompartmentIds::default(),
            checkpoints: std::collections::BTreeMap::new(),
            systems: SystemIds::default(),
            pending_messages: Vec::new(),
            stats: ApplyStats::default(),
        };
        writer.preload(connection, &batch).await?;
        for operation in batch.operations {
            writer.apply(connection, operation).await?;
        }
        writer.flush(connection).await?;
        writer.flush_checkpoints(connection).await?;
        Ok(writer.stats)
    }
}

/// What the batch knows about an existing resource.
#[derive(Debug, Clone)]
struct Existing {
    rid: i64,
    /// `compartments.id` of the resource (`resources.pat`).
    pat: i64,
    resource_type: String,
    version: i64,
    deleted: bool,
    hash: Option<u64>,
    source_key: Option<String>,
}

/// A resource first written in this batch, kept in memory until the batch flushes, so that a
/// later version in the same batch folds into it without any statement.
struct NewRow {
    rid: i64,
    pat: i64,
    tid: String,
    resource_type: String,
    id: String,
    version: i64,
    deleted: bool,
    source_key: String,
    hash: Option<u64>,
    content: Option<Vec<u8>>,
    index: Vec<IndexEntry>,
}

/// An earlier version to archive.
struct HistoryRow {
    rid: i64,
    version: i64,
    last_updated: i64,
    deleted: bool,
    content: Option<Vec<u8>>,
}

struct BatchWriter {
    now: i64,
    next_rid: i64,
    existing: HashMap<String, Existing>,
    by_source: HashMap<String, Vec<String>>,
    /// New resources of the batch, by position; `pending_positions` maps rid → position.
    pending_rows: Vec<NewRow>,
    pending_positions: HashMap<i64, usize>,
    /// Earlier versions of resources created in this batch.
    pending_history: Vec<HistoryRow>,
    /// Index rows of resources that already existed in the database, by rid, with the
    /// compartment the rows carry.
    pending_index: HashMap<i64, (i64, Vec<IndexEntry>)>,
    /// Compartment patient id → `compartments.id`.
    compartments: CompartmentIds,
    /// Checkpoints of the batch (last write per key wins), written with multi-row upserts.
    checkpoints: std::collections::BTreeMap<(String, String), Vec<u8>>,
    /// Token system URL → `token_systems.id`.
    systems: SystemIds,
    /// Inbound messages to log, in order (written together, before any state change).
    pending_messages: Vec<tsunagi_store::InboundMessage>,
    stats: ApplyStats,
}

const BY_SOURCE_KEY: &str = "SELECT rid, pat, tid, type, version, deleted, hash, source_key FROM resources WHERE source_key IN (SELECT value FROM json_each(?1))";
const BY_TID: &str = "SELECT rid, pat, tid, type, version, deleted, hash, source_key FROM resources WHERE tid IN (SELECT value FROM json_each(?1))";

/// Rows of `resources` selected by `sql` (`BY_SOURCE_KEY` or `BY_TID`) for `values`, bound as one
/// JSON array.
async fn existing_rows<V: AsRef<str>>(
    connection: &mut SqliteConnection,
    sql: &'static str,
    values: &[V],
) -> Result<Vec<(String, Existing)>, StoreError> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<&str> = values.iter().map(AsRef::as_ref).collect();
    let list = json_list(&list);
    let rows = sqlx::query(sql)
        .bind(list)
        .fetch_all(&mut *connection)
        .await
        .map_err(db_error)?;
    rows.iter().map(existing_from_row).collect()
}

fn existing_from_row(row: &SqliteRow) -> Result<(String, Existing), StoreError> {
    let hash: Option<i64> = row.try_get("hash").map_err(db_error)?;
    Ok((
        row.try_get("tid").map_err(db_error)?,
        Existing {
            rid: row.try_get("rid").map_err(db_error)?,
            pat: row.try_get("pat").map_err(db_error)?,
            resource_type: row.try_get("type").map_err(db_error)?,
            version: row.try_get("version").map_err(db_error)?,
            deleted: row.try_get::<i64, _>("deleted").map_err(db_error)? != 0,
            hash: hash.map(|h| h as u64),
            source_key: row.try_get("source_key").map_err(db_error)?,
        },
    ))
}

impl BatchWriter {
    async fn preload(
        &mut self,
        connection: &mut SqliteConnection,
        batch: &Batch,
    ) -> Result<(), StoreError> {
        let mut source_keys: Vec<&str> = Vec::new();
        let mut tids: Vec<String> = Vec::new();
        for operation in &batch.operations {
            match operation {
                Operation::ReplaceSource {
                    source_key,
                    resources,
                    ..
                } => {
                    source_keys.push(source_key);
                    tids.extend(resources.iter().map(ResourceWrite::type_and_id));
                }
                Operation::DeleteSource { source_key } => source_keys.push(source_key),
                Operation::RequireNew { tid } => tids.push(tid.clone()),
                Operation::PutCheckpoint { .. }
                | Operation::LogMessage(_)
                | Operation::SetMessageState { .. }
                | Operation::Enqueue(_)
                | Operation::SetDelivery(_)
                | Operation::PutBlob { .. }
                | Operation::Audit(_) => {}
            }
        }
        source_keys.sort_unstable();
        source_keys.dedup();
        for (tid, existing) in existing_rows(connection, BY_SOURCE_KEY, &source_keys).await? {
            if let Some(source) = &existing.source_key {
                self.by_source
                    .entry(source.clone())
                    .or_default()
                    .push(tid.clone());
            }
            self.existing.insert(tid, existing);
        }
        tids.retain(|tid| !self.existing.contains_key(tid));
        tids.sort_unstable();
        tids.dedup();
        for (tid, existing) in existing_rows(connection, BY_TID, &tids).await? {
            self.existing.insert(tid, existing);
        }
        self.systems = SystemIds::load(connection).await?;
        let mut patients: Vec<(&str, Option<&str>)> = batch
            .operations
            .iter()
            .flat_map(|operation| match operation {
                Operation::ReplaceSource {
                    resources,
                    facility,
                    ..
                } => resources
                    .iter()
                    .filter_map(|write| {
                        Some((write.compartment.as_deref()?, Some(facility.as_str())))
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        patients.sort_unstable();
        patients.dedup();
        self.compartments.load(connection, &patients).await?;
        let max_rid: Option<i64> = sqlx::query_scalar("SELECT MAX(rid) FROM resources")
            .fetch_one(&mut *connection)
            .await
            .map_err(db_error)?;
        self.next_rid = max_rid.unwrap_or(0) + 1;
        Ok(())
    }

    async fn apply(
        &mut self,
        connection: &mut SqliteConnection,
        operation: Operation,
    ) -> Result<(), StoreError> {
        match operation {
            Operation::ReplaceSource {
                source_key,
                facility,
                resources,
            } => {
                let mut listed = HashSet::new();
                for write in &resources {
                    if !listed.insert(write.type_and_id()) {
                        return Err(StoreError::Invalid(format!(
                            "{} appears twice in source record {source_key}",
                            write.type_and_id()
                        )));
                    }
                }
                for write in resources {
                    self.upsert(connection, &source_key, &facility, write)
                        .await?;
                }
                let previous = self.by_source.get(&source_key).cloned().unwrap_or_default();
                for tid in previous {
                    if !listed.contains(&tid) {
                        self.delete(connection, &tid).await?;
                    }
                }
                self.by_source
                    .insert(source_key, listed.into_iter().collect());
            }
            Operation::RequireNew { tid } => {
                if self.existing.get(&tid).is_some_and(|row| !row.deleted) {
                    return Err(StoreError::Conflict(format!("{tid} exists")));
                }
            }
            Operation::DeleteSource { source_key } => {
                let previous = self.by_source.get(&source_key).cloned().unwrap_or_default();
                for tid in previous {
                    self.delete(connection, &tid).await?;
                }
            }
            Operation::PutCheckpoint { scope, key, value } => {
                self.checkpoints.insert((scope, key), value);
            }
            Operation::LogMessage(message) => self.pending_messages.push(*message),
            Operation::SetMessageState { seq, state, reason } => {
                let logged = std::mem::take(&mut self.pending_messages);
                messages::insert::<Sqlite>(connection, logged).await?;
                messages::set_state::<Sqlite>(connection, seq, state, &reason).await?;
            }
            Operation::Enqueue(message) => outbox::insert::<Sqlite>(connection, &message).await?,
            Operation::SetDelivery(update) => outbox::update::<Sqlite>(connection, &update).await?,
            Operation::Audit(record) => {
                audit::insert::<Sqlite>(connection, std::slice::from_ref(&*record), 1).await?;
            }
            Operation::PutBlob { sha256, bytes } => {
                blobs::insert::<Sqlite>(connection, &sha256, bytes).await?;
            }
        }
        Ok(())
    }

    async fn upsert(
        &mut self,
        connection: &mut SqliteConnection,
        source_key: &str,
        facility: &str,
        write: ResourceWrite,
    ) -> Result<(), StoreError> {
        let tid = write.type_and_id();
        let pat = self
            .compartments
            .resolve(connection, write.compartment.as_deref(), Some(facility))
            .await?;
        let Some(existing) = self.existing.get(&tid).cloned() else {
            let rid = self.next_rid;
            self.next_rid += 1;
            bump(&mut self.stats.created, &write.resource_type);
            self.existing.insert(
                tid.clone(),
                Existing {
                    rid,
                    pat,
                    resource_type: write.resource_type.clone(),
                    version: 1,
                    deleted: false,
                    hash: Some(write.hash),
                    source_key: Some(source_key.to_owned()),
                },
            );
            self.pending_positions.insert(rid, self.pending_rows.len());
            self.pending_rows.push(NewRow {
                rid,
                pat,
                tid,
                resource_type: write.resource_type,
                id: write.id,
                version: 1,
                deleted: false,
                source_key: source_key.to_owned(),
                hash: Some(write.hash),
                content: Some(write.content),
                index: write.index,
            });
            if self.pending_rows.len() >= RESOURCE_CHUNK * 4 {
                self.flush(connection).await?;
            }
            return Ok(());
        };
        let unchanged = !existing.deleted && existing.hash == Some(write.hash);
        if unchanged {
            bump(&mut self.stats.unchanged, &write.resource_type);
            if existing.source_key.as_deref() != Some(source_key) {
                if let Some(&position) = self.pending_positions.get(&existing.rid) {
                    self.pending_rows[position].source_key = source_key.to_owned();
                } else {
                    sqlx::query("UPDATE resources SET source_key = ? WHERE rid = ?")
                        .bind(source_key)
                        .bind(existing.rid)
                        .execute(&mut *connection)
                        .await
                        .map_err(db_error)?;
                }
                self.move_source(&tid, existing.source_key.as_deref(), source_key);
                if let Some(entry) = self.existing.get_mut(&tid) {
                    entry.source_key = Some(source_key.to_owned());
                }
            }
            return Ok(());
        }
        let version = existing.version + 1;
        if let Some(&position) = self.pending_positions.get(&existing.rid) {
            // Created earlier in this batch: fold the new version in memory.
            let row = &mut self.pending_rows[position];
            self.pending_history.push(HistoryRow {
                rid: row.rid,
                version: row.version,
                last_updated: self.now,
                deleted: row.deleted,
                content: row.content.take(),
            });
            row.version = version;
            row.pat = pat;
            row.deleted = false;
            row.source_key = source_key.to_owned();
            row.hash = Some(write.hash);
            row.content = Some(write.content);
            row.index = write.index;
        } else {
            if !existing.deleted {
                self.remove_index_rows(connection, &existing).await?;
            }
            self.archive(connection, existing.rid).await?;
            sqlx::query("UPDATE resources SET version = ?, last_updated = ?, deleted = 0, source_key = ?, hash = ?, content = ?, pat = ? WHERE rid = ?")
                .bind(version)
                .bind(self.now)
                .bind(source_key)
                .bind(write.hash as i64)
                .bind(&write.content)
                .bind(pat)
                .bind(existing.rid)
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
            self.pending_index.insert(
                existing.rid,
                (index_pat(&write.resource_type, pat), write.index),
            );
        }
        bump(&mut self.stats.updated, &write.resource_type);
        self.move_source(&tid, existing.source_key.as_deref(), source_key);
        self.existing.insert(
            tid,
            Existing {
                version,
                pat,
                deleted: false,
                hash: Some(write.hash),
                source_key: Some(source_key.to_owned()),
                ..existing
            },
        );
        Ok(())
    }

    fn move_source(&mut self, tid: &str, from: Option<&str>, to: &str) {
        if from == Some(to) {
            return;
        }
        if let Some(from) = from
            && let Some(list) = self.by_source.get_mut(from)
        {
            list.retain(|item| item != tid);
        }
    }

    async fn delete(
        &mut self,
        connection: &mut SqliteConnection,
        tid: &str,
    ) -> Result<(), StoreError> {
        let Some(existing) = self.existing.get(tid).cloned() else {
            return Ok(());
        };
        if existing.deleted {
            return Ok(());
        }
        if let Some(&position) = self.pending_positions.get(&existing.rid) {
            let row = &mut self.pending_rows[position];
            self.pending_history.push(HistoryRow {
                rid: row.rid,
                version: row.version,
                last_updated: self.now,
                deleted: row.deleted,
                content: row.content.take(),
            });
            row.version += 1;
            row.deleted = true;
            row.hash = None;
            row.index.clear();
        } else {
            self.remove_index_rows(connection, &existing).await?;
            self.archive(connection, existing.rid).await?;
            sqlx::query("UPDATE resources SET version = version + 1, last_updated = ?, deleted = 1, hash = NULL, content = NULL WHERE rid = ?")
                .bind(self.now)
                .bind(existing.rid)
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
        }
        bump(&mut self.stats.deleted, &existing.resource_type);
        self.existing.insert(
            tid.to_owned(),
            Existing {
                version: existing.version + 1,
                deleted: true,
                hash: None,
                ..existing
            },
        );
        Ok(())
    }

    async fn archive(&self, connection: &mut SqliteConnection, rid: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO resource_history (rid, version, last_updated, deleted, content) SELECT rid, version, last_updated, deleted, content FROM resources WHERE rid = ?")
            .bind(rid)
            .execute(&mut *connection)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Removes the index rows of an existing resource's current version: rows not yet flushed
    /// are dropped from memory, flushed ones are found by re-extracting them from the stored
    /// content.
    async fn remove_index_rows(
        &mut self,
        connection: &mut SqliteConnection,
        existing: &Existing,
    ) -> Result<(), StoreError> {
        if self.pending_index.remove(&existing.rid).is_some() {
            return Ok(());
        }
        // The words: by rid (the FTS5 triggers follow), whatever the old content held.
        sqlx::query("DELETE FROM idx_text WHERE rid = ?")
            .bind(existing.rid)
            .execute(&mut *connection)
            .await
            .map_err(db_error)?;
        let content: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT content FROM resources WHERE rid = ?")
                .bind(existing.rid)
                .fetch_one(&mut *connection)
                .await
                .map_err(db_error)?;
        let Some(content) = content else {
            return Ok(());
        };
        let value: Value = serde_json::from_slice(&content)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let pat = index_pat(&existing.resource_type, existing.pat);
        // The words were dropped above by rid: not extracted again (a narrative's parse).
        let entries = search::params_for(&existing.resource_type)
            .filter(|param| param.kind != search::ParamType::Text)
            .flat_map(|param| {
                search::extract_param(&value, param)
                    .into_iter()
                    .map(move |value| IndexEntry {
                        param: param.id,
                        value,
                    })
            });
        for entry in entries {
            let param = i64::from(entry.param);
            let query = match &entry.value {
                IndexValue::Token { system, code } => {
                    let Some(system_id) = self.systems.get(system) else {
                        continue;
                    };
                    sqlx::query("DELETE FROM idx_token WHERE param = ? AND code = ? AND system_id = ? AND pat = ? AND rid = ?")
                        .bind(param)
                        .bind(code.clone())
                        .bind(system_id)
                        .bind(pat)
                }
                IndexValue::String(text) => sqlx::query("DELETE FROM idx_string WHERE param = ? AND value = ? AND pat = ? AND rid = ?")
                    .bind(param)
                    .bind(text.clone())
                    .bind(pat),
                IndexValue::Date { start, end } => sqlx::query("DELETE FROM idx_date WHERE param = ? AND start = ? AND \"end\" = ? AND pat = ? AND rid = ?")
                    .bind(param)
                    .bind(*start)
                    .bind(*end)
                    .bind(pat),
                IndexValue::Reference { target_type, target_id } => sqlx::query("DELETE FROM idx_reference WHERE param = ? AND target_id = ? AND target_type = ? AND rid = ?")
                    .bind(param)
                    .bind(target_id.clone())
                    .bind(target_type.clone()),
                IndexValue::Quantity { value, system, code } => sqlx::query("DELETE FROM idx_quantity WHERE param = ? AND code = ? AND value = ? AND system = ? AND pat = ? AND rid = ?")
                    .bind(param)
                    .bind(code.clone())
                    .bind(*value)
                    .bind(system.clone())
                    .bind(pat),
                // Removed above, by rid (not extracted).
                IndexValue::Text { .. } => continue,
            };
            query
                .bind(existing.rid)
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    async fn flush_checkpoints(
        &mut self,
        connection: &mut SqliteConnection,
    ) -> Result<(), StoreError> {
        let checkpoints: Vec<((String, String), Vec<u8>)> =
            std::mem::take(&mut self.checkpoints).into_iter().collect();
        for chunk in pow2_chunks(&checkpoints, RESOURCE_CHUNK) {
            let mut query =
                QueryBuilder::<Sqlite>::new("INSERT INTO checkpoints (scope, key, value) ");
            query.push_values(chunk, |mut row, ((scope, key), value)| {
                row.push_bind(scope.as_str())
                    .push_bind(key.as_str())
                    .push_bind(value.as_slice());
            });
            query.push(" ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value");
            query
                .build()
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    async fn flush(&mut self, connection: &mut SqliteConnection) -> Result<(), StoreError> {
        messages::insert::<Sqlite>(connection, std::mem::take(&mut self.pending_messages)).await?;
        // Values are moved into the statements, not copied: sqlx copies borrowed strings and
        // byte slices into fresh allocations, owned ones it takes as they are.
        let mut rows = std::mem::take(&mut self.pending_rows);
        self.pending_positions.clear();
        let mut entries: Vec<(i64, i64, IndexEntry)> = Vec::new();
        for row in &mut rows {
            let rid = row.rid;
            let pat = index_pat(&row.resource_type, row.pat);
            entries.extend(row.index.drain(..).map(|entry| (rid, pat, entry)));
        }
        for (rid, (pat, index)) in std::mem::take(&mut self.pending_index) {
            entries.extend(index.into_iter().map(|entry| (rid, pat, entry)));
        }
        let now = self.now;
        let mut remaining = rows.into_iter();
        for size in pow2_sizes(remaining.len(), RESOURCE_CHUNK) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO resources (rid, pat, tid, type, id, version, last_updated, deleted, source_key, hash, content) ",
            );
            query.push_values(remaining.by_ref().take(size), |mut row, new| {
                row.push_bind(new.rid)
                    .push_bind(new.pat)
                    .push_bind(new.tid)
                    .push_bind(new.resource_type)
                    .push_bind(new.id)
                    .push_bind(new.version)
                    .push_bind(now)
                    .push_bind(i64::from(new.deleted))
                    .push_bind(new.source_key)
                    .push_bind(new.hash.map(|h| h as i64))
                    .push_bind(new.content);
            });
            query
                .build()
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
        }
        let history = std::mem::take(&mut self.pending_history);
        let mut remaining = history.into_iter();
        for size in pow2_sizes(remaining.len(), RESOURCE_CHUNK) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO resource_history (rid, version, last_updated, deleted, content) ",
            );
            query.push_values(remaining.by_ref().take(size), |mut row, old| {
                row.push_bind(old.rid)
                    .push_bind(old.version)
                    .push_bind(old.last_updated)
                    .push_bind(i64::from(old.deleted))
                    .push_bind(old.content);
            });
            query
                .build()
                .execute(&mut *connection)
                .await
                .map_err(db_error)?;
        }
        insert_index_rows(connection, &mut self.systems, entries).await
    }
}
