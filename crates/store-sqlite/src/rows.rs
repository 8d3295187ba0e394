//! What the batch writer and the reindex share: the `token_systems` and `compartments`
//! dictionaries as one transaction sees them, and multi-row inserts of resources and index rows
//! in power-of-two chunks.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use tsunagi_fhir::search::{IndexEntry, IndexValue};
use tsunagi_store::StoreError;
use tsunagi_store_sql::{db_error, pow2_sizes};

/// Rows per multi-row INSERT (SQLite allows 32766 bound parameters).
pub(crate) const RESOURCE_CHUNK: usize = 500;
pub(crate) const INDEX_CHUNK: usize = 1000;

/// A JSON array of `items`, bound as one parameter and read with `json_each` (one statement
/// shape whatever the list's length).
pub(crate) fn json_list<T: Clone + Into<Value>>(items: &[T]) -> String {
    Value::from(items.to_vec()).to_string()
}

/// The `token_systems` dictionary as seen inside one transaction.
#[derive(Default)]
pub(crate) struct SystemIds(HashMap<String, i64>);

impl SystemIds {
    pub(crate) async fn load(connection: &mut SqliteConnection) -> Result<Self, StoreError> {
        let rows = sqlx::query("SELECT id, system FROM token_systems")
            .fetch_all(&mut *connection)
            .await
            .map_err(db_error)?;
        let mut map = HashMap::with_capacity(rows.len());
        for row in rows {
            map.insert(
                row.try_get("system").map_err(db_error)?,
                row.try_get("id").map_err(db_error)?,
            );
        }
        Ok(Self(map))
    }

    /// The id of a system, if it has one.
    pub(crate) fn get(&self, system: &str) -> Option<i64> {
        self.0.get(system).copied()
    }

    /// The id of a system, adding it to the dictionary when new.
    pub(crate) async fn id(
        &mut self,
        connection: &mut SqliteConnection,
        system: &str,
    ) -> Result<i64, StoreError> {
        if let Some(id) = self.0.get(system) {
            return Ok(*id);
        }
        let id: i64 =
            sqlx::query_scalar("INSERT INTO token_systems (system) VALUES (?) RETURNING id")
                .bind(system)
                .fetch_one(&mut *connection)
                .await
                .map_err(db_error)?;
        self.0.insert(system.to_owned(), id);
        Ok(id)
    }
}

/// The `compartments` dictionary as seen inside one transaction (only the patients a batch
/// touches are loaded).
#[derive(Default)]
pub(crate) struct CompartmentIds(HashMap<String, i64>);

impl CompartmentIds {
    /// Loads (creating where missing) the ids of `patients`, each with the facility holding
    /// it (a compartment keeps the facility that first wrote it).
    pub(crate) async fn load(
        &mut self,
        connection: &mut SqliteConnection,
        patients: &[(&str, Option<&str>)],
    ) -> Result<(), StoreError> {
        if patients.is_empty() {
            return Ok(());
        }
        let pairs: Vec<Vec<Value>> = patients
            .iter()
            .map(|(patient, facility)| vec![Value::from(*patient), Value::from(*facility)])
            .collect();
        sqlx::query(
            "INSERT INTO compartments (patient, facility) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1) WHERE true \
             ON CONFLICT (patient) DO UPDATE SET facility = excluded.facility WHERE facility IS NULL",
        )
        .bind(json_list(&pairs))
        .execute(&mut *connection)
        .await
        .map_err(db_error)?;
        let names: Vec<&str> = patients.iter().map(|(patient, _)| *patient).collect();
        let list = json_list(&names);
        let rows = sqlx::query(
            "SELECT id, patient FROM compartments WHERE patient IN (SELECT value FROM json_each(?1))",
        )
        .bind(&list)
        .fetch_all(&mut *connection)
        .await
        .map_err(db_error)?;
        for row in rows {
            self.0.insert(
                row.try_get("patient").map_err(db_error)?,
                row.try_get("id").map_err(db_error)?,
            );
        }
        Ok(())
    }

    /// The id of one patient's compartment (0 for none), creating it when new.
    pub(crate) async fn resolve(
        &mut self,
        connection: &mut SqliteConnection,
        patient: Option<&str>,
        facility: Option<&str>,
    ) -> Result<i64, StoreError> {
        let Some(patient) = patient else {
            return Ok(0);
        };
        if let Some(id) = self.0.get(patient) {
            return Ok(*id);
        }
        self.load(connection, &[(patient, facility)]).await?;
        self.0
            .get(patient)
            .copied()
            .ok_or_else(|| StoreError::database(format!("compartment of {patient} not created")))
    }
}

/// The compartment id an index row carries: a Patient's own rows carry 0, so that searches for
/// patients (by identifier, name, birth date) are one key range over the whole region.
pub(crate) fn index_pat(resource_type: &str, pat: i64) -> i64 {
    if resource_type == "Patient" { 0 } else { pat }
}

pub(crate) fn bump(map: &mut std::collections::BTreeMap<String, u64>, resource_type: &str) {
    match map.get_mut(resource_type) {
        Some(count) => *count += 1,
        None => {
            map.insert(resource_type.to_owned(), 1);
        }
    }
}

/// Splits `items` into the chunks [`pow2_sizes`] gives.
pub(crate) fn pow2_chunks<T>(items: &[T], max: usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut rest = items;
    for size in pow2_sizes(items.len(), max) {
        let (head, tail) = rest.split_at(size);
        chunks.push(head);
        rest = tail;
    }
    chunks
}

/// Inserts owned rows in power-of-two chunks (a handful of cached statement shapes).
pub(crate) async fn insert_chunks<T, F>(
    connection: &mut SqliteConnection,
    head: &'static str,
    rows: Vec<T>,
    max: usize,
    mut bind: F,
) -> Result<(), StoreError>
where
    F: FnMut(&mut sqlx::query_builder::Separated<'_, Sqlite, &'static str>, T),
{
    let mut remaining = rows.into_iter();
    for size in pow2_sizes(remaining.len(), max) {
        let mut query = QueryBuilder::<Sqlite>::new(head);
        query.push_values(remaining.by_ref().take(size), |mut row, value| {
            bind(&mut row, value)
        });
        query
            .build()
            .execute(&mut *connection)
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

pub(crate) async fn insert_index_rows(
    connection: &mut SqliteConnection,
    systems: &mut SystemIds,
    entries: Vec<(i64, i64, IndexEntry)>,
) -> Result<(), StoreError> {
    let mut tokens = Vec::new();
    let mut strings = Vec::new();
    let mut dates = Vec::new();
    let mut references = Vec::new();
    let mut quantities = Vec::new();
    let mut texts = Vec::new();
    for (rid, pat, entry) in entries {
        let param = i64::from(entry.param);
        match entry.value {
            IndexValue::Token { system, code } => {
                let system_id = systems.id(connection, &system).await?;
                tokens.push((param, code, pat, system_id, rid))
            }
            IndexValue::String(text) => strings.push((param, pat, text, rid)),
            IndexValue::Date { start, end } => dates.push((param, pat, start, end, rid)),
            IndexValue::Reference {
                target_type,
                target_id,
            } => references.push((param, target_id, target_type, rid)),
            IndexValue::Quantity {
                value,
                system,
                code,
            } => quantities.push((param, code, pat, value, system, rid)),
            IndexValue::Text { narrative, other } => {
                texts.push((rid, param, pat, narrative, other))
            }
        }
    }
    // Sorted rows land in the WITHOUT ROWID B-trees in key order: far fewer page splits.
    tokens.sort_unstable();
    strings.sort_unstable();
    dates.sort_unstable();
    references.sort_unstable();
    quantities.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    insert_chunks(
        connection,
        "INSERT OR IGNORE INTO idx_token (param, code, pat, system_id, rid) ",
        tokens,
        INDEX_CHUNK,
        |row, (param, code, pat, system, rid)| {
            row.push_bind(param)
                .push_bind(code)
                .push_bind(pat)
                .push_bind(system)
                .push_bind(rid);
        },
    )
    .await?;
    insert_chunks(
        connection,
        "INSERT OR IGNORE INTO idx_string (param, pat, value, rid) ",
        strings,
        INDEX_CHUNK,
        |row, (param, pat, value, rid)| {
            row.push_bind(param)
                .push_bind(pat)
                .push_bind(value)
                .push_bind(rid);
        },
    )
    .await?;
    insert_chunks(
        connection,
        "INSERT OR IGNORE INTO idx_date (param, pat, start, \"end\", rid) ",
        dates,
        INDEX_CHUNK,
        |row, (param, pat, start, end, rid)| {
            row.push_bind(param)
                .push_bind(pat)
                .push_bind(start)
                .push_bind(end)
                .push_bind(rid);
        },
    )
    .await?;
    insert_chunks(
        connection,
        "INSERT OR IGNORE INTO idx_reference (param, target_id, target_type, rid) ",
        references,
        INDEX_CHUNK,
        |row, (param, target_id, target_type, rid)| {
            row.push_bind(param)
                .push_bind(target_id)
                .push_bind(target_type)
                .push_bind(rid);
        },
    )
    .await?;
    insert_chunks(
        connection,
        "INSERT OR IGNORE INTO idx_quantity (param, code, pat, value, system, rid) ",
        quantities,
        INDEX_CHUNK,
        |row, (param, code, pat, value, system, rid)| {
            row.push_bind(param)
                .push_bind(code)
                .push_bind(pat)
                .push_bind(value)
                .push_bind(system)
                .push_bind(rid);
        },
    )
    .await?;
    // Big rows: a few per statement (the FTS5 triggers index each).
    texts.sort_unstable_by_key(|row| row.0);
    insert_chunks(
        connection,
        "INSERT OR IGNORE INTO idx_text (rid, param, pat, narrative, other) ",
        texts,
        TEXT_CHUNK,
        |row, (rid, param, pat, narrative, other)| {
            row.push_bind(rid)
                .push_bind(param)
                .push_bind(pat)
                .push_bind(narrative)
                .push_bind(other);
        },
    )
    .await
}

/// Text rows per INSERT.
const TEXT_CHUNK: usize = 16;

#[cfg(test)]
mod tests {
    use super::{pow2_chunks, pow2_sizes};

    #[test]
    pub(crate) fn chunks_come_in_power_of_two_shapes_and_a_short_exact_tail() {
        let items: Vec<u32> = (0..1000).collect();
        let sizes: Vec<usize> = pow2_chunks(&items, 256).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![256, 256, 256, 128, 64, 32, 8]);
        assert_eq!(sizes.iter().sum::<usize>(), 1000);
        assert!(pow2_chunks::<u32>(&[], 8).is_empty());
        assert_eq!(
            pow2_chunks(&items[..5], 500)
                .iter()
                .map(|c| c.len())
                .collect::<Vec<_>>(),
            vec![5]
        );
        let sizes: Vec<usize> = pow2_chunks(&items[..150], 1000)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, vec![128, 16, 6]);
        assert_eq!(pow2_sizes(13, 1000), vec![13]);
    }
}
