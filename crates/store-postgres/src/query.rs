//! FHIR search on PostgreSQL: a typed [`SearchQuery`] becomes one SQL statement over the index
//! tables — the SQLite store's planner (`crates/store-sqlite/src/query.rs`) in PostgreSQL's
//! dialect (derived tables are named, booleans are booleans, lists are arrays).
//!
//! Every filter (one `name=value` pair) becomes a set of `rid`s; filters are intersected,
//! comma alternatives unioned, `:not` and `:missing=true` subtracted from the type's current
//! resources. A filter on the compartment parameter (`patient=`, `subject=Patient/…`) is turned
//! into a compartment scope: the base set is read from `resources (pat, type)` and every other
//! filter's index range is narrowed to those compartments, so patient-scoped queries touch only
//! that patient's rows however large the region is. `_sort` keys other than `_id` and
//! `_lastUpdated` are fetched per matched resource and ordered in Rust, ties broken by storage
//! order. `:text` on tokens is tested on the matched resources' JSON (there is no text index).

use std::cmp::Ordering;

use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tsunagi_fhir::{
    query::{
        DateBound, Filter, Predicate, Prefix, SearchQuery, Sort, SortKey, StringMode, SystemMatch,
    },
    search::{ParamType, SearchParam, compartment_param, token_text_matches},
};
use tsunagi_store::{Access, Key, StoreError};

use crate::db_error;

/// Upper bound for a starts-with range: every string that starts with `prefix` sorts below
/// `prefix + U+10FFFF` in the byte order of UTF-8 (`COLLATE "C"`).
fn prefix_upper(prefix: &str) -> String {
    let mut upper = String::with_capacity(prefix.len() + 4);
    upper.push_str(prefix);
    upper.push('\u{10FFFF}');
    upper
}

/// How a search narrows index rows by compartment.
#[derive(Debug, Clone)]
enum Scope {
    /// No narrowing (resource types in patient compartments, searched region-wide).
    All,
    /// Rows of Patient resources and other types outside compartments carry 0.
    Zero,
    /// Only these compartments (may be empty: nothing matches).
    Compartments(Vec<i64>),
}

struct Planner<'a> {
    resource_type: &'a str,
    scope: Scope,
    access: &'a Access,
}

/// Appends ` AND <permitted>` for a row of `resources` whose compartment column is `pat` (a
/// qualified name: the subqueries have a `pat` column of their own). Nothing for
/// [`Access::Unrestricted`]. The same test as `GUARD` in `lib.rs`.
pub(crate) fn push_guard(sql: &mut QueryBuilder<Postgres>, access: &Access, pat: &str) {
    let Access::Facility { code, at } = access else {
        return;
    };
    sql.push(format!(
        " AND ({pat} = 0 OR EXISTS (SELECT 1 FROM compartments gc WHERE gc.id = {pat} AND gc.facility = "
    ));
    sql.push_bind(code.clone());
    sql.push(") OR EXISTS (SELECT 1 FROM access ga WHERE ga.viewer = ");
    sql.push_bind(code.clone());
    sql.push(format!(" AND ga.pat = {pat} AND ga.not_before <= "));
    sql.push_bind(*at);
    sql.push(" AND ga.not_after > ");
    sql.push_bind(*at);
    sql.push("))");
}

fn is_compartment_type(resource_type: &str) -> bool {
    compartment_param(resource_type).is_some()
}

/// The patient ids of a filter that only restricts the compartment (`patient=A,B`).
fn compartment_filter<'q>(resource_type: &str, filter: &'q Filter) -> Option<Vec<PatientRef<'q>>> {
    let code = compartment_param(resource_type)?;
    if filter.negated || filter.any_of.is_empty() {
        return None;
    }
    let mut refs = Vec::new();
    for predicate in &filter.any_of {
        match predicate {
            Predicate::Reference {
                param,
                target_type,
                id,
            } if param.code == code && target_type.as_deref() == Some("Patient") => {
                refs.push(PatientRef::Id(id))
            }
            // `subject:Patient.identifier=…`: the patients are found first, then it is a scope.
            Predicate::Chain {
                param,
                target_type,
                inner,
            } if param.code == code && target_type == "Patient" => {
                refs.push(PatientRef::Chain(inner))
            }
            _ => return None,
        }
    }
    Some(refs)
}

/// A patient named by a compartment filter: by id, or by a test on Patient (a chain).
enum PatientRef<'q> {
    Id(&'q str),
    Chain(&'q Predicate),
}

/// The logical ids of the patients a compartment filter names.
async fn patient_ids(db: Db<'_>, refs: &[PatientRef<'_>]) -> Result<Vec<String>, StoreError> {
    let mut ids = Vec::new();
    for patient in refs {
        match patient {
            PatientRef::Id(id) => ids.push((*id).to_owned()),
            PatientRef::Chain(inner) => {
                let planner = Planner {
                    resource_type: "Patient",
                    scope: Scope::Zero,
                    access: db.access,
                };
                let mut sql = QueryBuilder::<Postgres>::new(
                    "SELECT id FROM resources WHERE type = 'Patient' AND NOT deleted AND rid IN (",
                );
                planner.push_predicate(&mut sql, inner)?;
                sql.push(")");
                push_guard(&mut sql, db.access, "resources.pat");
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

impl Planner<'_> {
    fn push_scope(&self, sql: &mut QueryBuilder<Postgres>, column: &str) {
        match &self.scope {
            Scope::All => {}
            Scope::Zero => {
                sql.push(format!(" AND {column} = 0"));
            }
            Scope::Compartments(ids) => {
                sql.push(format!(" AND {column} IN ("));
                let mut separated = sql.separated(", ");
                for id in ids {
                    separated.push_bind(*id);
                }
                if ids.is_empty() {
                    separated.push("NULL");
                }
                sql.push(")");
            }
        }
    }

    /// Every current resource of the type (in scope).
    fn push_base(&self, sql: &mut QueryBuilder<Postgres>) {
        sql.push("SELECT rid FROM resources WHERE type = ");
        sql.push_bind(self.resource_type.to_owned());
        sql.push(" AND NOT deleted");
        if let Scope::Compartments(_) = self.scope {
            self.push_scope(sql, "pat");
        }
    }

    /// The rows of one filter.
    fn push_filter(
        &self,
        sql: &mut QueryBuilder<Postgres>,
        filter: &Filter,
    ) -> Result<(), StoreError> {
        let subtract = filter.negated
            || matches!(
                filter.any_of.as_slice(),
                [Predicate::Missing { missing: true, .. }]
            );
        sql.push("SELECT rid FROM (");
        if subtract {
            self.push_base(sql);
            sql.push(" EXCEPT SELECT rid FROM (");
        }
        for (index, predicate) in filter.any_of.iter().enumerate() {
            if index > 0 {
                sql.push(" UNION ");
            }
            self.push_predicate(sql, predicate)?;
        }
        if subtract {
            sql.push(") AS alternatives");
        }
        sql.push(") AS filtered");
        Ok(())
    }

    fn push_predicate(
        &self,
        sql: &mut QueryBuilder<Postgres>,
        predicate: &Predicate,
    ) -> Result<(), StoreError> {
        match predicate {
            Predicate::Id(id) => {
                sql.push("SELECT rid FROM resources WHERE tid = ");
                sql.push_bind(format!("{}/{id}", self.resource_type));
                sql.push(" AND NOT deleted");
                self.push_scope_if_compartments(sql, "pat");
            }
            Predicate::LastUpdated(bound) => {
                sql.push("SELECT rid FROM resources WHERE type = ");
                sql.push_bind(self.resource_type.to_owned());
                sql.push(" AND NOT deleted");
                self.push_scope_if_compartments(sql, "pat");
                sql.push(" AND ");
                let micros = DateBound {
                    prefix: bound.prefix,
                    start: bound.start.saturating_mul(1_000_000),
                    end: bound.end.saturating_mul(1_000_000),
                };
                push_date_condition(sql, "last_updated", "(last_updated + 1)", &micros);
            }
            Predicate::Token {
                param,
                system,
                code,
            } => {
                sql.push("SELECT rid FROM idx_token WHERE param = ");
                sql.push_bind(i64::from(param.id));
                if let Some(code) = code {
                    sql.push(" AND code = ");
                    sql.push_bind(code.clone());
                }
                self.push_scope(sql, "pat");
                match system {
                    SystemMatch::Any => {}
                    SystemMatch::None => {
                        sql.push(
                            " AND system_id = (SELECT id FROM token_systems WHERE system = '')",
                        );
                    }
                    SystemMatch::Is(system) => {
                        sql.push(" AND system_id = (SELECT id FROM token_systems WHERE system = ");
                        sql.push_bind(system.clone());
                        sql.push(")");
                    }
                }
            }
            Predicate::TokenText { param, .. } => {
                // Candidates: resources with any value of the parameter; the text itself is
                // tested on the JSON afterwards.
                sql.push("SELECT rid FROM idx_token WHERE param = ");
                sql.push_bind(i64::from(param.id));
                self.push_scope(sql, "pat");
            }
            Predicate::String { param, mode, value } => {
                sql.push("SELECT rid FROM idx_string WHERE param = ");
                sql.push_bind(i64::from(param.id));
                self.push_scope(sql, "pat");
                match mode {
                    StringMode::StartsWith => {
                        sql.push(" AND value >= ");
                        sql.push_bind(value.clone());
                        sql.push(" AND value < ");
                        sql.push_bind(prefix_upper(value));
                    }
                    StringMode::Exact => {
                        sql.push(" AND value = ");
                        sql.push_bind(value.clone());
                    }
                    StringMode::Contains => {
                        sql.push(" AND strpos(value, ");
                        sql.push_bind(value.clone());
                        sql.push(") > 0");
                    }
                }
            }
            Predicate::Date { param, bound } => {
                sql.push("SELECT rid FROM idx_date WHERE param = ");
                sql.push_bind(i64::from(param.id));
                self.push_scope(sql, "pat");
                sql.push(" AND ");
                push_date_condition(sql, "start", "\"end\"", bound);
            }
            Predicate::Reference {
                param,
                target_type,
                id,
            } => {
                sql.push("SELECT rid FROM idx_reference WHERE param = ");
                sql.push_bind(i64::from(param.id));
                sql.push(" AND target_id = ");
                sql.push_bind(id.clone());
                if let Some(target_type) = target_type {
                    sql.push(" AND target_type = ");
                    sql.push_bind(target_type.clone());
                }
            }
            Predicate::Chain {
                param,
                target_type,
                inner,
            } => {
                let inner_planner = Planner {
                    resource_type: target_type,
                    scope: if is_compartment_type(target_type) {
                        Scope::All
                    } else {
                        Scope::Zero
                    },
                    access: self.access,
                };
                sql.push("SELECT rid FROM idx_reference WHERE param = ");
                sql.push_bind(i64::from(param.id));
                sql.push(" AND target_type = ");
                sql.push_bind(target_type.clone());
                // The chain's targets are tested under the caller's access too: a resource one
                // may see must not reveal, through a chain, data of a patient one may not.
                sql.push(" AND target_id IN (SELECT g.id FROM resources g WHERE g.rid IN (");
                inner_planner.push_predicate(sql, inner)?;
                sql.push(")");
                push_guard(sql, self.access, "g.pat");
                sql.push(")");
            }
            Predicate::Quantity {
                param,
                prefix,
                value,
                low,
                high,
                system,
                code,
            } => {
                sql.push("SELECT rid FROM idx_quantity WHERE param = ");
                sql.push_bind(i64::from(param.id));
                if let Some(code) = code {
                    sql.push(" AND code = ");
                    sql.push_bind(code.clone());
                }
                self.push_scope(sql, "pat");
                if let Some(system) = system {
                    sql.push(" AND system = ");
                    sql.push_bind(system.clone());
                }
                let (condition, bounds): (&str, Vec<f64>) = match prefix {
                    Prefix::Eq => (" AND value >= ? AND value < ?", vec![*low, *high]),
                    Prefix::Ne => (" AND NOT (value >= ? AND value < ?)", vec![*low, *high]),
                    Prefix::Gt | Prefix::Sa => (" AND value > ?", vec![*value]),
                    Prefix::Lt | Prefix::Eb => (" AND value < ?", vec![*value]),
                    Prefix::Ge => (" AND value >= ?", vec![*value]),
                    Prefix::Le => (" AND value <= ?", vec![*value]),
                    Prefix::Ap => (" AND value >= ? AND value <= ?", vec![*low, *high]),
                };
                let mut parts = condition.split('?');
                if let Some(head) = parts.next() {
                    sql.push(head);
                }
                for (bound, tail) in bounds.into_iter().zip(parts) {
                    sql.push_bind(bound);
                    sql.push(tail);
                }
            }
            Predicate::Missing { param, missing: _ } => {
                // The rows of the parameter; `missing=true` subtracts them (see push_filter).
                let table = match param.kind {
                    ParamType::Token => "idx_token",
                    ParamType::String => "idx_string",
                    ParamType::Date => "idx_date",
                    ParamType::Reference => "idx_reference",
                    ParamType::Quantity => "idx_quantity",
                };
                sql.push(format!("SELECT rid FROM {table} WHERE param = "));
                sql.push_bind(i64::from(param.id));
                if param.kind != ParamType::Reference {
                    self.push_scope(sql, "pat");
                }
            }
        }
        Ok(())
    }

    fn push_scope_if_compartments(&self, sql: &mut QueryBuilder<Postgres>, column: &str) {
        if let Scope::Compartments(_) = self.scope {
            self.push_scope(sql, column);
        }
    }
}

/// FHIR date-range semantics (see [`DateBound::matches`]) over two columns.
fn push_date_condition(
    sql: &mut QueryBuilder<Postgres>,
    start: &str,
    end: &str,
    bound: &DateBound,
) {
    let (s, e) = (bound.start, bound.end);
    // `start <= e` follows from `start <= end <= e`; written out, it bounds the index range.
    let contained = |sql: &mut QueryBuilder<Postgres>| {
        sql.push(format!("({start} >= "));
        sql.push_bind(s);
        sql.push(format!(" AND {start} <= "));
        sql.push_bind(e);
        sql.push(format!(" AND {end} <= "));
        sql.push_bind(e);
        sql.push(")");
    };
    match bound.prefix {
        Prefix::Eq => contained(sql),
        Prefix::Ne => {
            sql.push("NOT ");
            contained(sql);
        }
        Prefix::Gt => {
            sql.push(format!("{end} > "));
            sql.push_bind(e);
        }
        Prefix::Lt => {
            sql.push(format!("{start} < "));
            sql.push_bind(s);
        }
        Prefix::Ge => {
            sql.push(format!("({end} > "));
            sql.push_bind(e);
            sql.push(" OR ");
            contained(sql);
            sql.push(")");
        }
        Prefix::Le => {
            sql.push(format!("({start} < "));
            sql.push_bind(s);
            sql.push(" OR ");
            contained(sql);
            sql.push(")");
        }
        Prefix::Sa => {
            sql.push(format!("{start} >= "));
            sql.push_bind(e);
        }
        Prefix::Eb => {
            sql.push(format!("({end} <= "));
            sql.push_bind(s);
            sql.push(format!(" AND {start} <= "));
            sql.push_bind(s);
            sql.push(")");
        }
        Prefix::Ap => {
            sql.push(format!("({start} < "));
            sql.push_bind(e);
            sql.push(format!(" AND {end} > "));
            sql.push_bind(s);
            sql.push(")");
        }
    }
}

/// Resolves compartment filters to compartment ids; `None` when the query has none.
async fn resolve_scope(db: Db<'_>, query: &SearchQuery) -> Result<Scope, StoreError> {
    if !is_compartment_type(&query.resource_type) {
        return Ok(Scope::Zero);
    }
    let mut scope: Option<Vec<i64>> = None;
    for filter in &query.filters {
        let Some(refs) = compartment_filter(&query.resource_type, filter) else {
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
    Ok(scope.map_or(Scope::All, Scope::Compartments))
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
    let planner = Planner {
        resource_type: &query.resource_type,
        scope: resolve_scope(db, query).await?,
        access: db.access,
    };
    let mut sql = QueryBuilder::<Postgres>::new(head);
    let filters: Vec<&Filter> = query
        .filters
        .iter()
        .filter(|filter| compartment_filter(&query.resource_type, filter).is_none())
        .collect();
    if filters.is_empty() {
        planner.push_base(&mut sql);
    } else {
        if let Scope::Compartments(_) = planner.scope {
            planner.push_base(&mut sql);
            sql.push(" INTERSECT ");
        }
        for (index, filter) in filters.iter().enumerate() {
            if index > 0 {
                sql.push(" INTERSECT ");
            }
            planner.push_filter(&mut sql, filter)?;
        }
    }
    Ok(sql)
}

/// The number of matches (text filters are applied, so this loads their candidates).
pub(crate) async fn count(db: Db<'_>, query: &SearchQuery) -> Result<u64, StoreError> {
    let pool = db.pool;
    if has_text_filters(query) {
        return Ok(search(db, query).await?.len() as u64);
    }
    let mut sql = build(db, query, "SELECT COUNT(*) FROM resources WHERE rid IN (").await?;
    sql.push(")");
    push_guard(&mut sql, db.access, "resources.pat");
    let count: i64 = sql
        .build_query_scalar()
        .fetch_one(pool)
        .await
        .map_err(db_error)?;
    Ok(count as u64)
}

fn has_text_filters(query: &SearchQuery) -> bool {
    query.filters.iter().any(|filter| {
        filter
            .any_of
            .iter()
            .any(|predicate| matches!(predicate, Predicate::TokenText { .. }))
    })
}

/// A sort value of one resource.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum SortValue {
    Integer(i64),
    Real(f64),
    Text(String),
}

fn compare_values(a: &Option<SortValue>, b: &Option<SortValue>, descending: bool) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        // Resources without a value come last whatever the direction.
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => {
            let ordering = a.partial_cmp(b).unwrap_or(Ordering::Equal);
            if descending {
                ordering.reverse()
            } else {
                ordering
            }
        }
    }
}

struct Candidate {
    rid: i64,
    pat: i64,
    keys: Vec<Option<SortValue>>,
}

/// The keys of every match, ordered.
pub(crate) async fn search(db: Db<'_>, query: &SearchQuery) -> Result<Vec<Key>, StoreError> {
    let pool = db.pool;
    let order = match query.sort.first() {
        Some(Sort {
            key: SortKey::Id,
            descending,
        }) if query.sort.len() == 1 => {
            if *descending {
                " ORDER BY id DESC, rid"
            } else {
                " ORDER BY id, rid"
            }
        }
        Some(Sort {
            key: SortKey::LastUpdated,
            descending,
        }) if query.sort.len() == 1 => {
            if *descending {
                " ORDER BY last_updated DESC, rid"
            } else {
                " ORDER BY last_updated, rid"
            }
        }
        _ => " ORDER BY rid",
    };
    let mut sql = build(
        db,
        query,
        "SELECT rid, pat, id, last_updated FROM resources WHERE rid IN (",
    )
    .await?;
    sql.push(")");
    push_guard(&mut sql, db.access, "resources.pat");
    sql.push(order);
    let rows = sql.build().fetch_all(pool).await.map_err(db_error)?;
    let mut candidates = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut keys = Vec::new();
        for sort in &query.sort {
            keys.push(match sort.key {
                SortKey::Id => Some(SortValue::Text(row.try_get("id").map_err(db_error)?)),
                SortKey::LastUpdated => Some(SortValue::Integer(
                    row.try_get("last_updated").map_err(db_error)?,
                )),
                SortKey::Param(_) => None,
            });
        }
        candidates.push(Candidate {
            rid: row.try_get("rid").map_err(db_error)?,
            pat: row.try_get("pat").map_err(db_error)?,
            keys,
        });
    }
    if has_text_filters(query) {
        candidates = apply_text_filters(pool, query, candidates).await?;
    }
    let needs_param_sort = query
        .sort
        .iter()
        .any(|sort| matches!(sort.key, SortKey::Param(_)));
    if needs_param_sort || query.sort.len() > 1 {
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
        candidates.sort_by(|a, b| {
            for (position, sort) in query.sort.iter().enumerate() {
                let ordering =
                    compare_values(&a.keys[position], &b.keys[position], sort.descending);
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
            a.rid.cmp(&b.rid)
        });
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
    candidates: &mut [Candidate],
) -> Result<(), StoreError> {
    if candidates.is_empty() {
        return Ok(());
    }
    let (table, column) = match param.kind {
        ParamType::Date => ("idx_date", if descending { "\"end\"" } else { "start" }),
        ParamType::String => ("idx_string", "value"),
        ParamType::Token => ("idx_token", "code"),
        ParamType::Quantity => ("idx_quantity", "value"),
        ParamType::Reference => return Ok(()),
    };
    let aggregate = if descending { "MAX" } else { "MIN" };
    let rids: Vec<i64> = candidates.iter().map(|c| c.rid).collect();
    let mut pats: Vec<i64> = if is_compartment_type(resource_type) {
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
            ParamType::Date => SortValue::Integer(row.try_get("v").map_err(db_error)?),
            ParamType::Quantity => SortValue::Real(row.try_get("v").map_err(db_error)?),
            _ => SortValue::Text(row.try_get("v").map_err(db_error)?),
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
    candidates: Vec<Candidate>,
) -> Result<Vec<Candidate>, StoreError> {
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
            let passes = query.filters.iter().all(|filter| {
                let texts: Vec<(&SearchParam, &str)> = filter
                    .any_of
                    .iter()
                    .filter_map(|predicate| match predicate {
                        Predicate::TokenText { param, text } => Some((*param, text.as_str())),
                        _ => None,
                    })
                    .collect();
                texts.is_empty()
                    || texts
                        .iter()
                        .any(|(param, text)| token_text_matches(resource, param, text))
            });
            if passes {
                kept.push(Candidate {
                    rid: candidate.rid,
                    pat: candidate.pat,
                    keys: candidate.keys.clone(),
                });
            }
        }
    }
    Ok(kept)
}
