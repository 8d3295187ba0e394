//! Search parameters as the server decodes them from a query string or a `_search` form body,
//! for every searchable type: the parser refuses or accepts, never panics, and what it accepts
//! is within the limits it promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsunagi_fhir::query::{self, SearchQuery, limits};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, query_string)) = data.split_first() else {
        return;
    };
    let types = query::searchable_types();
    let resource_type = types[usize::from(pick) % types.len()];
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query_string)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    for strict in [false, true] {
        if let Ok(parsed) = SearchQuery::parse(resource_type, &pairs, 1_800_000_000, strict) {
            assert!(parsed.filters.len() <= limits::MAX_PARAMETERS);
            assert!(parsed.include.len() + parsed.revinclude.len() <= limits::MAX_INCLUDES);
            assert!(parsed.count <= query::MAX_COUNT);
            let alternatives: usize = parsed.filters.iter().map(|f| f.any_of.len()).sum();
            assert!(alternatives <= limits::MAX_ALTERNATIVES, "{alternatives}");
        }
    }
    for (name, value) in pairs.iter().take(8) {
        let _ = query::parse_date(name, value, 1_800_000_000);
        let _ = query::parse_elements(value);
        let _ = query::parse_count(value);
    }
});
