//! The PostgreSQL batch writer: a batch's resources planned in memory and written in bulk.
//!
//! Before the first operation, one query reads every row the batch names (by `Type/id` and by
//! source key), one upsert and one read give every compartment it needs, one read gives the
//! token systems, and one call to the `resources` sequence gives the new rows their `rid`s (in
//! creation order: searches sort by it). New rows, their earlier versions and every index row
//! then wait in memory and are written at the end with one binary `COPY` per table
//! ([`crate::copy`]), after one `DELETE … WHERE rid = ANY(…)` per index table for the rows an
//! update or a delete replaced. What a source no longer holds is found in memory too.
//!
//! Checkpoints wait too (the last value of each key), written with one upsert at the end.
//! A new row written again or deleted in the same batch (a Patient every record of the patient
//! repeats) changes in memory: a later version, its earlier one waiting for `resource_history`,
//! exactly as a row-by-row writer would leave them. Rows already in the database are updated,
//! archived and deleted with a statement each, as before (an ingest's first pull creates; a
//! re-pull skips the unchanged).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use sqlx::{AssertSqlSafe, PgConnection, Postgres, Row};
use tsunagi_fhir::search::IndexEntry;
use tsunagi_store::{ApplyStats, Batch, Counts, Operation, ResourceWrite, StoreError};
use tsunagi_store_sql::{audit, blobs, db_error, messages, migrations::INDEX_TABLES, outbox};

use crate::copy::CopyRows;

/// Rows per bulk statement (each column an array of this many values).
const ROWS_PER_STATEMENT: usize = 4096;

/// The compartment id an index row carries: a Patient's own rows carry 0 (as in SQLite).
pub(crate) fn index_pat(resource_type: &str, pat: i64) -> i64 {
    if resource_type == "Patient" { 0 } else { pat }
}

fn bump(map: &mut Counts, resource_type: &str) {
    *map.entry(resource_type.to_owned()).or_default() += 1;
}

/// The current row of a resource, as the batch sees it.
#[derive(Debug, Clone)]
struct Existing {
    rid: i64,
    resource_type: String,
    deleted: bool,
    hash: Option<i64>,
    source_key: Option<String>,
}

impl Existing {
    /// A row of `SELECT rid, type, deleted, hash, source_key …`.
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, StoreError> {
        Ok(Self {
            rid: row.try_get("rid").map_err(db_error)?,
            resource_type: row.try_get("type").map_err(db_error)?,
            deleted: row.try_get("deleted").map_err(db_error)?,
            hash: row.try_get("hash").map_err(db_error)?,
            source_key: row.try_get("source_key").map_err(db_error)?,
        })
    }
}

/// A new row waiting to be inserted, as the batch left it (written again or deleted in the
/// same batch: a later version, its earlier ones waiting in `history`).
struct NewRow {
    rid: i64,
    tid: String,
    resource_type: String,
    id: String,
    version: i64,
    deleted: bool,
    source_key: String,
    hash: Option<i64>,
    content: Option<Vec<u8>>,
    pat: i64,
}

/// An earlier version of a new row, for `resource_history`.
struct HistoryRow {
    rid: i64,
    version: i64,
    deleted: bool,
    content: Option<Vec<u8>>,
}

/// One batch's writes, inside its transaction.
pub(crate) struct BatchWriter<'c> {
    pub(crate) connection: &'c mut PgConnection,
    now: i64,
    systems: HashMap<String, i64>,
    compartments: HashMap<String, i64>,
    pub(crate) stats: ApplyStats,
    /// `Type/id` → its current row, for every row the batch named or wrote.
    existing: HashMap<String, Existing>,
    /// Source key → its current rows (`rid`, `Type/id`) in `rid` order, for the batch's keys.
    by_source: HashMap<String, Vec<(i64, String)>>,
    /// `rid`s drawn from the sequence and not yet given out, ascending.
    rids: VecDeque<i64>,
    /// New rows not yet inserted, and where each is in `pending` by `Type/id`.
    pending: Vec<NewRow>,
    pending_tids: HashMap<String, usize>,
    /// Earlier versions of new rows written again in the batch.
    history: Vec<HistoryRow>,
    /// `Type/id`s the batch named that the database does not hold.
    absent: HashSet<String>,
    /// Index rows to insert, by `rid`: the compartment they carry and the entries.
    index: BTreeMap<i64, (i64, Vec<IndexEntry>)>,
    /// `rid`s whose index rows are deleted before any is inserted.
    unindex: Vec<i64>,
    /// Checkpoints to write, the last value of each key (nothing in a batch reads them).
    checkpoints: BTreeMap<(String, String), Vec<u8>>,
}

impl<'c> BatchWriter<'c> {
    pub(crate) fn new(connection: &'c mut PgConnection, now: i64) -> Self {
        Self {
            connection,
            now,
            systems: HashMap::new(),
            compartments: HashMap::new(),
            stats: ApplyStats::default(),
            existing: HashMap::new(),
            by_source: HashMap::new(),
            rids: VecDeque::new(),
            pending: Vec::new(),
            pending_tids: HashMap::new(),
            history: Vec::new(),
            absent: HashSet::new(),
            index: BTreeMap::new(),
            unindex: Vec::new(),
            checkpoints: BTreeMap::new(),
        }
    }

    /// Applies a whole batch: reads what it names, plans, writes, flushes.
    pub(crate) async fn apply_batch(&mut self, batch: Batch) -> Result<(), StoreError> {
        self.prefetch(&batch).await?;
        for operation in batch.operations {
            self.apply(operation).await?;
        }
        self.flush().await
    }

    /// Reads, in a few statements, every row, compartment and token system the batch needs,
    /// and draws the `rid`s of its new rows.
    async fn prefetch(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let mut tids: Vec<String> = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        let mut patients: Vec<String> = Vec::new();
        let mut facilities: Vec<String> = Vec::new();
        let mut seen_patients: HashSet<&str> = HashSet::new();
        for operation in &batch.operations {
            match operation {
                Operation::ReplaceSource {
                    source_key,
                    facility,
                    resources,
                } => {
                    keys.push(source_key.clone());
                    for write in resources {
                        tids.push(write.tid.clone());
                        if let Some(patient) = write.compartment.as_deref()
                            && seen_patients.insert(patient)
                        {
                            // The first write of a patient decides its compartment's facility.
                            patients.push(patient.to_owned());
                            facilities.push(facility.clone());
                        }
                    }
                }
                Operation::DeleteSource { source_key } => keys.push(source_key.clone()),
                Operation::RequireNew { tid } => tids.push(tid.clone()),
                _ => {}
            }
        }
        if tids.is_empty() && keys.is_empty() {
            return Ok(());
        }
        tids.sort_unstable();
        tids.dedup();
        keys.sort_unstable();
        keys.dedup();
        let rows = sqlx::query(
            "SELECT rid, tid, type, deleted, hash, source_key FROM resources \
             WHERE tid = ANY($1) OR source_key = ANY($2) ORDER BY rid",
        )
        .bind(&tids)
        .bind(&keys)
        .fetch_all(&mut *self.connection)
        .await
        .map_err(db_error)?;
        for key in &keys {
            self.by_source.insert(key.clone(), Vec::new());
        }
        for row in rows {
            let tid: String = row.try_get("tid").map_err(db_error)?;
            let existing = Existing::from_row(&row)?;
            if !existing.deleted
                && let Some(key) = &existing.source_key
                && let Some(held) = self.by_source.get_mut(key)
            {
                held.push((existing.rid, tid.clone()));
            }
            self.existing.insert(tid, existing);
        }
        self.absent = tids
            .iter()
            .filter(|tid| !self.existing.contains_key(*tid))
            .cloned()
            .collect();
        if !patients.is_empty() {
            sqlx::query(
                "INSERT INTO compartments (patient, facility) \
                 SELECT * FROM UNNEST($1::text[], $2::text[]) \
                 ON CONFLICT (patient) DO UPDATE SET facility = EXCLUDED.facility \
                 WHERE compartments.facility IS NULL",
            )
            .bind(&patients)
            .bind(&facilities)
            .execute(&mut *self.connection)
            .await
            .map_err(db_error)?;
            let rows = sqlx::query("SELECT id, patient FROM compartments WHERE patient = ANY($1)")
                .bind(&patients)
                .fetch_all(&mut *self.connection)
                .await
                .map_err(db_error)?;
            for row in rows {
                self.compartments.insert(
                    row.try_get("patient").map_err(db_error)?,
                    row.try_get("id").map_err(db_error)?,
                );
            }
        }
        let rows = sqlx::query("SELECT id, system FROM token_systems")
            .fetch_all(&mut *self.connection)
            .await
            .map_err(db_error)?;
        for row in rows {
            self.systems.insert(
                row.try_get("system").map_err(db_error)?,
                row.try_get("id").map_err(db_error)?,
            );
        }
        let new = tids
            .iter()
            .filter(|tid| !self.existing.contains_key(*tid))
            .count();
        self.draw_rids(new).await
    }

    /// Draws `count` more `rid`s from the `resources` sequence: one range, the sequence moved
    /// past it in one statement. Only the batch writer draws from it, under the writer lock,
    /// so no other `nextval` comes between (drawing value by value took 5 ms a batch).
    async fn draw_rids(&mut self, count: usize) -> Result<(), StoreError> {
        let Ok(count) = i64::try_from(count) else {
            return Err(StoreError::Invalid(
                "too many resources in one batch".to_owned(),
            ));
        };
        if count == 0 {
            return Ok(());
        }
        let last: i64 = sqlx::query_scalar(
            "SELECT setval(s, nextval(s) + $1::int8 - 1) \
             FROM pg_get_serial_sequence('resources', 'rid') AS s",
        )
        .bind(count)
        .fetch_one(&mut *self.connection)
        .await
        .map_err(db_error)?;
        self.rids.extend(last - count + 1..=last);
        Ok(())
    }

    async fn next_rid(&mut self) -> Result<i64, StoreError> {
        if self.rids.is_empty() {
            self.draw_rids(64).await?;
        }
        self.rids
            .pop_front()
            .ok_or_else(|| StoreError::database("the rid sequence gave no value"))
    }

    pub(crate) async fn apply(&mut self, operation: Operation) -> Result<(), StoreError> {
        match operation {
            Operation::ReplaceSource {
                source_key,
                facility,
                resources,
            } => {
                let mut listed = HashSet::with_capacity(resources.len());
                for write in &resources {
                    if !listed.insert(write.tid.clone()) {
                        return Err(StoreError::Invalid(format!(
                            "{} appears twice in source record {source_key}",
                            write.tid
                        )));
                    }
                }
                for write in resources {
                    self.upsert(&source_key, &facility, write).await?;
                }
                let dropped: Vec<String> = self
                    .held(&source_key)
                    .await?
                    .into_iter()
                    .filter(|tid| !listed.contains(tid))
                    .collect();
                for tid in dropped {
                    self.delete(&tid).await?;
                }
            }
            Operation::RequireNew { tid } => {
                let current = match self.pending_tids.get(&tid) {
                    Some(&at) => self.pending.get(at).is_some_and(|row| !row.deleted),
                    None => self.existing.get(&tid).is_some_and(|row| !row.deleted),
                };
                if current {
                    return Err(StoreError::Conflict(format!("{tid} exists")));
                }
            }
            Operation::DeleteSource { source_key } => {
                for tid in self.held(&source_key).await? {
                    self.delete(&tid).await?;
                }
            }
            Operation::PutCheckpoint { scope, key, value } => {
                self.checkpoints.insert((scope, key), value);
            }
            Operation::LogMessage(message) => {
                messages::insert::<Postgres>(&mut *self.connection, vec![*message]).await?;
            }
            Operation::SetMessageState { seq, state, reason } => {
                messages::set_state::<Postgres>(&mut *self.connection, seq, state, &reason).await?;
            }
            Operation::Enqueue(message) => {
                outbox::insert::<Postgres>(&mut *self.connection, &message).await?;
            }
            Operation::SetDelivery(update) => {
                outbox::update::<Postgres>(&mut *self.connection, &update).await?;
            }
            Operation::Audit(record) => {
                audit::insert::<Postgres>(&mut *self.connection, std::slice::from_ref(&*record), 1)
                    .await?;
            }
            Operation::PutBlob { sha256, bytes } => {
                blobs::insert::<Postgres>(&mut *self.connection, &sha256, bytes).await?;
            }
        }
        Ok(())
    }

    /// The rows `source_key` holds now, in `rid` order.
    async fn held(&mut self, source_key: &str) -> Result<Vec<String>, StoreError> {
        if let Some(held) = self.by_source.get(source_key) {
            return Ok(held.iter().map(|(_, tid)| tid.clone()).collect());
        }
        self.flush().await?;
        sqlx::query_scalar(
            "SELECT tid FROM resources WHERE source_key = $1 AND NOT deleted ORDER BY rid",
        )
        .bind(source_key)
        .fetch_all(&mut *self.connection)
        .await
        .map_err(db_error)
    }

    /// Row `rid` of `tid` now holds a current version from `source_key` (it was held by `from`).
    fn now_holds(
        &mut self,
        tid: &str,
        rid: i64,
        from: Option<&str>,
        source_key: &str,
        hash: i64,
        resource_type: &str,
    ) {
        self.move_source(tid, rid, from, Some(source_key));
        self.existing.insert(
            tid.to_owned(),
            Existing {
                rid,
                resource_type: resource_type.to_owned(),
                deleted: false,
                hash: Some(hash),
                source_key: Some(source_key.to_owned()),
            },
        );
    }

    /// Moves `tid` (row `rid`) between the sources the batch keeps lists of.
    fn move_source(&mut self, tid: &str, rid: i64, from: Option<&str>, to: Option<&str>) {
        if let Some(from) = from
            && let Some(held) = self.by_source.get_mut(from)
        {
            held.retain(|(_, held)| held != tid);
        }
        if let Some(to) = to
            && let Some(held) = self.by_source.get_mut(to)
        {
            let at = held.partition_point(|(other, _)| *other < rid);
            held.insert(at, (rid, tid.to_owned()));
        }
    }

    /// The compartment id of `patient` (0 for none), created when new; a compartment keeps
    /// the facility that first wrote it.
    pub(crate) async fn compartment(
        &mut self,
        patient: Option<&str>,
        facility: Option<&str>,
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

    /// The row of `tid`, as the batch sees it (read from the database when not known yet).
    async fn existing(&mut self, tid: &str) -> Result<Option<Existing>, StoreError> {
        if let Some(existing) = self.existing.get(tid) {
            return Ok(Some(existing.clone()));
        }
        if self.absent.contains(tid) {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT rid, type, deleted, hash, source_key FROM resources WHERE tid = $1",
        )
        .bind(tid)
        .fetch_optional(&mut *self.connection)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let existing = Existing::from_row(&row)?;
        self.existing.insert(tid.to_owned(), existing.clone());
        Ok(Some(existing))
    }

    async fn upsert(
        &mut self,
        source_key: &str,
        facility: &str,
        write: ResourceWrite,
    ) -> Result<(), StoreError> {
        let pat = self
            .compartment(write.compartment.as_deref(), Some(facility))
            .await?;
        let hash = write.hash as i64;
        if let Some(&at) = self.pending_tids.get(&write.tid) {
            return self.upsert_pending(at, source_key, write, hash, pat);
        }
        let Some(existing) = self.existing(&write.tid).await? else {
            let rid = self.next_rid().await?;
            bump(&mut self.stats.created, &write.resource_type);
            self.now_holds(
                &write.tid,
                rid,
                None,
                source_key,
                hash,
                &write.resource_type,
            );
            self.index
                .insert(rid, (index_pat(&write.resource_type, pat), write.index));
            self.pending_tids
                .insert(write.tid.clone(), self.pending.len());
            self.pending.push(NewRow {
                rid,
                tid: write.tid,
                resource_type: write.resource_type,
                id: write.id,
                version: 1,
                deleted: false,
                source_key: source_key.to_owned(),
                hash: Some(hash),
                content: Some(write.content),
                pat,
            });
            return Ok(());
        };
        let rid = existing.rid;
        if !existing.deleted && existing.hash == Some(hash) {
            bump(&mut self.stats.unchanged, &write.resource_type);
            if existing.source_key.as_deref() != Some(source_key) {
                sqlx::query("UPDATE resources SET source_key = $1 WHERE rid = $2")
                    .bind(source_key)
                    .bind(rid)
                    .execute(&mut *self.connection)
                    .await
                    .map_err(db_error)?;
                self.move_source(
                    &write.tid,
                    rid,
                    existing.source_key.as_deref(),
                    Some(source_key),
                );
                if let Some(known) = self.existing.get_mut(&write.tid) {
                    known.source_key = Some(source_key.to_owned());
                }
            }
            return Ok(());
        }
        self.unindex(rid);
        self.archive(rid).await?;
        sqlx::query(
            "UPDATE resources SET version = version + 1, last_updated = $1, deleted = FALSE, source_key = $2, hash = $3, content = $4, pat = $5 WHERE rid = $6",
        )
        .bind(self.now)
        .bind(source_key)
        .bind(hash)
        .bind(&write.content)
        .bind(pat)
        .bind(rid)
        .execute(&mut *self.connection)
        .await
        .map_err(db_error)?;
        bump(&mut self.stats.updated, &write.resource_type);
        let from = if existing.deleted {
            None
        } else {
            existing.source_key.as_deref()
        };
        self.now_holds(
            &write.tid,
            rid,
            from,
            source_key,
            hash,
            &write.resource_type,
        );
        self.index
            .insert(rid, (index_pat(&write.resource_type, pat), write.index));
        Ok(())
    }

    async fn delete(&mut self, tid: &str) -> Result<(), StoreError> {
        if let Some(&at) = self.pending_tids.get(tid) {
            self.delete_pending(at);
            return Ok(());
        }
        let Some(existing) = self.existing(tid).await? else {
            return Ok(());
        };
        if existing.deleted {
            return Ok(());
        }
        self.unindex(existing.rid);
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
        self.move_source(tid, existing.rid, existing.source_key.as_deref(), None);
        if let Some(known) = self.existing.get_mut(tid) {
            known.deleted = true;
            known.hash = None;
        }
        Ok(())
    }

    /// A new row of this batch written again: unchanged (perhaps under another source), or a
    /// later version, its earlier one kept for `resource_history`, as a row-by-row writer would.
    fn upsert_pending(
        &mut self,
        at: usize,
        source_key: &str,
        write: ResourceWrite,
        hash: i64,
        pat: i64,
    ) -> Result<(), StoreError> {
        let Some(row) = self.pending.get_mut(at) else {
            return Err(StoreError::database("a pending row went missing"));
        };
        let rid = row.rid;
        let from = (!row.deleted).then(|| row.source_key.clone());
        if !row.deleted && row.hash == Some(hash) {
            bump(&mut self.stats.unchanged, &write.resource_type);
            if row.source_key != source_key {
                row.source_key = source_key.to_owned();
                self.move_source(&write.tid, rid, from.as_deref(), Some(source_key));
                if let Some(known) = self.existing.get_mut(&write.tid) {
                    known.source_key = Some(source_key.to_owned());
                }
            }
            return Ok(());
        }
        self.history.push(HistoryRow {
            rid,
            version: row.version,
            deleted: row.deleted,
            content: row.content.take(),
        });
        row.version += 1;
        row.deleted = false;
        row.source_key = source_key.to_owned();
        row.hash = Some(hash);
        row.content = Some(write.content);
        row.pat = pat;
        bump(&mut self.stats.updated, &write.resource_type);
        self.move_source(&write.tid, rid, from.as_deref(), Some(source_key));
        if let Some(known) = self.existing.get_mut(&write.tid) {
            known.deleted = false;
            known.hash = Some(hash);
            known.source_key = Some(source_key.to_owned());
        }
        self.index
            .insert(rid, (index_pat(&write.resource_type, pat), write.index));
        Ok(())
    }

    /// A new row of this batch deleted in it: a later, deleted version.
    fn delete_pending(&mut self, at: usize) {
        let Some(row) = self.pending.get_mut(at) else {
            return;
        };
        if row.deleted {
            return;
        }
        let (rid, tid) = (row.rid, row.tid.clone());
        self.history.push(HistoryRow {
            rid,
            version: row.version,
            deleted: false,
            content: row.content.take(),
        });
        row.version += 1;
        row.deleted = true;
        row.hash = None;
        let source = row.source_key.clone();
        bump(&mut self.stats.deleted, &row.resource_type);
        self.index.remove(&rid);
        self.move_source(&tid, rid, Some(&source), None);
        if let Some(known) = self.existing.get_mut(&tid) {
            known.deleted = true;
            known.hash = None;
        }
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

    /// The index rows of `rid` go (those in the database when the batch flushes, those waiting
    /// at once).
    fn unindex(&mut self, rid: i64) {
        self.index.remove(&rid);
        self.unindex.push(rid);
    }

    /// Index rows of `rid` to write when the batch flushes (the reindex's path).
    pub(crate) fn queue_index(&mut self, rid: i64, pat: i64, index: Vec<IndexEntry>) {
        self.index.insert(rid, (pat, index));
    }

    pub(crate) async fn system_id(&mut self, system: &str) -> Result<i64, StoreError> {
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

    /// Writes what waits: index rows replaced, new rows, new index rows.
    pub(crate) async fn flush(&mut self) -> Result<(), StoreError> {
        if !self.unindex.is_empty() {
            let rids = std::mem::take(&mut self.unindex);
            for table in INDEX_TABLES {
                sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE rid = ANY($1)"
                )))
                .bind(&rids)
                .execute(&mut *self.connection)
                .await
                .map_err(db_error)?;
            }
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_tids.clear();
        self.insert_rows(&pending).await?;
        let mut copy = CopyRows::new(5);
        for row in std::mem::take(&mut self.history) {
            copy.row()
                .int8(row.rid)
                .int8(row.version)
                .int8(self.now)
                .boolean(row.deleted)
                .bytea_or_null(row.content.as_deref())?;
        }
        copy.send(
            &mut *self.connection,
            "resource_history (rid, version, last_updated, deleted, content)",
        )
        .await?;
        let index = std::mem::take(&mut self.index);
        self.insert_index(index).await?;
        let checkpoints = std::mem::take(&mut self.checkpoints);
        let (mut scopes, mut keys, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for ((scope, key), value) in checkpoints {
            scopes.push(scope);
            keys.push(key);
            values.push(value);
        }
        for range in chunks(scopes.len()) {
            // One row per key (the map's), as `ON CONFLICT DO UPDATE` requires.
            sqlx::query(
                "INSERT INTO checkpoints (scope, key, value) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[]) \
                 ON CONFLICT (scope, key) DO UPDATE SET value = EXCLUDED.value",
            )
            .bind(&scopes[range.clone()])
            .bind(&keys[range.clone()])
            .bind(&values[range])
            .execute(&mut *self.connection)
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }

    /// The batch's new rows, with their `rid`s (a `COPY` writes an identity column as given).
    async fn insert_rows(&mut self, rows: &[NewRow]) -> Result<(), StoreError> {
        let mut copy = CopyRows::new(11);
        for row in rows {
            copy.row()
                .int8(row.rid)
                .text(&row.tid)?
                .text(&row.resource_type)?
                .text(&row.id)?
                .int8(row.version)
                .int8(self.now)
                .boolean(row.deleted)
                .text(&row.source_key)?
                .int8_or_null(row.hash)
                .bytea_or_null(row.content.as_deref())?
                .int8(row.pat);
        }
        copy.send(
            &mut *self.connection,
            "resources (rid, tid, type, id, version, last_updated, deleted, source_key, hash, content, pat)",
        )
        .await
    }
}

/// `0..len` cut into ranges of at most [`ROWS_PER_STATEMENT`].
fn chunks(len: usize) -> Vec<std::ops::Range<usize>> {
    (0..len)
        .step_by(ROWS_PER_STATEMENT)
        .map(|start| start..(start + ROWS_PER_STATEMENT).min(len))
        .collect()
}
