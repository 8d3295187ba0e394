//! FHIR search on either database: runs the statements `plan` builds. What needs the database
//! before a statement can be built is resolved here — the patients a chained compartment
//! filter names, and which of their compartments (and linked ones) the viewer may see — and so
//! are the steps after it: parameter sort values and `:text` tests on the candidates' JSON.

use std::collections::HashMap;

use sqlx::{Database, QueryBuilder};
use tsunagi_fhir::{
    query::{SearchQuery, SortKey},
    search::{ParamType, SearchParam},
};
use tsunagi_store::{Access, Key, StoreError};

use crate::{
    dialect::{Cells, Dialect, fetch_built, stmt},
    guard::{guard, push_guard, viewer},
    plan::{self, Candidate, PatientRef, Planner, Scope, SortValue},
    reads::parse_content,
};

type Connection<D> = <D as Database>::Connection;

/// The logical ids of the patients a compartment filter names.
async fn patient_ids<D: Dialect>(
    connection: &mut Connection<D>,
    access: &Access,
    refs: &[PatientRef<'_>],
) -> Result<Vec<String>, StoreError> {
    let mut ids = Vec::new();
    for patient in refs {
        match patient {
            PatientRef::Id(id) => ids.push((*id).to_owned()),
            PatientRef::Chain(inner) => {
                let planner = Planner {
                    resource_type: "Patient",
                    scope: Scope::Zero,
                    access,
                };
                let mut sql = QueryBuilder::<D>::new(
                    "SELECT id FROM resources WHERE type = 'Patient' AND NOT deleted AND rid IN (",
                );
                planner.push_predicate(&mut sql, inner)?;
                sql.push(")");
                push_guard(&mut sql, access, "resources.pat");
                for row in fetch_built(connection, &mut sql).await? {
                    ids.push(row.text("id")?);
                }
            }
        }
    }
    Ok(ids)
}

/// Resolves compartment filters to compartment ids.
async fn resolve_scope<D: Dialect>(
    connection: &mut Connection<D>,
    access: &Access,
    query: &SearchQuery,
) -> Result<Scope, StoreError> {
    if !plan::is_compartment_type(&query.resource_type) {
        return Ok(Scope::Zero);
    }
    let mut scope: Option<Vec<i64>> = None;
    for filter in &query.filters {
        let Some(refs) = plan::compartment_filter(&query.resource_type, filter) else {
            continue;
        };
        let patients = patient_ids::<D>(connection, access, &refs).await?;
        let ids = permitted_with_links::<D>(connection, access, &patients).await?;
        scope = Some(match scope {
            // Two compartment filters (AND): only compartments named by both.
            Some(previous) => previous.into_iter().filter(|id| ids.contains(id)).collect(),
            None => ids,
        });
    }
    Ok(scope.map_or(Scope::All, Scope::Compartments))
}

/// The compartments of Patients `patients` that `access` may see, together with the
/// compartments linked to them (the same person at other facilities, 紐付け). A compartment one
/// may not see adds nothing, so naming it never reveals its links; linked compartments are still
/// subject to the row guard. One statement whether the patients exist, are hidden or are
/// absent, so that the three cost the same work (no early exits, no cache of existing ids).
pub(crate) async fn permitted_with_links<D: Dialect>(
    connection: &mut Connection<D>,
    access: &Access,
    patients: &[String],
) -> Result<Vec<i64>, StoreError> {
    let (viewer, at) = viewer(access);
    let named = D::in_list("c.patient", "?1");
    let permitted = guard("c.id", "?2", "?3");
    // The permitted compartments once, in a CTE both branches read (PostgreSQL plans every
    // execution of this statement afresh, and planning the guard twice cost more than running
    // it).
    let rows = stmt(format!(
        "WITH seen AS (SELECT c.id AS id FROM compartments c WHERE {named} AND {permitted}) \
         SELECT id FROM seen \
         UNION SELECT l2.compartment AS id FROM seen \
         JOIN patient_links l1 ON l1.compartment = seen.id JOIN patient_links l2 ON l2.regional = l1.regional"
    ))
    .arg(patients)
    .arg(viewer)
    .arg(at)
    .fetch_all::<D>(connection)
    .await?;
    let mut found = rows
        .iter()
        .map(|row| row.int("id"))
        .collect::<Result<Vec<i64>, StoreError>>()?;
    found.sort_unstable();
    Ok(found)
}

/// Starts a statement with `head`, followed by the compound SELECT of the matching rids (no
/// order); the caller appends the rest.
async fn build<D: Dialect>(
    connection: &mut Connection<D>,
    access: &Access,
    query: &SearchQuery,
    head: &str,
) -> Result<QueryBuilder<D>, StoreError> {
    let scope = resolve_scope::<D>(connection, access, query).await?;
    plan::build(query, scope, access, head)
}

/// The number of matches (text filters are applied, so this loads their candidates).
pub(crate) async fn count<D: Dialect>(
    connection: &mut Connection<D>,
    access: &Access,
    query: &SearchQuery,
) -> Result<u64, StoreError> {
    if plan::has_text_filters(query) {
        return Ok(search::<D>(connection, access, query).await?.len() as u64);
    }
    let mut sql = build::<D>(
        connection,
        access,
        query,
        "SELECT COUNT(*) AS n FROM resources WHERE rid IN (",
    )
    .await?;
    sql.push(")");
    push_guard(&mut sql, access, "resources.pat");
    let rows = fetch_built(connection, &mut sql).await?;
    let count = rows.first().map(|row| row.int("n")).transpose()?;
    Ok(count.unwrap_or(0).max(0) as u64)
}

/// The keys of every match, ordered.
pub(crate) async fn search<D: Dialect>(
    connection: &mut Connection<D>,
    access: &Access,
    query: &SearchQuery,
) -> Result<Vec<Key>, StoreError> {
    let order = plan::order_by(query);
    let mut sql = build::<D>(
        connection,
        access,
        query,
        "SELECT rid, pat, id, last_updated FROM resources WHERE rid IN (",
    )
    .await?;
    sql.push(")");
    push_guard(&mut sql, access, "resources.pat");
    sql.push(order);
    let rows = fetch_built(connection, &mut sql).await?;
    let mut candidates = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut keys = Vec::new();
        for sort in &query.sort {
            keys.push(match sort.key {
                SortKey::Id => Some(SortValue::Text(row.text("id")?)),
                SortKey::LastUpdated => Some(SortValue::Integer(row.int("last_updated")?)),
                SortKey::Param(_) => None,
            });
        }
        candidates.push(Candidate {
            rid: row.int("rid")?,
            pat: row.int("pat")?,
            keys,
        });
    }
    if plan::has_text_filters(query) {
        candidates = apply_text_filters::<D>(connection, query, candidates).await?;
    }
    if plan::needs_candidate_sort(query) {
        for (position, sort) in query.sort.iter().enumerate() {
            if let SortKey::Param(param) = sort.key {
                fill_sort_values::<D>(
                    connection,
                    &query.resource_type,
                    param,
                    sort.descending,
                    position,
                    &mut candidates,
                )
                .await?;
            }
        }
        plan::sort_candidates(query, &mut candidates);
    }
    Ok(candidates
        .into_iter()
        .map(|candidate| candidate.rid)
        .collect())
}

async fn fill_sort_values<D: Dialect>(
    connection: &mut Connection<D>,
    resource_type: &str,
    param: &'static SearchParam,
    descending: bool,
    position: usize,
    candidates: &mut [Candidate],
) -> Result<(), StoreError> {
    if candidates.is_empty() {
        return Ok(());
    }
    let Some((table, column)) = plan::sort_column(param, descending) else {
        return Ok(());
    };
    let aggregate = if descending { "MAX" } else { "MIN" };
    let rids: Vec<i64> = candidates.iter().map(|c| c.rid).collect();
    let mut pats: Vec<i64> = if plan::is_compartment_type(resource_type) {
        candidates.iter().map(|c| c.pat).collect()
    } else {
        vec![0]
    };
    pats.sort_unstable();
    pats.dedup();
    let rows = stmt(format!(
        "SELECT rid, {aggregate}({column}) AS v FROM {table} WHERE param = ?1 AND {} AND {} GROUP BY rid",
        D::in_list("pat", "?2"),
        D::in_list("rid", "?3"),
    ))
    .arg(i64::from(param.id))
    .arg(pats)
    .arg(rids)
    .fetch_all::<D>(connection)
    .await?;
    let mut values = HashMap::with_capacity(rows.len());
    for row in rows {
        let value = match param.kind {
            ParamType::Date => SortValue::Integer(row.int("v")?),
            ParamType::Quantity => SortValue::Real(row.real("v")?),
            _ => SortValue::Text(row.text("v")?),
        };
        values.insert(row.int("rid")?, value);
    }
    for candidate in candidates {
        candidate.keys[position] = values.remove(&candidate.rid);
    }
    Ok(())
}

async fn apply_text_filters<D: Dialect>(
    connection: &mut Connection<D>,
    query: &SearchQuery,
    candidates: Vec<Candidate>,
) -> Result<Vec<Candidate>, StoreError> {
    let mut kept = Vec::with_capacity(candidates.len());
    for chunk in candidates.chunks(500) {
        let rids: Vec<i64> = chunk.iter().map(|c| c.rid).collect();
        let rows = stmt(format!(
            "SELECT rid, content FROM resources WHERE {}",
            D::in_list("rid", "?1")
        ))
        .arg(rids)
        .fetch_all::<D>(connection)
        .await?;
        let mut contents = HashMap::with_capacity(rows.len());
        for row in rows {
            if let Some(content) = row.opt_bytes("content")? {
                contents.insert(row.int("rid")?, parse_content(&content)?);
            }
        }
        for candidate in chunk {
            let Some(resource) = contents.get(&candidate.rid) else {
                continue;
            };
            if plan::passes_text_filters(query, resource) {
                kept.push(candidate.clone());
            }
        }
    }
    Ok(kept)
}
