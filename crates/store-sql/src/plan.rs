//! FHIR search as SQL: a typed FHIR search becomes one statement over the index tables, built
//! for any [`Dialect`] (SQLite, PostgreSQL). `search` runs the statements and resolves what
//! needs the database first (which compartments a patient filter names, which of them the
//! viewer may see); this module only writes SQL and orders candidates.
//!
//! Every filter (one `name=value` pair) becomes a set of `rid`s; filters are intersected, comma
//! alternatives unioned, `:not` and `:missing=true` subtracted from the type's current
//! resources. A filter on the compartment parameter (`patient=`, `subject=Patient/…`) is turned
//! into a compartment scope: the base set is read from `resources (pat, type)` and every other
//! filter's index range is narrowed to those compartments, so patient-scoped queries touch only
//! that patient's rows however large the region is. `_sort` keys other than `_id` and
//! `_lastUpdated` are ordered in Rust, ties broken by storage order.

use std::cmp::Ordering;

use serde_json::Value;
use sqlx::QueryBuilder;
use tsunagi_fhir::{
    query::{
        DateBound, Filter, Predicate, Prefix, SearchQuery, Sort, SortKey, StringMode, SystemMatch,
    },
    search::{ParamType, SearchParam, compartment_param, text::TRIGRAM, token_text_matches},
};
use tsunagi_store::{Access, StoreError};

use crate::{
    dialect::{Bound, Dialect},
    guard::push_guard,
};

/// `push_bind` for any [`Dialect`].
trait PushValue {
    fn push_value(&mut self, value: impl Into<Bound>) -> &mut Self;
}

impl<DB: Dialect> PushValue for QueryBuilder<DB> {
    fn push_value(&mut self, value: impl Into<Bound>) -> &mut Self {
        DB::bind(self, value.into());
        self
    }
}

/// Upper bound for a starts-with range: every string that starts with `prefix` sorts below
/// `prefix + U+10FFFF` in the byte order of UTF-8 (SQLite's binary collation, PostgreSQL's
/// `COLLATE "C"`).
fn prefix_upper(prefix: &str) -> String {
    let mut upper = String::with_capacity(prefix.len() + 4);
    upper.push_str(prefix);
    upper.push('\u{10FFFF}');
    upper
}

/// How a search narrows index rows by compartment.
#[derive(Debug, Clone)]
pub enum Scope {
    /// No narrowing (resource types in patient compartments, searched region-wide).
    All,
    /// Rows of Patient resources and other types outside compartments carry 0.
    Zero,
    /// Only these compartments (may be empty: nothing matches).
    Compartments(Vec<i64>),
}

/// Builds the SQL of search filters for one resource type, scope and viewer.
pub struct Planner<'a> {
    /// The resource type searched.
    pub resource_type: &'a str,
    /// How index rows are narrowed by compartment.
    pub scope: Scope,
    /// Whose eyes the rows are for.
    pub access: &'a Access,
}

/// Whether the type's resources belong to patient compartments.
pub fn is_compartment_type(resource_type: &str) -> bool {
    compartment_param(resource_type).is_some()
}

/// The patient ids of a filter that only restricts the compartment (`patient=A,B`).
pub fn compartment_filter<'q>(
    resource_type: &str,
    filter: &'q Filter,
) -> Option<Vec<PatientRef<'q>>> {
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
pub enum PatientRef<'q> {
    /// `patient=<id>`.
    Id(&'q str),
    /// `subject:Patient.identifier=…`.
    Chain(&'q Predicate),
}

impl Planner<'_> {
    fn push_scope<DB: Dialect>(&self, sql: &mut QueryBuilder<DB>, column: &str) {
        match &self.scope {
            Scope::All => {}
            Scope::Zero => {
                sql.push(format!(" AND {column} = 0"));
            }
            Scope::Compartments(ids) => {
                sql.push(format!(" AND {column} IN ("));
                for (index, id) in ids.iter().enumerate() {
                    if index > 0 {
                        sql.push(", ");
                    }
                    sql.push_value(*id);
                }
                if ids.is_empty() {
                    sql.push("NULL");
                }
                sql.push(")");
            }
        }
    }

    /// Every current resource of the type (in scope).
    pub fn push_base<DB: Dialect>(&self, sql: &mut QueryBuilder<DB>) {
        sql.push("SELECT rid FROM resources WHERE type = ");
        sql.push_value(self.resource_type.to_owned());
        sql.push(" AND NOT deleted");
        if let Scope::Compartments(_) = self.scope {
            self.push_scope(sql, "pat");
        }
    }

    /// The rows of one filter.
    fn push_filter<DB: Dialect>(
        &self,
        sql: &mut QueryBuilder<DB>,
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

    /// The rows of one predicate (one alternative of a filter).
    pub fn push_predicate<DB: Dialect>(
        &self,
        sql: &mut QueryBuilder<DB>,
        predicate: &Predicate,
    ) -> Result<(), StoreError> {
        match predicate {
            Predicate::Id(id) => {
                sql.push("SELECT rid FROM resources WHERE tid = ");
                sql.push_value(format!("{}/{id}", self.resource_type));
                sql.push(" AND NOT deleted");
                self.push_scope_if_compartments(sql, "pat");
            }
            Predicate::LastUpdated(bound) => {
                sql.push("SELECT rid FROM resources WHERE type = ");
                sql.push_value(self.resource_type.to_owned());
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
                sql.push_value(i64::from(param.id));
                if let Some(code) = code {
                    sql.push(" AND code = ");
                    sql.push_value(code.clone());
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
                        sql.push_value(system.clone());
                        sql.push(")");
                    }
                }
            }
            Predicate::TokenText { param, .. } => {
                // Candidates: resources with any value of the parameter; the text itself is
                // tested on the JSON afterwards.
                sql.push("SELECT rid FROM idx_token WHERE param = ");
                sql.push_value(i64::from(param.id));
                self.push_scope(sql, "pat");
            }
            Predicate::String { param, mode, value } => {
                sql.push("SELECT rid FROM idx_string WHERE param = ");
                sql.push_value(i64::from(param.id));
                self.push_scope(sql, "pat");
                match mode {
                    StringMode::StartsWith => {
                        sql.push(" AND value >= ");
                        sql.push_value(value.clone());
                        sql.push(" AND value < ");
                        sql.push_value(prefix_upper(value));
                    }
                    StringMode::Exact => {
                        sql.push(" AND value = ");
                        sql.push_value(value.clone());
                    }
                    StringMode::Contains => {
                        sql.push(format!(" AND {}(value, ", DB::POSITION));
                        sql.push_value(value.clone());
                        sql.push(") > 0");
                    }
                }
            }
            Predicate::Date { param, bound } => {
                sql.push("SELECT rid FROM idx_date WHERE param = ");
                sql.push_value(i64::from(param.id));
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
                sql.push_value(i64::from(param.id));
                sql.push(" AND target_id = ");
                sql.push_value(id.clone());
                if let Some(target_type) = target_type {
                    sql.push(" AND target_type = ");
                    sql.push_value(target_type.clone());
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
                sql.push_value(i64::from(param.id));
                sql.push(" AND target_type = ");
                sql.push_value(target_type.clone());
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
                sql.push_value(i64::from(param.id));
                if let Some(code) = code {
                    sql.push(" AND code = ");
                    sql.push_value(code.clone());
                }
                self.push_scope(sql, "pat");
                if let Some(system) = system {
                    sql.push(" AND system = ");
                    sql.push_value(system.clone());
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
                    sql.push_value(bound);
                    sql.push(tail);
                }
            }
            Predicate::Text {
                param,
                terms,
                narrative_only,
            } => self.push_text(sql, param, terms, *narrative_only)?,
            Predicate::Missing { param, missing: _ } => {
                // The rows of the parameter; `missing=true` subtracts them (see push_filter).
                let table = match param.kind {
                    ParamType::Text => "idx_text",
                    ParamType::Token => "idx_token",
                    ParamType::String => "idx_string",
                    ParamType::Date => "idx_date",
                    ParamType::Reference => "idx_reference",
                    ParamType::Quantity => "idx_quantity",
                };
                sql.push(format!("SELECT rid FROM {table} WHERE param = "));
                sql.push_value(i64::from(param.id));
                if param.kind != ParamType::Reference {
                    self.push_scope(sql, "pat");
                }
            }
        }
        Ok(())
    }

    /// `_content` / `_text`: within a patient's compartments every term is a substring test of
    /// their texts (any length, nothing else to narrow); region-wide, the terms of three or more
    /// characters go through the trigram index first, and a search with none is refused.
    fn push_text<DB: Dialect>(
        &self,
        sql: &mut QueryBuilder<DB>,
        param: &SearchParam,
        terms: &[String],
        narrative_only: bool,
    ) -> Result<(), StoreError> {
        sql.push("SELECT rid FROM idx_text WHERE param = ");
        sql.push_value(i64::from(param.id));
        if let Scope::Compartments(_) = self.scope {
            self.push_scope(sql, "pat");
        } else {
            let indexed: Vec<&str> = terms
                .iter()
                .map(String::as_str)
                .filter(|term| term.chars().count() >= TRIGRAM)
                .collect();
            if indexed.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "{}: a term of one or two characters ({}) is matched only within a patient's \
                     record: add patient= (or a longer term)",
                    if narrative_only { "_text" } else { "_content" },
                    terms.join(" ")
                )));
            }
            DB::push_text_index(sql, &indexed, narrative_only);
            // Region-wide, only the compartments the viewer may see are scanned.
            push_guard(sql, self.access, "pat");
        }
        for term in terms {
            sql.push(" AND ");
            if narrative_only {
                DB::push_contains(sql, "narrative", term);
            } else {
                sql.push("(");
                DB::push_contains(sql, "narrative", term);
                sql.push(" OR ");
                DB::push_contains(sql, "other", term);
                sql.push(")");
            }
        }
        Ok(())
    }

    fn push_scope_if_compartments<DB: Dialect>(&self, sql: &mut QueryBuilder<DB>, column: &str) {
        if let Scope::Compartments(_) = self.scope {
            self.push_scope(sql, column);
        }
    }
}

/// FHIR date-range semantics (see [`DateBound::matches`]) over two columns.
fn push_date_condition<DB: Dialect>(
    sql: &mut QueryBuilder<DB>,
    start: &str,
    end: &str,
    bound: &DateBound,
) {
    let (s, e) = (bound.start, bound.end);
    // `start <= e` follows from `start <= end <= e`; written out, it bounds the index range.
    let contained = |sql: &mut QueryBuilder<DB>| {
        sql.push(format!("({start} >= "));
        sql.push_value(s);
        sql.push(format!(" AND {start} <= "));
        sql.push_value(e);
        sql.push(format!(" AND {end} <= "));
        sql.push_value(e);
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
            sql.push_value(e);
        }
        Prefix::Lt => {
            sql.push(format!("{start} < "));
            sql.push_value(s);
        }
        Prefix::Ge => {
            sql.push(format!("({end} > "));
            sql.push_value(e);
            sql.push(" OR ");
            contained(sql);
            sql.push(")");
        }
        Prefix::Le => {
            sql.push(format!("({start} < "));
            sql.push_value(s);
            sql.push(" OR ");
            contained(sql);
            sql.push(")");
        }
        Prefix::Sa => {
            sql.push(format!("{start} >= "));
            sql.push_value(e);
        }
        Prefix::Eb => {
            sql.push(format!("({end} <= "));
            sql.push_value(s);
            sql.push(format!(" AND {start} <= "));
            sql.push_value(s);
            sql.push(")");
        }
        Prefix::Ap => {
            sql.push(format!("({start} < "));
            sql.push_value(e);
            sql.push(format!(" AND {end} > "));
            sql.push_value(s);
            sql.push(")");
        }
    }
}

/// Starts a statement with `head`, followed by the compound SELECT of the matching rids (no
/// order) under the resolved compartment `scope`; the caller appends the rest.
pub fn build<DB: Dialect>(
    query: &SearchQuery,
    scope: Scope,
    access: &Access,
    head: &str,
) -> Result<QueryBuilder<DB>, StoreError> {
    let planner = Planner {
        resource_type: &query.resource_type,
        scope,
        access,
    };
    let mut sql = QueryBuilder::<DB>::new(head);
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

/// Whether the query has `:text` filters (tested on the candidates' JSON).
pub fn has_text_filters(query: &SearchQuery) -> bool {
    query.filters.iter().any(|filter| {
        filter
            .any_of
            .iter()
            .any(|predicate| matches!(predicate, Predicate::TokenText { .. }))
    })
}

/// A sort value of one resource.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum SortValue {
    /// A date bound or `_lastUpdated` (microseconds).
    Integer(i64),
    /// A quantity.
    Real(f64),
    /// A string or token code.
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

/// A matched resource waiting to be ordered.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The resource's key.
    pub rid: i64,
    /// Its compartment.
    pub pat: i64,
    /// Its sort values, one per `_sort` key (`None`: no value).
    pub keys: Vec<Option<SortValue>>,
}

/// The `ORDER BY` of the candidate statement: by `_id` or `_lastUpdated` when that is the only
/// sort key, else storage order (other keys are ordered by [`sort_candidates`]).
pub fn order_by(query: &SearchQuery) -> &'static str {
    match query.sort.first() {
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
    }
}

/// Whether the candidates need ordering in Rust (a parameter sort key, or several keys).
pub fn needs_candidate_sort(query: &SearchQuery) -> bool {
    query
        .sort
        .iter()
        .any(|sort| matches!(sort.key, SortKey::Param(_)))
        || query.sort.len() > 1
}

/// Orders candidates by the query's sort keys, ties in storage order.
pub fn sort_candidates(query: &SearchQuery, candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        for (position, sort) in query.sort.iter().enumerate() {
            let ordering = compare_values(&a.keys[position], &b.keys[position], sort.descending);
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        a.rid.cmp(&b.rid)
    });
}

/// The index table and column a parameter sort reads, or `None` (references do not sort).
pub fn sort_column(param: &SearchParam, descending: bool) -> Option<(&'static str, &'static str)> {
    Some(match param.kind {
        ParamType::Date => ("idx_date", if descending { "\"end\"" } else { "start" }),
        ParamType::String => ("idx_string", "value"),
        ParamType::Token => ("idx_token", "code"),
        ParamType::Quantity => ("idx_quantity", "value"),
        ParamType::Reference | ParamType::Text => return None,
    })
}

/// Whether `resource` passes every `:text` filter of `query` (there is no text index: the
/// candidates' JSON is tested).
pub fn passes_text_filters(query: &SearchQuery, resource: &Value) -> bool {
    query.filters.iter().all(|filter| {
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
    })
}
