//! The store's reads of clinical data, once for both databases: by id, by version, a
//! resource's history, checkpoints, whole-store scans, lookups for the adapters, includes,
//! compartments (`$everything`) and the system history. Every statement that returns clinical
//! rows carries the consent guard (`crate::guard`).

use std::{collections::HashMap, sync::LazyLock};

use serde_json::Value;
use sqlx::QueryBuilder;
use tsunagi_fhir::{search, systems::canonical};
use tsunagi_store::{
    Access, ApplyStats, Batch, Counts, HistoryCursor, HistoryEntry, Key, SearchQuery, Store,
    StoreError, StoredResource, Visitor,
};

use crate::{
    dialect::{Bound, Cells, Dialect, count, db_error, fetch_built, stmt},
    guard::{guard, push_guard, viewer},
    search as run,
    store::{Engine, SqlStore, to_the_end},
};

/// The columns [`stored_from_row`] reads, of `resources r` (current versions) and the
/// compartment `c` joined on `r.pat`.
const CURRENT: &str = "r.type, r.id, r.version, r.last_updated, r.deleted, r.content, c.patient";

/// The current version of `?1` (a `Type/id`), if `?2` at `?3` may see it. The statements of the
/// hottest reads are written once per process, not per request.
static READ: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {CURRENT} FROM resources r LEFT JOIN compartments c ON c.id = r.pat \
         WHERE r.tid = ?1 AND {}",
        guard("r.pat", "?2", "?3")
    )
});

/// An earlier version `?4` of `?1`, if `?2` at `?3` may see it.
static VREAD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT r.type, r.id, h.version, h.last_updated, h.deleted, h.content, c.patient \
         FROM resource_history h JOIN resources r ON r.rid = h.rid LEFT JOIN compartments c ON c.id = r.pat \
         WHERE r.tid = ?1 AND h.version = ?4 AND {}",
        guard("r.pat", "?2", "?3")
    )
});

/// Every version of `?1`, newest first, if `?2` at `?3` may see it.
static HISTORY: LazyLock<String> = LazyLock::new(|| {
    let guarded = guard("r.pat", "?2", "?3");
    format!(
        "SELECT {CURRENT} FROM resources r LEFT JOIN compartments c ON c.id = r.pat \
         WHERE r.tid = ?1 AND {guarded} \
         UNION ALL \
         SELECT r.type, r.id, h.version, h.last_updated, h.deleted, h.content, c.patient \
         FROM resource_history h JOIN resources r ON r.rid = h.rid LEFT JOIN compartments c ON c.id = r.pat \
         WHERE r.tid = ?1 AND {guarded} \
         ORDER BY version DESC"
    )
});

pub(crate) fn stored_from_row(row: &impl Cells) -> Result<StoredResource, StoreError> {
    Ok(StoredResource {
        resource_type: row.text("type")?,
        id: row.text("id")?,
        version: row.int("version")?,
        last_updated: row.int("last_updated")?,
        deleted: row.flag("deleted")?,
        content: row.opt_bytes("content")?,
        patient: row.opt_text("patient")?,
    })
}

fn unknown_param(resource_type: &str, param: &str) -> StoreError {
    StoreError::Invalid(format!("unknown search parameter {resource_type}.{param}"))
}

#[async_trait::async_trait]
impl<E: Engine> Store for SqlStore<E> {
    async fn apply(&self, batch: Batch) -> Result<ApplyStats, StoreError> {
        let store = self.clone();
        to_the_end(async move {
            let mut transaction = store.begin_write().await?;
            let stats = store.apply_in(&mut *transaction, batch).await?;
            transaction.commit().await.map_err(db_error)?;
            Ok(stats)
        })
        .await
    }

    async fn read(
        &self,
        access: &Access,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredResource>, StoreError> {
        let (viewer, at) = viewer(access);
        let row = stmt(READ.as_str())
            .arg(format!("{resource_type}/{id}"))
            .arg(viewer)
            .arg(at)
            .fetch_optional_in::<E::Db>(self.reader())
            .await?;
        row.as_ref().map(stored_from_row).transpose()
    }

    async fn vread(
        &self,
        access: &Access,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<StoredResource>, StoreError> {
        if let Some(current) = self.read(access, resource_type, id).await?
            && current.version == version
        {
            return Ok(Some(current));
        }
        let (viewer, at) = viewer(access);
        let row = stmt(VREAD.as_str())
            .arg(format!("{resource_type}/{id}"))
            .arg(viewer)
            .arg(at)
            .arg(version)
            .fetch_optional_in::<E::Db>(self.reader())
            .await?;
        row.as_ref().map(stored_from_row).transpose()
    }

    async fn history(
        &self,
        access: &Access,
        resource_type: &str,
        id: &str,
    ) -> Result<Vec<StoredResource>, StoreError> {
        let (viewer, at) = viewer(access);
        let rows = stmt(HISTORY.as_str())
            .arg(format!("{resource_type}/{id}"))
            .arg(viewer)
            .arg(at)
            .fetch_all_in::<E::Db>(self.reader())
            .await?;
        rows.iter().map(stored_from_row).collect()
    }

    async fn checkpoint(&self, scope: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = stmt("SELECT value FROM checkpoints WHERE scope = ?1 AND key = ?2")
            .arg(scope)
            .arg(key)
            .fetch_optional_in::<E::Db>(self.writer())
            .await?;
        row.map(|row| row.bytes("value")).transpose()
    }

    async fn blob_size(&self, sha256: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        crate::blobs::size::<E::Db>(self.reader(), sha256).await
    }

    async fn blob_part(
        &self,
        sha256: &[u8; 32],
        at: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        crate::blobs::part::<E::Db>(self.reader(), sha256, at).await
    }

    async fn checkpoints_in(
        &self,
        scopes: &[String],
    ) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        if scopes.is_empty() {
            return Ok(Vec::new());
        }
        let rows = stmt(format!(
            "SELECT scope, key, value FROM checkpoints WHERE {} ORDER BY scope, key",
            E::Db::in_list("scope", "?1")
        ))
        .arg(scopes)
        .fetch_all_in::<E::Db>(self.writer())
        .await?;
        rows.iter()
            .map(|row| Ok((row.text("scope")?, row.text("key")?, row.bytes("value")?)))
            .collect()
    }

    async fn checkpoints(&self, scope: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = stmt("SELECT key, value FROM checkpoints WHERE scope = ?1 ORDER BY key")
            .arg(scope)
            .fetch_all_in::<E::Db>(self.writer())
            .await?;
        rows.iter()
            .map(|row| Ok((row.text("key")?, row.bytes("value")?)))
            .collect()
    }

    async fn for_each_current(&self, visit: &mut Visitor<'_>) -> Result<u64, StoreError> {
        let mut last = String::new();
        let mut seen = 0u64;
        loop {
            let mut connection = self.write_connection().await?;
            let rows = stmt(format!(
                "SELECT r.tid, {CURRENT} FROM resources r LEFT JOIN compartments c ON c.id = r.pat \
                 WHERE NOT r.deleted AND r.tid > ?1 ORDER BY r.tid LIMIT 500"
            ))
            .arg(last.as_str())
            .fetch_all::<E::Db>(&mut *connection)
            .await?;
            drop(connection);
            if rows.is_empty() {
                return Ok(seen);
            }
            for row in &rows {
                last = row.text("tid")?;
                visit(stored_from_row(row)?)?;
                seen += 1;
            }
        }
    }

    async fn count_current(&self) -> Result<Counts, StoreError> {
        let rows =
            stmt("SELECT type, COUNT(*) AS n FROM resources WHERE NOT deleted GROUP BY type")
                .fetch_all_in::<E::Db>(self.writer())
                .await?;
        let mut counts = Counts::new();
        for row in rows {
            counts.insert(row.text("type")?, row.int("n")?.max(0) as u64);
        }
        Ok(counts)
    }

    async fn find_by_token(
        &self,
        resource_type: &str,
        param: &str,
        system: Option<&str>,
        code: &str,
    ) -> Result<Vec<String>, StoreError> {
        let definition = search::param(resource_type, param)
            .ok_or_else(|| unknown_param(resource_type, param))?;
        let by_system = if system.is_some() {
            " AND t.system_id = (SELECT id FROM token_systems WHERE system = ?3)"
        } else {
            ""
        };
        let mut statement = stmt(format!(
            "SELECT r.id FROM idx_token t JOIN resources r ON r.rid = t.rid \
             WHERE t.param = ?1 AND t.code = ?2{by_system} AND NOT r.deleted ORDER BY r.id"
        ))
        .arg(i64::from(definition.id))
        .arg(code);
        if let Some(system) = system {
            statement = statement.arg(canonical(system));
        }
        let rows = statement.fetch_all_in::<E::Db>(self.writer()).await?;
        rows.iter().map(|row| row.text("id")).collect()
    }

    async fn find_by_reference(
        &self,
        resource_type: &str,
        param: &str,
        target: &str,
    ) -> Result<Vec<String>, StoreError> {
        let definition = search::param(resource_type, param)
            .ok_or_else(|| unknown_param(resource_type, param))?;
        let Some((target_type, target_id)) = search::split_reference(target) else {
            return Err(StoreError::Invalid(format!("{target} is not Type/id")));
        };
        let rows = stmt(
            "SELECT r.id FROM idx_reference x JOIN resources r ON r.rid = x.rid \
             WHERE x.param = ?1 AND x.target_id = ?2 AND x.target_type = ?3 AND NOT r.deleted ORDER BY r.id",
        )
        .arg(i64::from(definition.id))
        .arg(target_id)
        .arg(target_type)
        .fetch_all_in::<E::Db>(self.writer())
        .await?;
        rows.iter().map(|row| row.text("id")).collect()
    }

    async fn search(&self, access: &Access, query: &SearchQuery) -> Result<Vec<Key>, StoreError> {
        let mut connection = self.read_connection().await?;
        let keys = run::search::<E::Db>(&mut *connection, access, query).await?;
        connection.done();
        Ok(keys)
    }

    async fn count(&self, access: &Access, query: &SearchQuery) -> Result<u64, StoreError> {
        let mut connection = self.read_connection().await?;
        let count = run::count::<E::Db>(&mut *connection, access, query).await?;
        connection.done();
        Ok(count)
    }

    async fn fetch(
        &self,
        access: &Access,
        keys: &[Key],
    ) -> Result<Vec<StoredResource>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (viewer, at) = viewer(access);
        let rows = stmt(format!(
            "SELECT r.rid, {CURRENT} FROM resources r LEFT JOIN compartments c ON c.id = r.pat \
             WHERE {} AND NOT r.deleted AND {}",
            E::Db::in_list("r.rid", "?1"),
            guard("r.pat", "?2", "?3")
        ))
        .arg(keys)
        .arg(viewer)
        .arg(at)
        .fetch_all_in::<E::Db>(self.reader())
        .await?;
        let mut by_key = HashMap::with_capacity(rows.len());
        for row in &rows {
            by_key.insert(row.int("rid")?, stored_from_row(row)?);
        }
        Ok(keys.iter().filter_map(|key| by_key.remove(key)).collect())
    }

    async fn keys_of(
        &self,
        access: &Access,
        references: &[(String, String)],
    ) -> Result<Vec<Key>, StoreError> {
        if references.is_empty() {
            return Ok(Vec::new());
        }
        let tids: Vec<String> = references
            .iter()
            .map(|(resource_type, id)| format!("{resource_type}/{id}"))
            .collect();
        let (viewer, at) = viewer(access);
        let rows = stmt(format!(
            "SELECT r.rid FROM resources r WHERE {} AND NOT r.deleted AND {} ORDER BY r.rid",
            E::Db::in_list("r.tid", "?1"),
            guard("r.pat", "?2", "?3")
        ))
        .arg(tids)
        .arg(viewer)
        .arg(at)
        .fetch_all_in::<E::Db>(self.reader())
        .await?;
        rows.iter().map(|row| row.int("rid")).collect()
    }

    async fn referencing(
        &self,
        access: &Access,
        param: u16,
        targets: &[(String, String)],
        limit: usize,
    ) -> Result<Vec<Key>, StoreError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let pairs = targets
            .iter()
            .map(|(resource_type, id)| [id.clone(), resource_type.clone()])
            .collect();
        let (viewer, at) = viewer(access);
        let rows = stmt(format!(
            "SELECT DISTINCT x.rid FROM {} t \
             JOIN idx_reference x ON x.param = ?4 AND x.target_id = t.first AND x.target_type = t.second \
             JOIN resources r ON r.rid = x.rid WHERE {} ORDER BY x.rid LIMIT ?5",
            E::Db::pairs("?1"),
            guard("r.pat", "?2", "?3")
        ))
        .arg(Bound::Pairs(pairs))
        .arg(viewer)
        .arg(at)
        .arg(i64::from(param))
        .arg(count(limit))
        .fetch_all_in::<E::Db>(self.reader())
        .await?;
        rows.iter().map(|row| row.int("rid")).collect()
    }

    async fn compartment(
        &self,
        access: &Access,
        patient: &str,
        types: &[String],
        since: Option<i64>,
    ) -> Result<Vec<Key>, StoreError> {
        let mut connection = self.read_connection().await?;
        let members =
            run::permitted_with_links::<E::Db>(&mut *connection, access, &[patient.to_owned()])
                .await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let (viewer, at) = viewer(access);
        let of_types = if types.is_empty() {
            String::new()
        } else {
            format!(" AND {}", E::Db::in_list("r.type", "?5"))
        };
        let mut statement = stmt(format!(
            "SELECT r.rid FROM resources r WHERE {} AND NOT r.deleted{of_types} \
             AND (?4 IS NULL OR r.last_updated >= ?4) AND {} \
             ORDER BY r.type <> 'Patient', r.rid",
            E::Db::in_list("r.pat", "?1"),
            guard("r.pat", "?2", "?3")
        ))
        .arg(members)
        .arg(viewer)
        .arg(at)
        .arg(since);
        if !types.is_empty() {
            statement = statement.arg(types);
        }
        let rows = statement.fetch_all::<E::Db>(&mut *connection).await?;
        connection.done();
        rows.iter().map(|row| row.int("rid")).collect()
    }

    async fn history_all(
        &self,
        access: &Access,
        resource_type: Option<&str>,
        since: Option<i64>,
        after: Option<&HistoryCursor>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut sql = history_page::<E::Db>(access, resource_type, since, after, limit);
        let mut connection = self.read_connection().await?;
        let rows = fetch_built::<E::Db>(&mut *connection, &mut sql).await?;
        connection.done();
        rows.iter().map(stored_from_row).collect()
    }
}

/// One page of the system (or type) history. Each side (current versions, earlier versions) is
/// read newest first through its `last_updated` index and stops after one page; the two pages
/// are merged. The cursor keeps rows after (last_updated, type, id, version) in (DESC, ASC,
/// ASC, DESC) order; its redundant `last_updated <= ?` bounds the index range.
fn history_page<D: Dialect>(
    access: &Access,
    resource_type: Option<&str>,
    since: Option<i64>,
    after: Option<&HistoryCursor>,
    limit: usize,
) -> QueryBuilder<D> {
    let mut sql = QueryBuilder::<D>::new(
        "SELECT type, id, version, last_updated, deleted, content, patient FROM (",
    );
    // Index hints, and a join order kept (SQLite's CROSS JOIN): without statistics SQLite's
    // planner prefers scanning and sorting everything, or looping over the resources.
    let current = if resource_type.is_some() {
        format!("resources r{}", D::indexed_by("resources_type_updated"))
    } else {
        format!("resources r{}", D::indexed_by("resources_updated"))
    };
    let earlier = format!(
        "resource_history h{} {} resources r ON r.rid = h.rid",
        D::indexed_by("resource_history_updated"),
        D::ORDERED_JOIN
    );
    for (index, (table, prefix)) in [(current, "r."), (earlier, "h.")].into_iter().enumerate() {
        if index > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push(format!(
            "SELECT * FROM (SELECT r.type AS type, r.id AS id, {prefix}version AS version, \
             {prefix}last_updated AS last_updated, {prefix}deleted AS deleted, {prefix}content AS content, \
             (SELECT patient FROM compartments WHERE id = r.pat) AS patient FROM {table} WHERE TRUE"
        ));
        push_guard(&mut sql, access, "r.pat");
        if let Some(resource_type) = resource_type {
            sql.push(" AND r.type = ");
            D::bind(&mut sql, resource_type.into());
            if index > 0 {
                // Earlier versions carry no type: test membership in one set of the type's
                // rows instead of looking every version's resource up.
                sql.push(" AND h.rid IN (SELECT rid FROM resources WHERE type = ");
                D::bind(&mut sql, resource_type.into());
                sql.push(")");
            }
        }
        if let Some(since) = since {
            sql.push(format!(" AND {prefix}last_updated >= "));
            D::bind(&mut sql, since.into());
        }
        if let Some(cursor) = after {
            sql.push(format!(" AND {prefix}last_updated <= "));
            D::bind(&mut sql, cursor.last_updated.into());
            sql.push(format!(" AND ({prefix}last_updated < "));
            D::bind(&mut sql, cursor.last_updated.into());
            sql.push(" OR r.type > ");
            D::bind(&mut sql, cursor.resource_type.as_str().into());
            sql.push(" OR (r.type = ");
            D::bind(&mut sql, cursor.resource_type.as_str().into());
            sql.push(" AND (r.id > ");
            D::bind(&mut sql, cursor.id.as_str().into());
            sql.push(" OR (r.id = ");
            D::bind(&mut sql, cursor.id.as_str().into());
            sql.push(format!(" AND {prefix}version < "));
            D::bind(&mut sql, cursor.version.into());
            sql.push("))))");
        }
        sql.push(format!(
            " ORDER BY {prefix}last_updated DESC, r.type, r.id, {prefix}version DESC LIMIT "
        ));
        D::bind(&mut sql, count(limit));
        sql.push(format!(") AS side{index}"));
    }
    sql.push(") AS page ORDER BY last_updated DESC, type, id, version DESC LIMIT ");
    D::bind(&mut sql, count(limit));
    sql
}

/// Parses stored content (a corrupt row is an error, not a panic).
pub(crate) fn parse_content(content: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(content).map_err(|error| StoreError::Corrupt(error.to_string()))
}
