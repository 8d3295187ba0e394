//! Paging snapshots on either database (`search_snapshots`, `search_snapshot_keys`; see
//! `tsunagi_store::paging`): a header row and the keys in chunks, written in one transaction,
//! read a page's chunks at a time, pruned by age and by keys kept in all.

use sqlx::QueryBuilder;
use tsunagi_store::{
    StoreError,
    paging::{NewSnapshot, Paging, SNAPSHOT_CHUNK, SnapshotPage, decode_chunk, encode_chunk},
};

use crate::{
    dialect::{Bound, Cells, Dialect, db_error, execute_built, stmt},
    store::{Engine, SqlStore},
};

/// Chunk rows per insert statement (three values each).
const ROWS_PER_INSERT: usize = 64;

fn whole(value: i64) -> usize {
    usize::try_from(value).unwrap_or(0)
}

fn stored(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl<E: Engine> Paging for SqlStore<E> {
    async fn put_snapshot(&self, snapshot: NewSnapshot<'_>) -> Result<(), StoreError> {
        let mut transaction = self.begin_small_write().await?;
        stmt("INSERT INTO search_snapshots (id, scope, total, created) VALUES (?1, ?2, ?3, ?4)")
            .arg(snapshot.id)
            .arg(snapshot.scope)
            .arg(stored(snapshot.keys.len()))
            .arg(snapshot.created)
            .execute::<E::Db>(&mut *transaction)
            .await?;
        let chunks: Vec<&[i64]> = snapshot.keys.chunks(SNAPSHOT_CHUNK).collect();
        for (first, rows) in chunks.chunks(ROWS_PER_INSERT).enumerate() {
            let mut sql = QueryBuilder::<E::Db>::new(
                "INSERT INTO search_snapshot_keys (id, chunk, keys) VALUES ",
            );
            for (index, keys) in rows.iter().enumerate() {
                sql.push(if index == 0 { "(" } else { ", (" });
                let values: [Bound; 3] = [
                    snapshot.id.into(),
                    stored(first * ROWS_PER_INSERT + index).into(),
                    encode_chunk(keys).into(),
                ];
                for (position, value) in values.into_iter().enumerate() {
                    if position > 0 {
                        sql.push(", ");
                    }
                    <E::Db as Dialect>::bind(&mut sql, value);
                }
                sql.push(")");
            }
            execute_built::<E::Db>(&mut *transaction, &mut sql).await?;
        }
        transaction.commit().await.map_err(db_error)?;
        Ok(())
    }

    async fn snapshot_page(
        &self,
        id: &str,
        not_before: i64,
        offset: usize,
        count: usize,
    ) -> Result<Option<SnapshotPage>, StoreError> {
        let mut connection = self.read_connection().await?;
        let Some(header) =
            stmt("SELECT scope, total FROM search_snapshots WHERE id = ?1 AND created >= ?2")
                .arg(id)
                .arg(not_before)
                .fetch_optional::<E::Db>(&mut *connection)
                .await?
        else {
            return Ok(None);
        };
        let scope = header.text("scope")?;
        let total = whole(header.int("total")?);
        let end = offset.saturating_add(count).min(total);
        let mut keys = Vec::with_capacity(end.saturating_sub(offset));
        if offset < end {
            let first = offset / SNAPSHOT_CHUNK;
            let last = (end - 1) / SNAPSHOT_CHUNK;
            let rows = stmt(
                "SELECT chunk, keys FROM search_snapshot_keys \
                 WHERE id = ?1 AND chunk >= ?2 AND chunk <= ?3 ORDER BY chunk",
            )
            .arg(id)
            .arg(stored(first))
            .arg(stored(last))
            .fetch_all::<E::Db>(&mut *connection)
            .await?;
            connection.done();
            if rows.len() != last - first + 1 {
                // Pruned between the two reads: expired like the header.
                return Ok(None);
            }
            for row in &rows {
                let start = whole(row.int("chunk")?) * SNAPSHOT_CHUNK;
                for (position, key) in decode_chunk(&row.bytes("keys")?)?.into_iter().enumerate() {
                    if (offset..end).contains(&(start + position)) {
                        keys.push(key);
                    }
                }
            }
        }
        Ok(Some(SnapshotPage { scope, total, keys }))
    }

    async fn prune_snapshots(&self, before: i64, max_keys: usize) -> Result<u64, StoreError> {
        let mut transaction = self.begin_small_write().await?;
        let mut ids: Vec<String> = Vec::new();
        for row in stmt("SELECT id FROM search_snapshots WHERE created < ?1")
            .arg(before)
            .fetch_all::<E::Db>(&mut *transaction)
            .await?
        {
            ids.push(row.text("id")?);
        }
        // Newest first, the running count of keys: every snapshot past `max_keys` goes.
        for row in stmt(
            "SELECT id FROM (SELECT id, SUM(total) OVER (ORDER BY created DESC, id DESC) AS kept \
             FROM search_snapshots WHERE created >= ?1) AS newest WHERE kept > ?2",
        )
        .arg(before)
        .arg(stored(max_keys))
        .fetch_all::<E::Db>(&mut *transaction)
        .await?
        {
            ids.push(row.text("id")?);
        }
        if ids.is_empty() {
            return Ok(0);
        }
        stmt(format!(
            "DELETE FROM search_snapshot_keys WHERE {}",
            <E::Db as Dialect>::in_list("id", "?1")
        ))
        .arg(ids.clone())
        .execute::<E::Db>(&mut *transaction)
        .await?;
        let removed = stmt(format!(
            "DELETE FROM search_snapshots WHERE {}",
            <E::Db as Dialect>::in_list("id", "?1")
        ))
        .arg(ids)
        .execute::<E::Db>(&mut *transaction)
        .await?;
        transaction.commit().await.map_err(db_error)?;
        Ok(removed)
    }
}
