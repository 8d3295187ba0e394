//! AuditEvent over FHIR for administrators (`AuditEvent?patient=&date=&_id=`, read by id),
//! answered from the append-only audit trail, never from the clinical store. An administrator
//! sees what happened to the patients their facility holds and what their own facility's people
//! did; the operator reads everything with `tsunagi admin audit`. Reading the trail is itself
//! audited, once per patient whose events were returned.

use axum::{
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde_json::Value;
use tsunagi_auth::Interaction;
use tsunagi_fhir::query::Prefix;
use tsunagi_store::{
    audit::render,
    governance::{AuditFilter, AuditRecord, ListedAudit},
};

use crate::{
    AppState, base_url, bundle_id, json_response, link_query, outcome::ApiError, push_link,
    security::Caller, start_bundle, valid_id,
};

/// Page size when `_count` is absent, and the most a page may hold.
const DEFAULT_COUNT: usize = 50;
const MAX_COUNT: usize = 1000;

/// The parameters AuditEvent search understands (besides the transport ones).
const PARAMS: &[&str] = &["patient", "date", "_id", "_count", "_cursor"];

/// `GET /fhir/AuditEvent?…`: newest first, paged by an opaque cursor.
pub(crate) async fn search(
    state: &AppState,
    caller: &Caller,
    pairs: &[(String, String)],
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    caller.require("AuditEvent", Interaction::Search)?;
    let mut filter = AuditFilter {
        facility: Some(caller.principal.facility.clone()),
        limit: DEFAULT_COUNT,
        ..AuditFilter::default()
    };
    for (name, value) in pairs {
        match name.as_str() {
            "patient" => {
                let id = value.strip_prefix("Patient/").unwrap_or(value);
                valid_id(id)?;
                filter.patient = Some(id.to_owned());
            }
            "_id" => filter.id = Some(value.clone()),
            "date" => narrow_by_date(&mut filter, value, state.clock.now_micros())?,
            "_count" => {
                filter.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_COUNT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid",
                            format!("_count={value}: a whole number from 1 to {MAX_COUNT}"),
                        )
                    })?;
            }
            "_cursor" => {
                filter.before = Some(value.parse().map_err(|_| {
                    ApiError::bad_request("invalid", format!("_cursor={value} is not a cursor"))
                })?);
            }
            "_format" | "_pretty" => {}
            other => {
                return Err(ApiError::bad_request(
                    "not-supported",
                    format!(
                        "AuditEvent search does not support {other}; it supports {}",
                        PARAMS.join(", ")
                    ),
                ));
            }
        }
    }
    let listed = state.governance.audit(&filter).await?;
    let base = base_url(state.settings.base_url.as_deref(), headers);
    let mut out = Vec::with_capacity(1024 + listed.len() * 1536);
    start_bundle(
        &mut out,
        "searchset",
        &bundle_id(state),
        state.clock.now_micros(),
    );
    out.extend_from_slice(b",\"link\":[");
    let mut first = true;
    let own: Vec<(String, String)> = pairs
        .iter()
        .filter(|(name, _)| name != "_cursor")
        .cloned()
        .collect();
    let url = |extra: &[(&str, String)]| {
        let query = link_query(&own, extra);
        if query.is_empty() {
            format!("{base}/AuditEvent")
        } else {
            format!("{base}/AuditEvent?{query}")
        }
    };
    push_link(&mut out, &mut first, "self", &url(&[]));
    if listed.len() == filter.limit
        && let Some(last) = listed.last()
    {
        push_link(
            &mut out,
            &mut first,
            "next",
            &url(&[("_cursor", last.position.to_string())]),
        );
    }
    out.extend_from_slice(b"],\"entry\":[");
    for (n, ListedAudit { record, .. }) in listed.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        if let Some(patient) = &record.patient {
            caller.touch_patient(patient);
        }
        out.extend_from_slice(b"{\"fullUrl\":");
        out.extend_from_slice(
            Value::String(format!("{base}/AuditEvent/{}", record.id))
                .to_string()
                .as_bytes(),
        );
        out.extend_from_slice(b",\"resource\":");
        write_event(record, &mut out)?;
        out.extend_from_slice(b",\"search\":{\"mode\":\"match\"}}");
    }
    crate::bundle::close_entries(&mut out);
    Ok(json_response(StatusCode::OK, out))
}

/// The AuditEvent of a stored record, resourceType first as every resource we serve.
fn write_event(record: &AuditRecord, out: &mut Vec<u8>) -> Result<(), ApiError> {
    tsunagi_fhir::json::write_resource(&render(record), out)
        .map_err(|error| ApiError::internal(error.to_string()))
}

/// `GET /fhir/AuditEvent/{id}`: 404 for an id that does not exist and for one the caller's
/// facility may not see alike.
pub(crate) async fn read(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Response, ApiError> {
    valid_id(id)?;
    caller.require("AuditEvent", Interaction::Read)?;
    let filter = AuditFilter {
        id: Some(id.to_owned()),
        facility: Some(caller.principal.facility.clone()),
        limit: 1,
        ..AuditFilter::default()
    };
    let Some(listed) = state.governance.audit(&filter).await?.into_iter().next() else {
        return Err(ApiError::not_found(format!("AuditEvent/{id} is not known")));
    };
    if let Some(patient) = &listed.record.patient {
        caller.touch_patient(patient);
    }
    let mut out = Vec::with_capacity(2048);
    write_event(&listed.record, &mut out)?;
    Ok(json_response(StatusCode::OK, out))
}

/// Narrows the recorded interval by one `date` value: `eq` (no prefix), `ge`, `gt`, `le`, `lt`.
fn narrow_by_date(filter: &mut AuditFilter, value: &str, now: i64) -> Result<(), ApiError> {
    let bound = tsunagi_fhir::query::parse_date("date", value, now.div_euclid(1_000_000))
        .map_err(|error| ApiError::bad_request("invalid", error.to_string()))?;
    let start = bound.start.saturating_mul(1_000_000);
    let end = bound.end.saturating_mul(1_000_000);
    let (from, to) = match bound.prefix {
        Prefix::Eq => (Some(start), Some(end)),
        Prefix::Ge => (Some(start), None),
        Prefix::Gt => (Some(end), None),
        Prefix::Le => (None, Some(end)),
        Prefix::Lt => (None, Some(start)),
        _ => {
            return Err(ApiError::bad_request(
                "not-supported",
                format!("date={value}: AuditEvent dates take eq, ge, gt, le or lt"),
            ));
        }
    };
    if let Some(from) = from {
        filter.from = Some(filter.from.map_or(from, |old| old.max(from)));
    }
    if let Some(to) = to {
        filter.to = Some(filter.to.map_or(to, |old| old.min(to)));
    }
    Ok(())
}
