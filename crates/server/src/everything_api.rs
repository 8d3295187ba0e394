//! `Patient/{id}/$everything`: the patient compartment the caller may see, paged.

use axum::{
    http::{HeaderMap, StatusCode},
    response::Response,
};
use tsunagi_auth::Interaction;
use tsunagi_fhir::query::Summary;

use crate::{AppState, outcome::ApiError, security::Caller};
use crate::{
    bundle::{Page, bundle_id, page_keys, page_links, start_bundle, write_search_entry},
    history_api::{count_of, since_of},
    request::{base_url, json_response, param},
};

pub(crate) async fn everything(
    state: &AppState,
    caller: &Caller,
    id: &str,
    headers: &HeaderMap,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    caller.require("Patient", Interaction::Read)?;
    let Some(patient) = state.store.read(&caller.access, "Patient", id).await? else {
        return Err(ApiError::not_found(format!("Patient/{id} is not known")));
    };
    if patient.deleted {
        return Err(ApiError::gone(format!("Patient/{id} was deleted")));
    }
    let since = since_of(pairs)?;
    let mut types: Vec<String> = param(pairs, "_type")
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    // Only what the caller's role and scopes cover.
    if types.is_empty() {
        types = tsunagi_fhir::query::searchable_types()
            .iter()
            .map(|t| (*t).to_owned())
            .collect();
    }
    types.retain(|t| caller.may_see(t));
    let count = count_of(pairs)?;
    let summary = match param(pairs, "_summary").map(Summary::parse) {
        None | Some(Some(Summary::False)) => None,
        Some(Some(summary)) => Some(summary),
        Some(None) => {
            return Err(ApiError::bad_request(
                "invalid",
                "_summary must be true, false, count, data or text",
            ));
        }
    };
    let scope = format!("Patient/{id}/$everything");
    let base = base_url(state.settings.base_url.as_deref(), headers);
    let now = state.clock.now_micros();
    if summary == Some(Summary::Count) || count == 0 {
        // Only the total, counted on what the caller may see; no snapshot, no entries.
        let total = state
            .store
            .compartment(&caller.access, id, &types, since)
            .await?
            .len();
        caller.touch([&patient]);
        let mut out = Vec::with_capacity(512);
        start_bundle(&mut out, "searchset", &bundle_id(state), now);
        out.extend_from_slice(format!(",\"total\":{total},").as_bytes());
        page_links(
            &mut out,
            &Page {
                base: &base,
                path: &scope,
                pairs,
                snapshot: None,
                offset: 0,
                count: 0,
                total,
            },
        );
        out.push(b'}');
        return Ok(json_response(StatusCode::OK, out));
    }
    let page = page_keys(state, caller, &scope, pairs, count, async {
        Ok(state
            .store
            .compartment(&caller.access, id, &types, since)
            .await?)
    })
    .await?;
    let resources = state.store.fetch(&caller.access, &page.keys).await?;
    caller.touch(&resources);
    let mut out = Vec::with_capacity(4096 + resources.len() * 2048);
    start_bundle(
        &mut out,
        "searchset",
        page.snapshot.as_deref().unwrap_or(&bundle_id(state)),
        now,
    );
    out.extend_from_slice(format!(",\"total\":{},", page.total).as_bytes());
    page_links(
        &mut out,
        &Page {
            base: &base,
            path: &scope,
            pairs,
            snapshot: page.snapshot.clone(),
            offset: page.offset,
            count,
            total: page.total,
        },
    );
    out.extend_from_slice(b",\"entry\":[");
    for (index, resource) in resources.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_search_entry(&mut out, &base, resource, "match", None, summary)?;
    }
    crate::bundle::close_entries(&mut out);
    Ok(json_response(StatusCode::OK, out))
}
