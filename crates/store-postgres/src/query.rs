//! FHIR search on PostgreSQL: runs the statements `tsunagi-store-sql` builds. What needs the
//! database before a statement can be built is resolved here — the patients a chained
//! compartment filter names, and which of their compartments (and linked ones) the viewer may
//! see — and so are the steps after it: parameter sort values and `:text` tests on the
//! candidates' JSON. Lists are bound as arrays (`= ANY($1)`).

use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tsunagi_fhir::{
    query::{SearchQuery, SortKey},
    search::{ParamType, SearchParam},
};
use tsunagi_store::{Access, Key, StoreError};
use tsunagi_store_sql as sql;

use crate::db_error;

/// The logical ids of the patients a compartment filter names.
async fn patient_ids(db: Db<'_>, refs: &[sql::PatientRef<'_>]) -> Result<Vec<String>, StoreError> {
    let mut ids = Vec::new();
    for patient in refs {
        match patient {
            sql::PatientRef::Id(id) => ids.push((*id).to_owned()),
            sql::PatientRef::Chain(inner) => {
                let planner = sql::Planner {
                    resource_type: "Patient",
                    scope: sql::Scope::Zero,
                    access: db.access,
                };
                let mut sql = QueryBuilder::<Postgres>::new(
                    "SELECT id FROM resources WHERE type = 'Patient' AND NOT deleted AND rid IN (",
                );
                planner.push_predicate(&mut sql, inner)?;
                sql.push(")");
                sql::push_guard(&mut sql, db.access, "resources.pat");
                let found: Vec<String> = sql
                    .build_query_scalar()
                    .fetch_all(db.pool)
                    .await
                    .map_err(db_error)?;
                ids.extend(found);
            }
        }
    }
    Ok(ids)
}

/// Resolves compartment filters to compartment ids; `None` when the query has none.
async fn resolve_scope(db: Db<'_>, query: &SearchQuery) -> Result<sql::Scope, StoreError> {
    if !sql::is_compartment_type(&query.resource_type) {
        return Ok(sql::Scope::Zero);
    }
    let mut scope: Option<Vec<i64>> = None;
    for filter in &query.filters {
        let Some(refs) = sql::compartment_filter(&query.resource_type, filter) else {
            continue;
        };
        let patients = patient_ids(db, &refs).await?;
        let ids = permitted_with_links(db, &patients).await?;
        scope = Some(match scope {
            // Two compartment filters (AND): only compartments named by both.
            Some(previous) => previous.into_iter().filter(|id| ids.contains(id)).collect(),
            None => ids,
        });
    }
    Ok(scope.map_or(sql::Scope::All, sql::Scope::Compartments))
}

/// The compartments of Patients `patients` that `db.access` may see, together with the
/// compartments linked to them (the same person at other facilities, 紐付け). A compartment one
/// may not see adds nothing, so naming it never reveals its links; linked compartments are still
/// subject to the row guard. One statement whether the patients exist, are hidden or are
/// absent, so that the three cost the same work (no early exits, no cache of existing ids).
async fn permitted_with_links(db: Db<'_>, patients: &[String]) -> Result<Vec<i64>, StoreError> {
    let (viewer, at) = crate::viewer(db.access);
    let permitted = "($2::text IS NULL OR c.facility = $2 \
        OR EXISTS (SELECT 1 FROM access a WHERE a.viewer = $2 AND a.pat = c.id AND a.not_before <= $3 AND a.not_after > $3))";
    let mut found: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT c.id FROM compartments c WHERE c.patient = ANY($1) AND {permitted} \
         UNION SELECT l2.compartment FROM compartments c \
         JOIN patient_links l1 ON l1.compartment = c.id JOIN patient_links l2 ON l2.regional = l1.regional \
         WHERE c.patient = ANY($1) AND {permitted}"
    )))
    .bind(patients)
    .bind(viewer)
    .bind(at)
    .fetch_all(db.pool)
    .await
    .map_err(db_error)?;
    found.sort_unstable();
    Ok(found)
}

/// What a query needs: the pool and whose eyes it is for.
#[derive(Clone, Copy)]
pub(crate) struct Db<'a> {
    pub(crate) pool: &'a PgPool,
    pub(crate) access: &'a Access,
}

/// Starts a statement with `head`, followed by the compound SELECT of the matching rids (no
/// order); the caller appends the rest.
async fn build(
    db: Db<'_>,
    query: &SearchQuery,
    head: &str,
) -> Result<QueryBuilder<Postgres>, StoreError> {
    let scope = resolve_scope(db, query).await?;
    sql::build(query, scope, db.access, head)
}

/// The number of matches (text filters are applied, so this loads their candidates).
pub(crate) async fn count(db: Db<'_>, query: &SearchQuery) -> Result<u64, StoreError> {
    let pool = db.pool;
    if sql::has_text_filters(query) {
        return Ok(search(db, query).await?.len() as u64);
    }
    let mut sql = build(db, query, "SELECT COUNT(*) FROM resources WHERE rid IN (").await?;
    sql.push(")");
    sql::push_guard(&mut sql, db.access, "resources.pat");
    let count: i64 = sql
        .build_query_scalar()
        .fetch_one(pool)
        .await
        .map_err(db_error)?;
    Ok(count as u64)
}

/// The keys of every match, ordered.
pub(crate) async fn search(db: Db<'_>, query: &SearchQuery) -> Result<Vec<Key>, StoreError> {
    let pool = db.pool;
    let order = sql::order_by(query);
    let mut sql = build(
        db,
        query,
        "SELECT rid, pat, id, last_updated FROM resources WHERE rid IN (",
    )
    .await?;
    sql.push(")");
    sql::push_guard(&mut sql, db.access, "resources.pat");
    sql.push(order);
    let rows = sql.build().fetch_all(pool).await.map_err(db_error)?;
    let mut candidates = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut keys = Vec::new();
        for sort in &query.sort {
            keys.push(match sort.key {
                SortKey::Id => Some(sql::SortValue::Text(row.try_get("id").map_err(db_error)?)),
                SortKey::LastUpdated => Some(sql::SortValue::Integer(
                    row.try_get("last_updated").map_err(db_error)?,
                )),
                SortKey::Param(_) => None,
            });
        }
        candidates.push(sql::Candidate {
            rid: row.try_get("rid").map_err(db_error)?,
            pat: row.try_get("pat").map_err(db_error)?,
            keys,
        });
    }
    if sql::has_text_filters(query) {
        candidates = apply_text_filters(pool, query, candidates).await?;
    }
    if sql::needs_candidate_sort(query) {
        for (position, sort) in query.sort.iter().enumerate() {
            if let SortKey::Param(param) = sort.key {
                fill_sort_values(
                    pool,
                    &query.resource_type,
                    param,
                    sort.descending,
                    position,
                    &mut candidates,
                )
                .await?;
            }
        }
        sql::sort_candidates(query, &mut candidates);
    }
    Ok(candidates
        .into_iter()
        .map(|candidate| candidate.rid)
        .collect())
}

async fn fill_sort_values(
    pool: &PgPool,
    resource_type: &str,
    param: &'static SearchParam,
    descending: bool,
    position: usize,
    candidates: &mut [sql::Candidate],
) -> Result<(), StoreError> {
    if candidates.is_empty() {
        return Ok(());
    }
    let Some((table, column)) = sql::sort_column(param, descending) else {
        return Ok(());
    };
    let aggregate = if descending { "MAX" } else { "MIN" };
    let rids: Vec<i64> = candidates.iter().map(|c| c.rid).collect();
    let mut pats: Vec<i64> = if sql::is_compartment_type(resource_type) {
        candidates.iter().map(|c| c.pat).collect()
    } else {
        vec![0]
    };
    pats.sort_unstable();
    pats.dedup();
    let statement = format!(
        "SELECT rid, {aggregate}({column}) AS v FROM {table} WHERE param = $1 AND pat = ANY($2) AND rid = ANY($3) GROUP BY rid"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(i64::from(param.id))
        .bind(&pats)
        .bind(&rids)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    let mut values = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        let rid: i64 = row.try_get("rid").map_err(db_error)?;
        let value = match param.kind {
            ParamType::Date => sql::SortValue::Integer(row.try_get("v").map_err(db_error)?),
            ParamType::Quantity => sql::SortValue::Real(row.try_get("v").map_err(db_error)?),
            _ => sql::SortValue::Text(row.try_get("v").map_err(db_error)?),
        };
        values.insert(rid, value);
    }
    for candidate in candidates {
        candidate.keys[position] = values.remove(&candidate.rid);
    }
    Ok(())
}

async fn apply_text_filters(
    pool: &PgPool,
    query: &SearchQuery,
    candidates: Vec<sql::Candidate>,
) -> Result<Vec<sql::Candidate>, StoreError> {
    let mut kept = Vec::with_capacity(candidates.len());
    for chunk in candidates.chunks(500) {
        let rids: Vec<i64> = chunk.iter().map(|c| c.rid).collect();
        let rows = sqlx::query("SELECT rid, content FROM resources WHERE rid = ANY($1)")
            .bind(&rids)
            .fetch_all(pool)
            .await
            .map_err(db_error)?;
        let mut contents = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let rid: i64 = row.try_get("rid").map_err(db_error)?;
            let content: Option<Vec<u8>> = row.try_get("content").map_err(db_error)?;
            if let Some(content) = content {
                let value: Value = serde_json::from_slice(&content)
                    .map_err(|error| StoreError::Corrupt(error.to_string()))?;
                contents.insert(rid, value);
            }
        }
        for candidate in chunk {
            let Some(resource) = contents.get(&candidate.rid) else {
                continue;
            };
            let passes = sql::passes_text_filters(query, resource);
            if passes {
                kept.push(sql::Candidate {
                    rid: candidate.rid,
                    pat: candidate.pat,
                    keys: candidate.keys.clone(),
                });
            }
        }
    }
    Ok(kept)
}
