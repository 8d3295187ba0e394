//! FHIR search requests: URL parameters parsed into a typed, checked query.
//!
//! The HTTP layer hands over the decoded `name=value` pairs of a search (GET query string or
//! POST `_search` form body); [`SearchQuery::parse`] resolves each name against the parameter
//! registry ([`crate::search`]), parses values by parameter type and prefix, and collects the
//! result parameters (`_sort`, `_count`, `_include`, …). Stores translate the result into their
//! own query language; nothing here knows about SQL.
//!
//! Semantics follow FHIR R4B search (3.1.1.4): parameters given twice are ANDed, comma-separated
//! values are ORed, string search is starts-with on the normalised form
//! ([`tsunagi_core::normalize::search_key`]), dates compare as ranges at their precision.

use std::fmt;

pub use limits::parse_count;
#[cfg(test)]
use parse::split_or;
pub use parse::{parameter_codes, parse_date};

use crate::search::SearchParam;

/// Default page size.
pub const DEFAULT_COUNT: usize = 50;
/// Largest page size a client may ask for (limit `_count`; more is refused).
pub const MAX_COUNT: usize = 1000;

pub mod limits;
mod parse;

/// Parameters every search accepts that the server handles outside the query (format, paging).
pub const TRANSPORT_PARAMS: &[&str] = &["_format", "_pretty", "_offset", "_snapshot", "_cursor"];

/// A comparison prefix (`eq`, `ge`, …) of date, number and quantity values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// Equal (the default).
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Less than.
    Lt,
    /// Greater or equal.
    Ge,
    /// Less or equal.
    Le,
    /// Starts after.
    Sa,
    /// Ends before.
    Eb,
    /// Approximately (±10 %).
    Ap,
}

impl Prefix {
    /// Splits a leading prefix off a value (`ge2020` → `Ge`, `2020`).
    pub fn split(value: &str) -> (Prefix, &str) {
        let prefixes = [
            ("eq", Prefix::Eq),
            ("ne", Prefix::Ne),
            ("gt", Prefix::Gt),
            ("lt", Prefix::Lt),
            ("ge", Prefix::Ge),
            ("le", Prefix::Le),
            ("sa", Prefix::Sa),
            ("eb", Prefix::Eb),
            ("ap", Prefix::Ap),
        ];
        for (text, prefix) in prefixes {
            if let Some(rest) = value.strip_prefix(text)
                && rest.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
            {
                return (prefix, rest);
            }
        }
        (Prefix::Eq, value)
    }
}

/// A date search value: the prefix and the range `[start, end)` the value covers at its
/// precision, in UTC seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateBound {
    /// The comparison.
    pub prefix: Prefix,
    /// Inclusive start.
    pub start: i64,
    /// Exclusive end.
    pub end: i64,
}

impl DateBound {
    /// Whether a stored range `[start, end)` satisfies this bound (FHIR R4B 3.1.1.4.2 with
    /// ranges on both sides). Stores translate the same rules into their query language; this
    /// is the reference they are tested against.
    pub fn matches(&self, start: i64, end: i64) -> bool {
        let contained = start >= self.start && end <= self.end;
        match self.prefix {
            Prefix::Eq => contained,
            Prefix::Ne => !contained,
            Prefix::Gt => end > self.end,
            Prefix::Lt => start < self.start,
            Prefix::Ge => end > self.end || contained,
            Prefix::Le => start < self.start || contained,
            Prefix::Sa => start >= self.end,
            Prefix::Eb => end <= self.start,
            Prefix::Ap => start < self.end && end > self.start,
        }
    }
}

/// How a string value is compared with the indexed (normalised) text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMode {
    /// The text starts with the value (the default).
    StartsWith,
    /// The text equals the value (`:exact`; compared after normalisation of width and kana).
    Exact,
    /// The text contains the value (`:contains`).
    Contains,
}

/// Which token system a token value asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemMatch {
    /// `code`: any system.
    Any,
    /// `|code`: no system.
    None,
    /// `system|code` or `system|`: this (canonical) system.
    Is(String),
}

/// One test of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// `_id`.
    Id(String),
    /// `_lastUpdated`.
    LastUpdated(DateBound),
    /// A token parameter; `code` `None` means any code of the system (`system|`).
    Token {
        /// The parameter.
        param: &'static SearchParam,
        /// The system asked for.
        system: SystemMatch,
        /// The code asked for.
        code: Option<String>,
    },
    /// `:text` on a token: the normalised text or display starts with the value.
    TokenText {
        /// The parameter.
        param: &'static SearchParam,
        /// Normalised text.
        text: String,
    },
    /// A string parameter.
    String {
        /// The parameter.
        param: &'static SearchParam,
        /// Comparison.
        mode: StringMode,
        /// Normalised value.
        value: String,
    },
    /// A date parameter.
    Date {
        /// The parameter.
        param: &'static SearchParam,
        /// The bound.
        bound: DateBound,
    },
    /// A reference parameter pointing at `target_type/id` (any type when `None`).
    Reference {
        /// The parameter.
        param: &'static SearchParam,
        /// Target type, when given.
        target_type: Option<String>,
        /// Target logical id.
        id: String,
    },
    /// `param:Type.inner=value`: the reference points at a `Type` resource matching `inner`.
    Chain {
        /// The reference parameter.
        param: &'static SearchParam,
        /// Target type.
        target_type: String,
        /// The test on the target (a parameter of `target_type`).
        inner: Box<Predicate>,
    },
    /// A quantity parameter. `low..high` is the range a bare number stands for at its
    /// precision (for `eq`/`ne`); other prefixes compare against `value`.
    Quantity {
        /// The parameter.
        param: &'static SearchParam,
        /// Comparison.
        prefix: Prefix,
        /// The number as given.
        value: f64,
        /// Lower end of the implied precision range.
        low: f64,
        /// Upper end of the implied precision range.
        high: f64,
        /// Unit system, when given (canonical).
        system: Option<String>,
        /// Unit code, when given.
        code: Option<String>,
    },
    /// `_content` / `_text`: every term occurs in the resource's words (its narrative only for
    /// `_text`), as a substring of the normalised text.
    Text {
        /// The type's `_content` parameter.
        param: &'static SearchParam,
        /// Normalised terms, all required; never empty.
        terms: Vec<String>,
        /// `_text`: the narrative only.
        narrative_only: bool,
    },
    /// `:missing`: whether the parameter has no value at all.
    Missing {
        /// The parameter.
        param: &'static SearchParam,
        /// `true` selects resources without a value.
        missing: bool,
    },
}

impl Predicate {
    /// The registry parameter tested, if the predicate is not on `_id`/`_lastUpdated`.
    pub fn param(&self) -> Option<&'static SearchParam> {
        match self {
            Predicate::Id(_) | Predicate::LastUpdated(_) => None,
            Predicate::Token { param, .. }
            | Predicate::TokenText { param, .. }
            | Predicate::String { param, .. }
            | Predicate::Date { param, .. }
            | Predicate::Reference { param, .. }
            | Predicate::Chain { param, .. }
            | Predicate::Quantity { param, .. }
            | Predicate::Text { param, .. }
            | Predicate::Missing { param, .. } => Some(param),
        }
    }
}

/// One `name=value` pair: the alternatives of its comma-separated value, ORed; `negated` is the
/// token `:not` modifier, applied to the whole OR.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The parameter name as the client wrote it (for messages).
    pub name: String,
    /// Alternatives.
    pub any_of: Vec<Predicate>,
    /// `:not`: resources matching none of the alternatives.
    pub negated: bool,
}

/// What to sort by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SortKey {
    /// `_id`.
    Id,
    /// `_lastUpdated`.
    LastUpdated,
    /// A date, string, token or quantity parameter.
    Param(&'static SearchParam),
}

/// One `_sort` key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sort {
    /// The key.
    pub key: SortKey,
    /// `-` prefix.
    pub descending: bool,
}

/// `_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    /// Count every match (the default: counting is cheap once the result set exists).
    Accurate,
    /// Leave `total` out.
    None,
}

/// `_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// Whole resources.
    False,
    /// Only elements marked as summary.
    True,
    /// Only the count.
    Count,
    /// Everything but `text`.
    Data,
    /// `text`, `id`, `meta` and mandatory top-level elements.
    Text,
}

impl Summary {
    /// A `_summary` value; `None` if it is none of `true`, `false`, `count`, `data`, `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "true" => Self::True,
            "false" => Self::False,
            "count" => Self::Count,
            "data" => Self::Data,
            "text" => Self::Text,
            _ => return None,
        })
    }
}

/// `_include` / `_revinclude` `Source:param[:Target]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    /// The resource type holding the reference.
    pub source_type: String,
    /// The reference parameter.
    pub param: &'static SearchParam,
    /// Restricts the target type.
    pub target_type: Option<String>,
    /// `:iterate` — also applied to resources included by other includes (one level).
    pub iterate: bool,
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// The resource type searched.
    pub resource_type: String,
    /// ANDed filters.
    pub filters: Vec<Filter>,
    /// Sort keys, most significant first (empty: storage order).
    pub sort: Vec<Sort>,
    /// Page size.
    pub count: usize,
    /// `_total`.
    pub total: Total,
    /// `_summary`.
    pub summary: Summary,
    /// `_elements`, when given.
    pub elements: Option<Vec<String>>,
    /// `_include`.
    pub include: Vec<Include>,
    /// `_revinclude`.
    pub revinclude: Vec<Include>,
    /// Parameters that were not understood and ignored (reported to the client).
    pub ignored: Vec<String>,
}

/// Why a search cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// The offending parameter as written.
    pub param: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "search parameter {}: {}", self.param, self.reason)
    }
}

impl std::error::Error for QueryError {}

fn error(param: &str, reason: impl Into<String>) -> QueryError {
    QueryError {
        param: param.to_owned(),
        reason: reason.into(),
    }
}

/// Resource types that can be searched (those with registered parameters), sorted.
pub fn searchable_types() -> &'static [&'static str] {
    static TYPES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    TYPES.get_or_init(|| {
        let mut types: Vec<&'static str> = crate::search::PARAMS
            .iter()
            .map(|param| param.resource)
            .collect();
        types.sort_unstable();
        types.dedup();
        types
    })
}

/// The element names of an `_elements` value (`Type.` prefixes dropped).
pub fn parse_elements(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|element| !element.is_empty())
        .map(|element| {
            element
                .split_once('.')
                .map_or(element, |(_, rest)| rest)
                .to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests;
