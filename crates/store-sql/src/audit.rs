//! The audit table on either database: multi-row inserts (the SQLite journal's import uses them
//! too) and the filtered, newest-first listing the audit API pages through.

use sqlx::{Database, QueryBuilder};
use tsunagi_store::{
    StoreError,
    governance::{AuditFilter, AuditRecord, ListedAudit},
};

use crate::dialect::{Cells, Dialect, count, execute_built, stmt};

type Connection<D> = <D as Database>::Connection;

/// Inserts `records`, `chunk` per statement, on `connection` (inside the caller's transaction
/// when there are several statements).
pub async fn insert<D: Dialect>(
    connection: &mut Connection<D>,
    records: &[AuditRecord],
    chunk: usize,
) -> Result<(), StoreError> {
    for part in records.chunks(chunk.max(1)) {
        let mut sql = QueryBuilder::<D>::new(
            "INSERT INTO audit (id, recorded, patient, facility, event) VALUES ",
        );
        for (index, record) in part.iter().enumerate() {
            sql.push(if index == 0 { "(" } else { ", (" });
            D::bind(&mut sql, record.id.as_str().into());
            sql.push(", ");
            D::bind(&mut sql, record.recorded.into());
            sql.push(", ");
            D::bind(&mut sql, record.patient.as_deref().into());
            sql.push(", ");
            D::bind(&mut sql, record.facility.as_deref().into());
            sql.push(", ");
            D::bind(&mut sql, record.event.as_slice().into());
            sql.push(")");
        }
        execute_built::<D>(connection, &mut sql).await?;
    }
    Ok(())
}

/// The records `filter` selects, newest first.
pub async fn list<D: Dialect>(
    connection: &mut Connection<D>,
    filter: &AuditFilter,
) -> Result<Vec<ListedAudit>, StoreError> {
    let rows = stmt(
        "SELECT seq, id, recorded, patient, facility, event FROM audit \
         WHERE (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR patient = ?2) \
         AND (?3 IS NULL OR recorded >= ?3) AND (?4 IS NULL OR recorded < ?4) \
         AND (?5 IS NULL OR facility = ?5 OR patient IN (SELECT patient FROM compartments WHERE facility = ?5)) \
         AND (?6 IS NULL OR seq < ?6) \
         ORDER BY seq DESC LIMIT ?7",
    )
    .arg(filter.id.as_deref())
    .arg(filter.patient.as_deref())
    .arg(filter.from)
    .arg(filter.to)
    .arg(filter.facility.as_deref())
    .arg(filter.before)
    .arg(count(filter.limit))
    .fetch_all::<D>(connection)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ListedAudit {
                position: row.int("seq")?,
                record: AuditRecord {
                    id: row.opt_text("id")?.unwrap_or_default(),
                    recorded: row.int("recorded")?,
                    patient: row.opt_text("patient")?,
                    facility: row.opt_text("facility")?,
                    event: row.bytes("event")?,
                },
            })
        })
        .collect()
}
