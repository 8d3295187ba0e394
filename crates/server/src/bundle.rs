//! Writing Bundles: the opening, entries, paging links, and the page of keys cut from a
//! [`crate::snapshot`].

use serde_json::Value;
use tsunagi_core::time::format_instant_jst;
use tsunagi_fhir::query::Summary;
use tsunagi_store::{Key, StoredResource};

use crate::{AppState, outcome::ApiError, security::Caller};
use crate::{read_api::write_entry_resource, request::param};

/// Pairs of the original search to repeat in links (without paging and format parameters).
pub(crate) fn link_query(pairs: &[(String, String)], extra: &[(&str, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if matches!(name.as_str(), "_snapshot" | "_offset" | "_cursor") {
            continue;
        }
        serializer.append_pair(name, value);
    }
    for (name, value) in extra {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

pub(crate) struct Page<'a> {
    pub(crate) base: &'a str,
    /// Path under the base, e.g. `Observation` or `Patient/p1/$everything`.
    pub(crate) path: &'a str,
    pub(crate) pairs: &'a [(String, String)],
    pub(crate) snapshot: Option<String>,
    pub(crate) offset: usize,
    pub(crate) count: usize,
    pub(crate) total: usize,
}

pub(crate) fn push_link(out: &mut Vec<u8>, first: &mut bool, relation: &str, url: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.extend_from_slice(b"{\"relation\":");
    out.extend_from_slice(Value::String(relation.to_owned()).to_string().as_bytes());
    out.extend_from_slice(b",\"url\":");
    out.extend_from_slice(Value::String(url.to_owned()).to_string().as_bytes());
    out.push(b'}');
}

pub(crate) fn page_links(out: &mut Vec<u8>, page: &Page<'_>) {
    let url = |extra: &[(&str, String)]| {
        let query = link_query(page.pairs, extra);
        if query.is_empty() {
            format!("{}/{}", page.base, page.path)
        } else {
            format!("{}/{}?{query}", page.base, page.path)
        }
    };
    let mut first = true;
    out.extend_from_slice(b"\"link\":[");
    match &page.snapshot {
        Some(snapshot) => {
            let at = |offset: usize| {
                url(&[
                    ("_snapshot", snapshot.clone()),
                    ("_offset", offset.to_string()),
                ])
            };
            push_link(out, &mut first, "self", &at(page.offset));
            if page.offset.saturating_add(page.count) < page.total && page.count > 0 {
                push_link(
                    out,
                    &mut first,
                    "next",
                    &at(page.offset.saturating_add(page.count)),
                );
            }
            if page.offset > 0 {
                push_link(
                    out,
                    &mut first,
                    "previous",
                    &at(page.offset.saturating_sub(page.count)),
                );
            }
        }
        None => push_link(out, &mut first, "self", &url(&[])),
    }
    out.extend_from_slice(b"]");
}

pub(crate) fn start_bundle(out: &mut Vec<u8>, bundle_type: &str, id: &str, now: i64) {
    out.extend_from_slice(b"{\"resourceType\":\"Bundle\",\"id\":\"");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\",\"meta\":{\"lastUpdated\":\"");
    out.extend_from_slice(format_instant_jst(now).as_bytes());
    out.extend_from_slice(b"\"},\"type\":\"");
    out.extend_from_slice(bundle_type.as_bytes());
    out.extend_from_slice(b"\"");
}

pub(crate) fn write_search_entry(
    out: &mut Vec<u8>,
    base: &str,
    resource: &StoredResource,
    mode: &str,
    elements: Option<&[String]>,
    summary: Option<Summary>,
) -> Result<(), ApiError> {
    out.extend_from_slice(b"{\"fullUrl\":\"");
    out.extend_from_slice(format!("{base}/{}/{}", resource.resource_type, resource.id).as_bytes());
    out.extend_from_slice(b"\",\"resource\":");
    write_entry_resource(resource, elements, summary, out)?;
    out.extend_from_slice(b",\"search\":{\"mode\":\"");
    out.extend_from_slice(mode.as_bytes());
    out.extend_from_slice(b"\"}}");
    Ok(())
}

/// A page's keys, cut from a stored snapshot or from a search just run.
pub(crate) struct PageKeys {
    /// The page's keys.
    pub(crate) keys: Vec<Key>,
    /// Keys in the whole result.
    pub(crate) total: usize,
    /// The snapshot the next pages are cut from (none when this page is the whole result).
    pub(crate) snapshot: Option<String>,
    /// Where the page starts in the result.
    pub(crate) offset: usize,
}

/// Finds the page's keys: from a snapshot named in the request, or by running the search (and
/// storing its keys as a snapshot when there is more than one page).
pub(crate) async fn page_keys(
    state: &AppState,
    caller: &Caller,
    scope: &str,
    pairs: &[(String, String)],
    count: usize,
    run: impl std::future::Future<Output = Result<Vec<Key>, ApiError>>,
) -> Result<PageKeys, ApiError> {
    // Another principal's snapshot id answers exactly like an expired one.
    let scope = caller.snapshot_scope(scope);
    let scope = scope.as_str();
    let now = state.clock.now_micros();
    if let Some(id) = param(pairs, "_snapshot") {
        let offset: usize = param(pairs, "_offset")
            .unwrap_or("0")
            .parse()
            .map_err(|_| ApiError::bad_request("invalid", "_offset must be a whole number"))?;
        let page = state
            .snapshots
            .page(state.governance.as_ref(), id, now, offset, count)
            .await?
            .filter(|page| page.scope == scope)
            .ok_or_else(|| ApiError::gone("this result set has expired; run the search again"))?;
        return Ok(PageKeys {
            keys: page.keys,
            total: page.total,
            snapshot: Some(id.to_owned()),
            offset,
        });
    }
    let mut keys = run.await?;
    let total = keys.len();
    if total > count && total > state.snapshots.max_keys() {
        return Err(ApiError::bad_request(
            "too-costly",
            format!(
                "{total} matches are more than one search may page through ({}); narrow the search",
                state.snapshots.max_keys()
            ),
        ));
    }
    let snapshot = if total > count {
        Some(
            state
                .snapshots
                .put(state.governance.as_ref(), scope, &keys, now)
                .await?,
        )
    } else {
        None
    };
    keys.truncate(count);
    Ok(PageKeys {
        keys,
        total,
        snapshot,
        offset: 0,
    })
}

pub(crate) fn bundle_id(state: &AppState) -> String {
    state.snapshots.new_id()
}

/// Ends a Bundle whose entries were written after `,"entry":[`: with no entry, the element is
/// left out (FHIR: never an empty array).
pub(crate) fn close_entries(out: &mut Vec<u8>) {
    const OPEN: &[u8] = b",\"entry\":[";
    if out.ends_with(OPEN) {
        out.truncate(out.len() - OPEN.len());
        out.push(b'}');
    } else {
        out.extend_from_slice(b"]}");
    }
}
