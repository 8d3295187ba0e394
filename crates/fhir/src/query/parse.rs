//! Parsing a search: the `name=value` pairs of a request resolved against the parameter
//! registry into a [`SearchQuery`] — filters by parameter type and prefix, chains, reverse
//! chains, `_sort`, `_include`, `_count`, `_total`, `_summary` — each failure a [`QueryError`]
//! naming the parameter.

use tsunagi_core::{normalize::search_key, time::fhir_date_range};

use super::*;
use crate::{
    search::{ParamType, SearchParam, param, params_for, split_reference},
    systems::canonical,
};

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
                if definition.kind == ParamType::Text {
                    return Err(error("_sort", format!("cannot sort by {code}")));
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
        "_content" | "_text" => {
            let Some(definition) = param(resource_type, "_content") else {
                return Ok(None);
            };
            if modifier.is_some() || chain.is_some() {
                return Err(error(name, format!("{code} takes no modifier")));
            }
            for value in values {
                let terms = crate::search::text::query_terms(&value);
                if !terms.is_empty() {
                    any_of.push(Predicate::Text {
                        param: definition,
                        terms,
                        narrative_only: code == "_text",
                    });
                }
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
                // `_content` is read above; it is reached here only under another name.
                ParamType::Text => return Ok(None),
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
pub(super) fn split_or(value: &str) -> Vec<String> {
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
    // `_text` searches the narrative half of `_content`'s rows.
    if param(resource_type, "_content").is_some() {
        codes.push(("_text", ParamType::Text));
    }
    codes.sort_unstable_by_key(|(code, _)| *code);
    codes
}
