//! History: of one resource, of a type and of the whole system, with `_since` and cursors.

use axum::{
    http::{HeaderMap, StatusCode},
    response::Response,
};
use tsunagi_auth::Interaction;
use tsunagi_core::time::format_instant_jst;
use tsunagi_store::{HistoryCursor, StoredResource};

use crate::{AppState, outcome::ApiError, security::Caller};
use crate::{
    bundle::{Page, bundle_id, link_query, page_links, push_link, start_bundle},
    request::{base_url, json_response, param, valid_type},
};

pub(crate) fn since_of(pairs: &[(String, String)]) -> Result<Option<i64>, ApiError> {
    param(pairs, "_since")
        .map(|text| {
            tsunagi_core::time::fhir_date_range(text)
                .map(|(start, _)| start.saturating_mul(1_000_000))
                .ok_or_else(|| {
                    ApiError::bad_request("invalid", format!("_since: {text} is not an instant"))
                })
        })
        .transpose()
}

pub(crate) fn count_of(pairs: &[(String, String)]) -> Result<usize, ApiError> {
    Ok(param(pairs, "_count")
        .map(tsunagi_fhir::query::parse_count)
        .transpose()?
        .unwrap_or(tsunagi_fhir::query::DEFAULT_COUNT))
}

pub(crate) fn write_history(
    out: &mut Vec<u8>,
    base: &str,
    versions: &[StoredResource],
) -> Result<(), ApiError> {
    out.extend_from_slice(b",\"entry\":[");
    for (index, version) in versions.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let url = format!("{}/{}", version.resource_type, version.id);
        out.extend_from_slice(format!("{{\"fullUrl\":\"{base}/{url}\"").as_bytes());
        if version.deleted {
            out.extend_from_slice(format!(",\"request\":{{\"method\":\"DELETE\",\"url\":\"{url}\"}},\"response\":{{\"status\":\"204\",\"lastModified\":\"{}\"}}}}", format_instant_jst(version.last_updated)).as_bytes());
        } else {
            out.extend_from_slice(b",\"resource\":");
            version.write_json(out)?;
            let (method, status) = if version.version == 1 {
                ("POST", "201")
            } else {
                ("PUT", "200")
            };
            let request_url = if method == "POST" {
                version.resource_type.clone()
            } else {
                url.clone()
            };
            out.extend_from_slice(format!(",\"request\":{{\"method\":\"{method}\",\"url\":\"{request_url}\"}},\"response\":{{\"status\":\"{status}\",\"etag\":\"W/\\\"{}\\\"\",\"lastModified\":\"{}\"}}}}", version.version, format_instant_jst(version.last_updated)).as_bytes());
        }
    }
    crate::bundle::close_entries(out);
    Ok(())
}

pub(crate) async fn instance_history(
    state: &AppState,
    caller: &Caller,
    resource_type: &str,
    id: &str,
    headers: &HeaderMap,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    caller.require(resource_type, Interaction::Read)?;
    let since = since_of(pairs)?;
    let count = count_of(pairs)?;
    let mut versions = state
        .store
        .history(&caller.access, resource_type, id)
        .await?;
    caller.touch(&versions);
    if versions.is_empty() {
        return Err(ApiError::not_found(format!(
            "{resource_type}/{id} is not known"
        )));
    }
    versions.retain(|version| since.is_none_or(|since| version.last_updated >= since));
    let total = versions.len();
    versions.truncate(count);
    let base = base_url(state.settings.base_url.as_deref(), headers);
    let now = state.clock.now_micros();
    let mut out = Vec::new();
    start_bundle(&mut out, "history", &bundle_id(state), now);
    out.extend_from_slice(format!(",\"total\":{total},").as_bytes());
    let path = format!("{resource_type}/{id}/_history");
    page_links(
        &mut out,
        &Page {
            base: &base,
            path: &path,
            pairs,
            snapshot: None,
            offset: 0,
            count,
            total,
        },
    );
    write_history(&mut out, &base, &versions)?;
    Ok(json_response(StatusCode::OK, out))
}

pub(crate) async fn history_listing(
    state: &AppState,
    caller: &Caller,
    resource_type: Option<&str>,
    headers: &HeaderMap,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    if let Some(resource_type) = resource_type {
        valid_type(resource_type)?;
        caller.require(resource_type, Interaction::Search)?;
    }
    let since = since_of(pairs)?;
    let count = count_of(pairs)?;
    let after = match param(pairs, "_cursor") {
        Some(token) => Some(HistoryCursor::parse(token).ok_or_else(|| {
            ApiError::bad_request("invalid", "_cursor is not a position in this history")
        })?),
        None => None,
    };
    // One more than a page tells whether there is a next page.
    let mut versions = state
        .store
        .history_all(
            &caller.access,
            resource_type,
            since,
            after.as_ref(),
            count + 1,
        )
        .await?;
    let next = (versions.len() > count).then(|| {
        versions.truncate(count);
        versions
            .last()
            .map(|last| HistoryCursor::after(last).token())
    });
    // Whole-system history lists only the types the caller's role and scopes cover.
    versions.retain(|version| caller.may_see(&version.resource_type));
    caller.touch(&versions);
    let base = base_url(state.settings.base_url.as_deref(), headers);
    let now = state.clock.now_micros();
    let mut out = Vec::new();
    start_bundle(&mut out, "history", &bundle_id(state), now);
    out.push(b',');
    let path = match resource_type {
        Some(resource_type) => format!("{resource_type}/_history"),
        None => "_history".to_owned(),
    };
    let url = |extra: &[(&str, String)]| {
        let query = link_query(pairs, extra);
        if query.is_empty() {
            format!("{base}/{path}")
        } else {
            format!("{base}/{path}?{query}")
        }
    };
    let mut first = true;
    out.extend_from_slice(b"\"link\":[");
    let this_page: Vec<(&str, String)> = after.iter().map(|c| ("_cursor", c.token())).collect();
    push_link(&mut out, &mut first, "self", &url(&this_page));
    if let Some(Some(token)) = next {
        push_link(&mut out, &mut first, "next", &url(&[("_cursor", token)]));
    }
    out.extend_from_slice(b"]");
    write_history(&mut out, &base, &versions)?;
    Ok(json_response(StatusCode::OK, out))
}
