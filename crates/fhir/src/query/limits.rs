//! The limits one search is held to, checked while its parameters are parsed, before any SQL
//! is built: a request over one is refused (400) with a message naming the limit, never run
//! (hostile input: thousands of filters once made the store fail, issue 17).

use super::{MAX_COUNT, QueryError, TRANSPORT_PARAMS, error};

/// Search parameters in one request (filters, `_sort`, `_include`…; not `_format` and
/// the paging parameters).
pub const MAX_PARAMETERS: usize = 64;
/// Comma-separated (ORed) values of one parameter, and names in `_elements`.
pub const MAX_VALUES: usize = 100;
/// Values of all filters together (each is one branch of the statement the store runs).
pub const MAX_ALTERNATIVES: usize = 256;
/// `_include` and `_revinclude` parameters together.
pub const MAX_INCLUDES: usize = 10;
/// Keys of `_sort`.
pub const MAX_SORT_KEYS: usize = 8;
/// Levels of a chained parameter (`subject:Patient.identifier` is one).
pub const MAX_CHAIN_DEPTH: usize = 1;
/// Bytes of one parameter's value, decoded.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Words of all `_content` and `_text` values together (each is a substring test).
pub const MAX_TEXT_TERMS: usize = 32;

/// `_count`: a whole number up to [`MAX_COUNT`].
pub fn parse_count(value: &str) -> Result<usize, QueryError> {
    let count: usize = value
        .parse()
        .map_err(|_| error("_count", "must be a whole number"))?;
    if count > MAX_COUNT {
        return Err(error(
            "_count",
            format!("{count} is over the limit of {MAX_COUNT} resources a page (limit _count)"),
        ));
    }
    Ok(count)
}

/// The request-wide limits, before anything is parsed.
pub(super) fn check_limits(pairs: &[(String, String)]) -> Result<(), QueryError> {
    let searched = || {
        pairs
            .iter()
            .filter(|(name, _)| !TRANSPORT_PARAMS.contains(&name.as_str()))
    };
    if let Some((name, _)) = pairs
        .iter()
        .find(|(name, value)| name.contains('\0') || value.contains('\0'))
    {
        return Err(error(
            &name.replace('\0', "%00"),
            "holds a NUL character (%00), which no search value may hold",
        ));
    }
    let count = searched().count();
    if count > MAX_PARAMETERS {
        return Err(error(
            "(request)",
            format!(
                "{count} search parameters; at most {} are taken in one request (limit max_parameters)",
                MAX_PARAMETERS
            ),
        ));
    }
    let includes = searched()
        .filter(|(name, _)| name.starts_with("_include") || name.starts_with("_revinclude"))
        .count();
    if includes > MAX_INCLUDES {
        return Err(error(
            "_include",
            format!(
                "{includes} _include and _revinclude parameters; at most {} (limit max_includes)",
                MAX_INCLUDES
            ),
        ));
    }
    let mut alternatives = 0;
    let mut text_terms = 0;
    for (name, value) in searched() {
        if value.len() > MAX_VALUE_BYTES {
            return Err(error(
                name,
                format!(
                    "a value of {} bytes; at most {} (limit max_value_bytes)",
                    value.len(),
                    MAX_VALUE_BYTES
                ),
            ));
        }
        let values = value.split(',').count();
        if values > MAX_VALUES {
            return Err(error(
                name,
                format!(
                    "{values} comma-separated values; at most {} (limit max_values)",
                    MAX_VALUES
                ),
            ));
        }
        let text = matches!(name.split(':').next(), Some("_content" | "_text"));
        if !name.starts_with('_') || text {
            alternatives += values;
        }
        if text {
            text_terms += value
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|term| !term.is_empty())
                .count();
        }
        let depth = name.matches('.').count();
        if depth > MAX_CHAIN_DEPTH {
            return Err(error(
                name,
                format!(
                    "a chain of {depth} levels; at most {} (limit max_chain_depth)",
                    MAX_CHAIN_DEPTH
                ),
            ));
        }
    }
    if text_terms > MAX_TEXT_TERMS {
        return Err(error(
            "_content",
            format!(
                "{text_terms} words in _content and _text together; at most {MAX_TEXT_TERMS} (limit max_text_terms)"
            ),
        ));
    }
    if alternatives > MAX_ALTERNATIVES {
        return Err(error(
            "(request)",
            format!(
                "{alternatives} values in all filters together; at most {} (limit max_alternatives)",
                MAX_ALTERNATIVES
            ),
        ));
    }
    Ok(())
}
