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

use tsunagi_core::{normalize::search_key, time::fhir_date_range};

pub use limits::parse_count;

use crate::{
    search::{ParamType, SearchParam, param, params_for, split_reference},
    systems::canonical,
};

/// Default page size.
pub const DEFAULT_COUNT: usize = 50;
/// Largest page size a client may ask for (limit `_count`; more is refused).
pub const MAX_COUNT: usize = 1000;

pub mod limits;

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

impl SearchQuery {
    /// Parses the parameters of a search of `resource_type`. `now` (UTC seconds) anchors `ap`
    /// on dates. With `strict`, unknown parameters are errors instead of being ignored.
    pub fn parse(
        resource_type: &str,
        pairs: &[(String, String)],
        now: i64,
        strict: bool,
    ) -> Result<Self, QueryError> {
        let mut query = SearchQuery {
            resource_type: resource_type.to_owned(),
            filters: Vec::new(),
            sort: Vec::new(),
            count: DEFAULT_COUNT,
            total: Total::Accurate,
            summary: Summary::False,
            elements: None,
            include: Vec::new(),
            revinclude: Vec::new(),
            ignored: Vec::new(),
        };
        limits::check_limits(pairs)?;
        for (name, value) in pairs {
            if TRANSPORT_PARAMS.contains(&name.as_str()) {
                continue;
            }
            match name.as_str() {
                "_count" => query.count = limits::parse_count(value)?,
                "_sort" => query.sort = parse_sort(resource_type, value)?,
                "_total" => {
                    query.total = match value.as_str() {
                        "accurate" | "estimate" => Total::Accurate,
                        "none" => Total::None,
                        _ => return Err(error(name, "must be none, estimate or accurate")),
                    }
                }
                "_summary" => {
                    query.summary = Summary::parse(value)
                        .ok_or_else(|| error(name, "must be true, false, count, data or text"))?;
                }
                "_elements" => query.elements = Some(parse_elements(value)),
                "_include" | "_include:iterate" => {
                    query
                        .include
                        .push(parse_include(name, value, name.ends_with(":iterate"))?);
                }
                "_revinclude" | "_revinclude:iterate" => {
                    query
                        .revinclude
                        .push(parse_include(name, value, name.ends_with(":iterate"))?);
                }
                _ => match parse_filter(resource_type, name, value, now) {
                    // An empty value (`code=`) is ignored, as FHIR servers conventionally do.
                    Ok(Some(filter)) if filter.any_of.is_empty() => {}
                    Ok(Some(filter)) => query.filters.push(filter),
                    Ok(None) if strict => {
                        return Err(error(name, "is not supported by this server"));
                    }
                    Ok(None) => query.ignored.push(name.clone()),
                    Err(problem) => return Err(problem),
                },
            }
        }
        Ok(query)
    }
}

fn parse_sort(resource_type: &str, value: &str) -> Result<Vec<Sort>, QueryError> {
    let mut keys = Vec::new();
    for item in value.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(error("_sort", "an empty sort key (check the commas)"));
        }
        let (descending, code) = match item.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        let key = match code {
            "_id" => SortKey::Id,
            "_lastUpdated" => SortKey::LastUpdated,
            _ => {
                let definition = param(resource_type, code).ok_or_else(|| {
                    error(
                        "_sort",
                        format!("{code} is not a parameter of {resource_type}"),
                    )
                })?;
                if definition.kind == ParamType::Reference {
                    return Err(error(
                        "_sort",
                        format!("cannot sort by the reference {code}"),
                    ));
                }
                SortKey::Param(definition)
            }
        };
        keys.push(Sort { key, descending });
    }
    if keys.len() > limits::MAX_SORT_KEYS {
        return Err(error(
            "_sort",
            format!(
                "{} sort keys; at most {} (limit max_sort_keys)",
                keys.len(),
                limits::MAX_SORT_KEYS
            ),
        ));
    }
    Ok(keys)
}

fn parse_include(name: &str, value: &str, iterate: bool) -> Result<Include, QueryError> {
    let mut parts = value.split(':');
    let source = parts.next().unwrap_or_default();
    let code = parts
        .next()
        .ok_or_else(|| error(name, "must be Type:parameter[:Target]"))?;
    let target_type = parts.next().map(str::to_owned);
    let definition = param(source, code)
        .filter(|definition| definition.kind == ParamType::Reference)
        .ok_or_else(|| {
            error(
                name,
                format!("{source}:{code} is not a reference parameter"),
            )
        })?;
    Ok(Include {
        source_type: source.to_owned(),
        param: definition,
        target_type,
        iterate,
    })
}

/// Parses one filter; `Ok(None)` when the parameter is unknown.
fn parse_filter(
    resource_type: &str,
    name: &str,
    value: &str,
    now: i64,
) -> Result<Option<Filter>, QueryError> {
    // `subject:Patient.identifier` or `patient.identifier`: the chain follows the first dot.
    let (head, chain) = match name.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (name, None),
    };
    let (code, modifier) = match head.split_once(':') {
        Some((code, modifier)) => (code, Some(modifier)),
        None => (head, None),
    };
    let mut negated = false;
    let mut any_of = Vec::new();
    let values = split_or(value);
    match code {
        "_id" => {
            if modifier.is_some() || chain.is_some() {
                return Err(error(name, "_id takes no modifier"));
            }
            any_of.extend(values.into_iter().map(Predicate::Id));
        }
        "_lastUpdated" => {
            if modifier.is_some() || chain.is_some() {
                return Err(error(name, "_lastUpdated takes no modifier"));
            }
            for value in values {
                any_of.push(Predicate::LastUpdated(parse_date(name, &value, now)?));
            }
        }
        _ => {
            let Some(definition) = param(resource_type, code) else {
                return Ok(None);
            };
            if let Some(chain) = chain {
                let target_type = match modifier {
                    Some(target) => target.to_owned(),
                    None => single_target(definition)
                        .ok_or_else(|| {
                            error(
                                name,
                                "a chain needs a target type, e.g. subject:Patient.identifier",
                            )
                        })?
                        .to_owned(),
                };
                if definition.kind != ParamType::Reference {
                    return Err(error(name, "only reference parameters can be chained"));
                }
                let (inner_code, inner_modifier) = match chain.split_once(':') {
                    Some((code, modifier)) => (code, Some(modifier)),
                    None => (chain, None),
                };
                if inner_code.contains('.') {
                    return Err(error(
                        name,
                        "chains of more than one level are not supported",
                    ));
                }
                let inner_name = match inner_modifier {
                    Some(modifier) => format!("{inner_code}:{modifier}"),
                    None => inner_code.to_owned(),
                };
                let Some(inner) = parse_filter(&target_type, &inner_name, value, now)? else {
                    return Err(error(
                        name,
                        format!("{inner_code} is not a parameter of {target_type}"),
                    ));
                };
                if inner.negated {
                    return Err(error(name, ":not is not supported inside a chain"));
                }
                for predicate in inner.any_of {
                    any_of.push(Predicate::Chain {
                        param: definition,
                        target_type: target_type.clone(),
                        inner: Box::new(predicate),
                    });
                }
                return Ok(Some(Filter {
                    name: name.to_owned(),
                    any_of,
                    negated: false,
                }));
            }
            if modifier == Some("missing") {
                let missing = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(error(name, "must be true or false")),
                };
                any_of.push(Predicate::Missing {
                    param: definition,
                    missing,
                });
                return Ok(Some(Filter {
                    name: name.to_owned(),
                    any_of,
                    negated: false,
                }));
            }
            match definition.kind {
                ParamType::Token => {
                    match modifier {
                        None => {}
                        Some("not") => negated = true,
                        Some("text") => {
                            for value in values {
                                any_of.push(Predicate::TokenText {
                                    param: definition,
                                    text: search_key(&value),
                                });
                            }
                            return Ok(Some(Filter {
                                name: name.to_owned(),
                                any_of,
                                negated: false,
                            }));
                        }
                        Some(other) => {
                            return Err(error(
                                name,
                                format!("the modifier :{other} is not supported on tokens"),
                            ));
                        }
                    }
                    for value in values {
                        any_of.push(parse_token(definition, &value));
                    }
                }
                ParamType::String => {
                    let mode = match modifier {
                        None => StringMode::StartsWith,
                        Some("exact") => StringMode::Exact,
                        Some("contains") => StringMode::Contains,
                        Some(other) => {
                            return Err(error(
                                name,
                                format!("the modifier :{other} is not supported on strings"),
                            ));
                        }
                    };
                    for value in values {
                        let value = search_key(&value);
                        if !value.is_empty() {
                            any_of.push(Predicate::String {
                                param: definition,
                                mode,
                                value,
                            });
                        }
                    }
                }
                ParamType::Date => {
                    if let Some(other) = modifier {
                        return Err(error(
                            name,
                            format!("the modifier :{other} is not supported on dates"),
                        ));
                    }
                    for value in values {
                        any_of.push(Predicate::Date {
                            param: definition,
                            bound: parse_date(name, &value, now)?,
                        });
                    }
                }
                ParamType::Reference => {
                    let forced_type = match modifier {
                        None => None,
                        Some(target) if target.starts_with(|c: char| c.is_ascii_uppercase()) => {
                            Some(target.to_owned())
                        }
                        Some(other) => {
                            return Err(error(
                                name,
                                format!("the modifier :{other} is not supported on references"),
                            ));
                        }
                    };
                    for value in values {
                        any_of.push(parse_reference(
                            name,
                            definition,
                            forced_type.as_deref(),
                            &value,
                        )?);
                    }
                }
                ParamType::Quantity => {
                    if let Some(other) = modifier {
                        return Err(error(
                            name,
                            format!("the modifier :{other} is not supported on quantities"),
                        ));
                    }
                    for value in values {
                        any_of.push(parse_quantity(name, definition, &value)?);
                    }
                }
            }
        }
    }
    Ok(Some(Filter {
        name: name.to_owned(),
        any_of,
        negated,
    }))
}

/// Splits a value on unescaped commas and removes the `\,` `\|` `\$` `\\` escapes.
fn split_or(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => match chars.next() {
                Some(next @ (',' | '$' | '\\')) => current.push(next),
                // `\|` stays escaped: token parsing splits on unescaped bars.
                Some('|') => current.push_str("\\|"),
                Some(next) => {
                    current.push('\\');
                    current.push(next);
                }
                None => current.push('\\'),
            },
            ',' => parts.push(std::mem::take(&mut current)),
            _ => current.push(ch),
        }
    }
    parts.push(current);
    parts.retain(|part| !part.is_empty());
    parts
}

/// Splits on the first unescaped `|` and unescapes `\|`.
fn split_bar(value: &str) -> (String, Option<String>) {
    let bytes = value.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' => index += 2,
            b'|' => {
                return (
                    value[..index].replace("\\|", "|"),
                    Some(value[index + 1..].replace("\\|", "|")),
                );
            }
            _ => index += 1,
        }
    }
    (value.replace("\\|", "|"), None)
}

fn parse_token(definition: &'static SearchParam, value: &str) -> Predicate {
    let (first, second) = split_bar(value);
    let (system, code) = match second {
        None => (SystemMatch::Any, Some(first)),
        Some(code) if first.is_empty() => (SystemMatch::None, Some(code)),
        Some(code) => (
            SystemMatch::Is(canonical(&first).to_owned()),
            (!code.is_empty()).then_some(code),
        ),
    };
    Predicate::Token {
        param: definition,
        system,
        code,
    }
}

/// The only target type a reference parameter can have, for chains without a type modifier.
fn single_target(definition: &SearchParam) -> Option<&'static str> {
    match definition.code {
        "patient" | "beneficiary" => Some("Patient"),
        "encounter" => Some("Encounter"),
        "specimen" => Some("Specimen"),
        "result" => Some("Observation"),
        "request" => Some("MedicationRequest"),
        _ => None,
    }
}

fn parse_reference(
    name: &str,
    definition: &'static SearchParam,
    forced_type: Option<&str>,
    value: &str,
) -> Result<Predicate, QueryError> {
    let (target_type, id) = if value.contains('/') {
        let (target_type, id) = split_reference(value)
            .ok_or_else(|| error(name, format!("{value} is not a reference (Type/id)")))?;
        if let Some(forced) = forced_type
            && forced != target_type
        {
            return Err(error(name, format!("{value} is not a {forced}")));
        }
        (Some(target_type.to_owned()), id.to_owned())
    } else {
        let default = forced_type.or(match definition.code {
            "patient" | "beneficiary" => Some("Patient"),
            _ => None,
        });
        (default.map(str::to_owned), value.to_owned())
    };
    if id.is_empty() {
        return Err(error(name, "the reference has no id"));
    }
    Ok(Predicate::Reference {
        param: definition,
        target_type,
        id,
    })
}

/// Parses a date search value (with prefix) into a bound. A dateTime without seconds
/// (`2024-05-01T10:00`) covers its minute.
pub fn parse_date(name: &str, value: &str, now: i64) -> Result<DateBound, QueryError> {
    let (prefix, text) = Prefix::split(value);
    let range = fhir_date_range(text)
        .or_else(|| minute_range(text))
        .ok_or_else(|| {
            error(
                name,
                format!("{text} is not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime)"),
            )
        })?;
    let (mut start, mut end) = range;
    if prefix == Prefix::Ap {
        // ±10 % of the distance from now, at least the value's own precision.
        let margin = ((now - start).abs() / 10).max(end - start);
        start = start.saturating_sub(margin);
        end = end.saturating_add(margin);
    }
    Ok(DateBound { prefix, start, end })
}

fn minute_range(text: &str) -> Option<(i64, i64)> {
    // YYYY-MM-DDThh:mm[zone]
    if text.len() < 16 || text.as_bytes().get(13) != Some(&b':') || !text.is_char_boundary(16) {
        return None;
    }
    let (head, zone) = text.split_at(16);
    let (start, _) = fhir_date_range(&format!("{head}:00{zone}"))?;
    Some((start, start + 60))
}

fn parse_quantity(
    name: &str,
    definition: &'static SearchParam,
    value: &str,
) -> Result<Predicate, QueryError> {
    let (prefix, rest) = Prefix::split(value);
    let mut parts = rest.splitn(3, '|');
    let number = parts.next().unwrap_or_default();
    let system = parts
        .next()
        .filter(|s| !s.is_empty())
        .map(|s| canonical(s).to_owned());
    let code = parts.next().filter(|s| !s.is_empty()).map(str::to_owned);
    let parsed: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
        .ok_or_else(|| error(name, format!("{number} is not a number")))?;
    // The precision a number is written with implies a range: 5.4 means [5.35, 5.45).
    let decimals = number
        .split_once('.')
        .map_or(0, |(_, fraction)| fraction.len() as i32);
    let half = 0.5 * 10f64.powi(-decimals);
    let (low, high) = if prefix == Prefix::Ap {
        let margin = (parsed.abs() * 0.1).max(half);
        (parsed - margin, parsed + margin)
    } else {
        (parsed - half, parsed + half)
    };
    Ok(Predicate::Quantity {
        param: definition,
        prefix,
        value: parsed,
        low,
        high,
        system,
        code,
    })
}

/// The parameter codes a resource type can be searched by, for the CapabilityStatement.
pub fn parameter_codes(resource_type: &str) -> Vec<(&'static str, ParamType)> {
    let mut codes: Vec<(&'static str, ParamType)> = params_for(resource_type)
        .map(|definition| (definition.code, definition.kind))
        .collect();
    for (resource, alias, target) in crate::search::ALIASES {
        if *resource == resource_type
            && let Some(definition) = param(resource, target)
        {
            codes.push((alias, definition.kind));
        }
    }
    codes.sort_unstable_by_key(|(code, _)| *code);
    codes
}

#[cfg(test)]
mod tests;
