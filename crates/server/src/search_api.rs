//! Search: `GET [type]?…` and `_search`, `Observation/$lastn`, chains and `_include`/`_revinclude`.

use axum::{
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde_json::Value;
use tsunagi_auth::Interaction;
use tsunagi_fhir::{
    query::{Include, SearchQuery, Summary, Total},
    search::{IndexValue, extract_param},
};
use tsunagi_store::{Key, StoredResource};

use crate::{
    AppState,
    outcome::{ApiError, outcome},
    security::Caller,
};
use crate::{
    audit_api,
    bundle::{Page, bundle_id, page_keys, page_links, start_bundle, write_search_entry},
    request::{base_url, json_response, param, strict_handling},
};

pub(crate) async fn search(
    state: &AppState,
    caller: &Caller,
    resource_type: &str,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if resource_type == "AuditEvent" {
        return audit_api::search(state, caller, &pairs, headers).await;
    }
    search_as(
        state,
        caller,
        resource_type,
        resource_type,
        &pairs,
        &pairs,
        headers,
        None,
    )
    .await
}

/// `GET Patient/[id]/[type]?…` (FHIR compartment search): the search `[type]?patient=[id]&…`
/// (or `subject`, for a type without a `patient` parameter), under the same consent filter as
/// any search; its links stay on the compartment's path.
pub(crate) async fn compartment_search(
    state: &AppState,
    caller: &Caller,
    patient: &str,
    resource_type: &str,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let codes = tsunagi_fhir::query::parameter_codes(resource_type);
    let Some(code) = ["patient", "subject"].into_iter().find(|code| {
        codes.iter().any(|(known, kind)| {
            known == code && *kind == tsunagi_fhir::search::ParamType::Reference
        })
    }) else {
        return Err(ApiError::not_found(format!(
            "{resource_type} is not searched in the Patient compartment on this server"
        )));
    };
    let mut search_pairs = pairs.clone();
    search_pairs.push((code.to_owned(), format!("Patient/{patient}")));
    search_as(
        state,
        caller,
        resource_type,
        &format!("Patient/{patient}/{resource_type}"),
        &pairs,
        &search_pairs,
        headers,
        None,
    )
    .await
}

/// `Observation/$lastn`: the most recent `max` (default 1) Observations of each code, for one
/// patient (`patient` or `subject` is required), narrowed by any Observation search parameter.
/// Grouped by the first coding of `Observation.code` (system and code; else its text); most
/// recent by `date` (`effective[x]`); groups follow each other, the newest group first.
pub(crate) async fn lastn(
    state: &AppState,
    caller: &Caller,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let max = match param(&pairs, "max") {
        None => 1,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid",
                    format!("max={text}: a whole number from 1 to 1000"),
                )
            })?,
    };
    // A patient named, not just a parameter spelled: `patient=` (empty, ignored) or
    // `patient:missing=…` would leave every visible Observation in the search.
    let scoped = pairs.iter().any(|(key, value)| {
        matches!(
            key.as_str(),
            "patient" | "subject" | "patient:Patient" | "subject:Patient" | "_snapshot"
        ) && !value.trim().is_empty()
    });
    if !scoped {
        return Err(ApiError::bad_request(
            "required",
            "Observation/$lastn needs a patient (or subject) parameter",
        ));
    }
    let mut search_pairs: Vec<(String, String)> = pairs
        .iter()
        .filter(|(key, _)| key != "max" && key != "_sort")
        .cloned()
        .collect();
    search_pairs.push(("_sort".to_owned(), "-date".to_owned()));
    search_as(
        state,
        caller,
        "Observation",
        "Observation/$lastn",
        &pairs,
        &search_pairs,
        headers,
        Some(max),
    )
    .await
}

/// The group of an Observation for `$lastn`.
pub(crate) fn lastn_group(resource: &StoredResource) -> Result<String, ApiError> {
    let value = match resource.content.as_deref() {
        Some(content) => {
            tsunagi_fhir::json::parse_fields(content, &|key| key == "code").map_err(|error| {
                ApiError::from(tsunagi_store::StoreError::Corrupt(error.to_string()))
            })?
        }
        None => Value::Null,
    };
    let code = &value["code"];
    Ok(match code["coding"].get(0) {
        Some(coding) => format!(
            "{}|{}",
            coding["system"].as_str().unwrap_or_default(),
            coding["code"].as_str().unwrap_or_default()
        ),
        None => format!("text:{}", code["text"].as_str().unwrap_or_default()),
    })
}

/// Keeps the first `max` keys of each `$lastn` group (keys come newest first), groups in the
/// order their newest member appears.
pub(crate) async fn lastn_keys(
    state: &AppState,
    caller: &Caller,
    keys: Vec<Key>,
    max: usize,
) -> Result<Vec<Key>, ApiError> {
    let mut groups: Vec<(String, Vec<Key>)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for chunk in keys.chunks(500) {
        let resources = state.store.fetch(&caller.access, chunk).await?;
        for (key, resource) in chunk.iter().zip(&resources) {
            let group = lastn_group(resource)?;
            let slot = *index.entry(group.clone()).or_insert_with(|| {
                groups.push((group, Vec::new()));
                groups.len() - 1
            });
            if groups[slot].1.len() < max {
                groups[slot].1.push(*key);
            }
        }
    }
    Ok(groups.into_iter().flat_map(|(_, keys)| keys).collect())
}

/// A search whose links repeat `link_pairs` under `path`; `lastn` reduces the keys to the most
/// recent of each code.
#[expect(
    clippy::too_many_arguments,
    reason = "the one search path shared by search and $lastn; a request struct is the next refactor"
)]
pub(crate) async fn search_as(
    state: &AppState,
    caller: &Caller,
    resource_type: &str,
    path: &str,
    link_pairs: &[(String, String)],
    pairs: &[(String, String)],
    headers: &HeaderMap,
    lastn: Option<usize>,
) -> Result<Response, ApiError> {
    if tsunagi_fhir::query::searchable_types()
        .binary_search(&resource_type)
        .is_err()
    {
        return Err(ApiError::not_found(format!(
            "{resource_type} cannot be searched on this server"
        )));
    }
    caller.require(resource_type, Interaction::Search)?;
    let now = state.clock.now_micros();
    let query = SearchQuery::parse(
        resource_type,
        pairs,
        now.div_euclid(1_000_000),
        strict_handling(headers),
    )?;
    require_chained_types(caller, &query)?;
    // Links repeat what the server applied; what it ignored is said in an outcome entry.
    let applied: Vec<(String, String)> = link_pairs
        .iter()
        .filter(|(name, _)| !query.ignored.contains(name))
        .cloned()
        .collect();
    let link_pairs = applied.as_slice();
    let base = base_url(state.settings.base_url.as_deref(), headers);
    if query.summary == Summary::Count || query.count == 0 {
        let total = match lastn {
            None => state.store.count(&caller.access, &query).await?,
            Some(max) => lastn_keys(
                state,
                caller,
                state.store.search(&caller.access, &query).await?,
                max,
            )
            .await?
            .len() as u64,
        };
        let mut out = Vec::with_capacity(512);
        start_bundle(&mut out, "searchset", &bundle_id(state), now);
        if query.total == Total::Accurate || query.summary == Summary::Count {
            out.extend_from_slice(format!(",\"total\":{total}").as_bytes());
        }
        out.push(b',');
        page_links(
            &mut out,
            &Page {
                base: &base,
                path,
                pairs: link_pairs,
                snapshot: None,
                offset: 0,
                count: 0,
                total: total as usize,
            },
        );
        out.push(b'}');
        return Ok(json_response(StatusCode::OK, out));
    }
    let page = page_keys(state, caller, path, pairs, query.count, async {
        let keys = state.store.search(&caller.access, &query).await?;
        match lastn {
            Some(max) => lastn_keys(state, caller, keys, max).await,
            None => Ok(keys),
        }
    })
    .await?;
    let matches = state.store.fetch(&caller.access, &page.keys).await?;
    let included = includes(state, caller, &query, &matches).await?;
    caller.touch(matches.iter().chain(&included));
    let mut out = Vec::with_capacity(4096 + matches.len() * 2048);
    start_bundle(
        &mut out,
        "searchset",
        page.snapshot.as_deref().unwrap_or(&bundle_id(state)),
        now,
    );
    if query.total == Total::Accurate {
        out.extend_from_slice(format!(",\"total\":{}", page.total).as_bytes());
    }
    out.push(b',');
    page_links(
        &mut out,
        &Page {
            base: &base,
            path,
            pairs: link_pairs,
            snapshot: page.snapshot.clone(),
            offset: page.offset,
            count: query.count,
            total: page.total,
        },
    );
    out.extend_from_slice(b",\"entry\":[");
    let summary = (query.summary != Summary::False).then_some(query.summary);
    let mut first = true;
    for resource in &matches {
        if !first {
            out.push(b',');
        }
        first = false;
        write_search_entry(
            &mut out,
            &base,
            resource,
            "match",
            query.elements.as_deref(),
            summary,
        )?;
    }
    for resource in &included {
        if !first {
            out.push(b',');
        }
        first = false;
        write_search_entry(&mut out, &base, resource, "include", None, None)?;
    }
    if !query.ignored.is_empty() {
        if !first {
            out.push(b',');
        }
        let message = format!(
            "ignored unknown search parameters: {}",
            query.ignored.join(", ")
        );
        out.extend_from_slice(b"{\"resource\":");
        out.extend_from_slice(
            outcome("warning", "not-supported", &message)
                .to_string()
                .as_bytes(),
        );
        out.extend_from_slice(b",\"search\":{\"mode\":\"outcome\"}}");
    }
    crate::bundle::close_entries(&mut out);
    Ok(json_response(StatusCode::OK, out))
}

/// Chains may only pass through types the caller may search: a chain is a question about the
/// target's data.
pub(crate) fn require_chained_types(caller: &Caller, query: &SearchQuery) -> Result<(), ApiError> {
    fn walk(caller: &Caller, predicate: &tsunagi_fhir::query::Predicate) -> Result<(), ApiError> {
        if let tsunagi_fhir::query::Predicate::Chain {
            target_type, inner, ..
        } = predicate
        {
            caller.require(target_type, Interaction::Search)?;
            walk(caller, inner)?;
        }
        Ok(())
    }
    for filter in &query.filters {
        for predicate in &filter.any_of {
            walk(caller, predicate)?;
        }
    }
    Ok(())
}

/// `_include` and `_revinclude` (with one level of `:iterate`) for a page of matches.
pub(crate) async fn includes(
    state: &AppState,
    caller: &Caller,
    query: &SearchQuery,
    matches: &[StoredResource],
) -> Result<Vec<StoredResource>, ApiError> {
    if query.include.is_empty() && query.revinclude.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: std::collections::HashSet<(String, String)> = matches
        .iter()
        .map(|r| (r.resource_type.clone(), r.id.clone()))
        .collect();
    let mut included = Vec::new();
    let first = include_round(state, caller, query, matches, false, &mut seen).await?;
    let iterate = query
        .include
        .iter()
        .chain(&query.revinclude)
        .any(|i| i.iterate);
    if iterate && !first.is_empty() {
        let second = include_round(state, caller, query, &first, true, &mut seen).await?;
        included.extend(first);
        included.extend(second);
    } else {
        included.extend(first);
    }
    Ok(included)
}

pub(crate) async fn include_round(
    state: &AppState,
    caller: &Caller,
    query: &SearchQuery,
    sources: &[StoredResource],
    iterate_only: bool,
    seen: &mut std::collections::HashSet<(String, String)>,
) -> Result<Vec<StoredResource>, ApiError> {
    let applies = |include: &&Include| !iterate_only || include.iterate;
    let mut targets: Vec<(String, String)> = Vec::new();
    for include in query.include.iter().filter(applies) {
        for source in sources
            .iter()
            .filter(|s| s.resource_type == include.source_type)
        {
            // Only this parameter's references, read from the stored content (no meta needed).
            let Some(content) = source.content.as_deref() else {
                continue;
            };
            let value = tsunagi_fhir::json::parse_fields(content, &|key| {
                include.param.paths.iter().any(|path| {
                    let head = path.split('.').next().unwrap_or(path);
                    match head.strip_suffix("[x]") {
                        Some(prefix) => key.starts_with(prefix),
                        None => key == head,
                    }
                })
            })
            .map_err(|error| {
                ApiError::from(tsunagi_store::StoreError::Corrupt(error.to_string()))
            })?;
            for entry in extract_param(&value, include.param) {
                if let IndexValue::Reference {
                    target_type,
                    target_id,
                } = entry
                    && include
                        .target_type
                        .as_ref()
                        .is_none_or(|t| *t == target_type)
                {
                    targets.push((target_type, target_id));
                }
            }
        }
    }
    targets.retain(|target| !seen.contains(target));
    targets.sort();
    targets.dedup();
    let mut keys = state.store.keys_of(&caller.access, &targets).await?;
    for include in query.revinclude.iter().filter(applies) {
        let referenced: Vec<(String, String)> = sources
            .iter()
            .map(|s| (s.resource_type.clone(), s.id.clone()))
            .collect();
        keys.extend(
            state
                .store
                .referencing(
                    &caller.access,
                    include.param.id,
                    &referenced,
                    state.settings.max_revinclude,
                )
                .await?,
        );
    }
    keys.sort_unstable();
    keys.dedup();
    let mut found = Vec::new();
    for resource in state.store.fetch(&caller.access, &keys).await? {
        // Types the caller's role or scopes do not cover are left out, not refused.
        if caller.may_see(&resource.resource_type)
            && seen.insert((resource.resource_type.clone(), resource.id.clone()))
        {
            found.push(resource);
        }
    }
    Ok(found)
}
