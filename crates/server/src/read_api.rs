//! Read and vread: one resource, its ETag and Last-Modified, conditional reads, and `_elements` /
//! `_summary` reductions.

use std::sync::Arc;

use axum::{
    Extension,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::Value;
use tsunagi_auth::Interaction;
use tsunagi_core::time::format_instant_jst;
use tsunagi_fhir::query::Summary;
use tsunagi_store::StoredResource;

use crate::{AppState, Who, outcome::ApiError, security::Caller};
use crate::{
    audit_api,
    request::{decode_pairs, json_response, param, valid_id, valid_type},
};

pub(crate) fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// RFC 7231 IMF-fixdate of microseconds since the epoch.
pub(crate) fn http_date(micros: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = micros.div_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = tsunagi_core::time::civil_from_days(days);
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[usize::from(month.saturating_sub(1)).min(11)],
        second_of_day / 3600,
        (second_of_day / 60) % 60,
        second_of_day % 60
    )
}

/// Whether the client's copy is current (RFC 7232 §6: If-None-Match when given, else
/// If-Modified-Since).
pub(crate) fn not_modified(resource: &StoredResource, headers: &HeaderMap) -> bool {
    let tag = etag(resource.version);
    match headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
    {
        // Weak comparison (RFC 7232 §2.3.2): `W/"1"` and `"1"` name the same version.
        Some(condition) => condition.split(',').any(|candidate| {
            let candidate = candidate.trim();
            candidate == "*" || candidate.trim_start_matches("W/") == tag.trim_start_matches("W/")
        }),
        None => unmodified_since(resource, headers),
    }
}

pub(crate) fn resource_response(
    resource: &StoredResource,
    headers: &HeaderMap,
    reduction: &Reduction,
) -> Result<Response, ApiError> {
    let tag = etag(resource.version);
    if not_modified(resource, headers) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(&tag) {
            response.headers_mut().insert(header::ETAG, value);
        }
        if let Ok(value) = HeaderValue::from_str(&http_date(resource.last_updated)) {
            response.headers_mut().insert(header::LAST_MODIFIED, value);
        }
        return Ok(response);
    }
    let mut body = Vec::with_capacity(resource.content.as_ref().map_or(0, Vec::len) + 96);
    write_entry_resource(
        resource,
        reduction.elements.as_deref(),
        reduction.summary,
        &mut body,
    )?;
    let mut response = json_response(StatusCode::OK, body);
    let response_headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&tag) {
        response_headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&http_date(resource.last_updated)) {
        response_headers.insert(header::LAST_MODIFIED, value);
    }
    Ok(response)
}

pub(crate) async fn read(
    state: &AppState,
    caller: &Caller,
    resource_type: &str,
    id: &str,
    headers: &HeaderMap,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    if resource_type == "AuditEvent" {
        return audit_api::read(state, caller, id).await;
    }
    valid_id(id)?;
    caller.require(resource_type, Interaction::Read)?;
    // Parameters are checked before anything is read: a refused request touched no record.
    let reduction = Reduction::of(pairs)?;
    let resource = current(state, caller, resource_type, id).await?;
    if resource_type == "Binary" {
        return crate::binary_api::respond(state, &resource, headers, pairs, &reduction).await;
    }
    resource_response(&resource, headers, &reduction)
}

/// The current version of a resource the caller may read: read under its access, noted for the
/// audit, 404 when unknown or hidden, 410 when deleted.
async fn current(
    state: &AppState,
    caller: &Caller,
    resource_type: &str,
    id: &str,
) -> Result<StoredResource, ApiError> {
    let Some(resource) = state.store.read(&caller.access, resource_type, id).await? else {
        return Err(ApiError::not_found(format!(
            "{resource_type}/{id} is not known"
        )));
    };
    caller.touch([&resource]);
    if resource.deleted {
        return Err(ApiError::gone(format!("{resource_type}/{id} was deleted")));
    }
    Ok(resource)
}

/// `[type]/[id]/$validate`: the stored resource, read as a read is (same access, same audit),
/// checked against the loaded profiles ([`crate::validation::validate_stored`]).
pub(crate) async fn validate_stored(
    state: &AppState,
    caller: &Caller,
    resource_type: &str,
    id: &str,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    caller.require(resource_type, Interaction::Read)?;
    let resource = current(state, caller, resource_type, id).await?;
    crate::validation::validate_stored(&state.settings.profiles, &resource, pairs)
}

/// How a read is reduced: `_elements` and `_summary` apply to read and vread as to search.
pub(crate) struct Reduction {
    elements: Option<Vec<String>>,
    summary: Option<Summary>,
}

impl Reduction {
    pub(crate) fn of(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let summary = match param(pairs, "_summary") {
            None => None,
            Some(text) => match Summary::parse(text) {
                Some(Summary::False) => None,
                Some(Summary::Count) => {
                    return Err(ApiError::bad_request(
                        "invalid",
                        "_summary=count is for searches; a read returns one resource",
                    ));
                }
                Some(summary) => Some(summary),
                None => {
                    return Err(ApiError::bad_request(
                        "invalid",
                        "_summary must be true, false, data or text",
                    ));
                }
            },
        };
        Ok(Self {
            elements: param(pairs, "_elements").map(tsunagi_fhir::query::parse_elements),
            summary,
        })
    }
}

/// Seconds since the epoch of an RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the
/// form HTTP/1.1 senders use; other forms are not dates here.
fn parse_http_date(text: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_, rest) = text.trim().split_once(", ")?;
    let mut parts = rest.split(' ');
    let day = parts
        .next()
        .filter(|day| day.len() == 2 && day.bytes().all(|b| b.is_ascii_digit()))?;
    let day: u8 = day.parse().ok()?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)?;
    let year = parts
        .next()
        .filter(|year| year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()))?;
    let year: i32 = year.parse().ok()?;
    // Two unsigned digits each (`+1`, `-1` or a huge number are not a time of day).
    let clock: Vec<i64> = parts
        .next()?
        .split(':')
        .map(|part| {
            (part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<i64>().ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    if parts.next()? != "GMT" || parts.next().is_some() || clock.len() != 3 {
        return None;
    }
    let month = u8::try_from(month + 1).ok()?;
    if !(1..=tsunagi_core::time::days_in_month(year, month)).contains(&day)
        || clock[0] > 23
        || clock[1] > 59
        || clock[2] > 60
    {
        return None;
    }
    let days = tsunagi_core::time::days_from_civil(year, month, day);
    Some(days * 86_400 + clock[0] * 3600 + clock[1] * 60 + clock[2])
}

/// The FHIR instant of an HTTP date (a Bundle entry's `response.lastModified`).
pub(crate) fn http_date_to_instant(text: &str) -> Option<String> {
    parse_http_date(text).map(|seconds| format_instant_jst(seconds.saturating_mul(1_000_000)))
}

/// `If-Modified-Since`: true when the resource was last changed at or before that second.
fn unmodified_since(resource: &StoredResource, headers: &HeaderMap) -> bool {
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_http_date)
        .is_some_and(|since| resource.last_updated.div_euclid(1_000_000) <= since)
}

pub(crate) async fn vread(
    State(state): State<Arc<AppState>>,
    Extension(caller): Who,
    method: Method,
    Path((resource_type, id, version)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    valid_type(&resource_type)?;
    valid_id(&id)?;
    if method != Method::GET {
        return Err(ApiError::read_only(
            method.as_str(),
            &format!("/fhir/{resource_type}/{id}/_history/{version}"),
        ));
    }
    let pairs = decode_pairs(raw.as_deref());
    let number: i64 = version
        .parse()
        .map_err(|_| ApiError::not_found(format!("{version} is not a version id")))?;
    caller.require(&resource_type, Interaction::Read)?;
    let reduction = Reduction::of(&pairs)?;
    let Some(resource) = state
        .store
        .vread(&caller.access, &resource_type, &id, number)
        .await?
    else {
        return Err(ApiError::not_found(format!(
            "{resource_type}/{id} has no version {version}"
        )));
    };
    caller.touch([&resource]);
    if resource.deleted {
        return Err(ApiError::gone(format!(
            "version {version} of {resource_type}/{id} is a deletion"
        )));
    }
    if resource_type == "Binary" {
        return crate::binary_api::respond(&state, &resource, &headers, &pairs, &reduction).await;
    }
    resource_response(&resource, &headers, &reduction)
}

/// Writes one resource, optionally reduced to `_elements` or a summary mode.
pub(crate) fn write_entry_resource(
    resource: &StoredResource,
    elements: Option<&[String]>,
    summary: Option<Summary>,
    out: &mut Vec<u8>,
) -> Result<(), ApiError> {
    let reduce = elements.is_some()
        || matches!(summary, Some(Summary::Data | Summary::Text | Summary::True));
    if !reduce {
        resource.write_json(out)?;
        return Ok(());
    }
    let Some(mut value) = resource.to_json()? else {
        return Ok(());
    };
    if let Value::Object(map) = &mut value {
        let resource_type = resource.resource_type.as_str();
        // Mandatory elements are kept whatever `_elements` names (FHIR: servers SHOULD).
        let mandatory =
            |key: &str| tsunagi_fhir_xml::is_mandatory_element(resource_type, key).unwrap_or(true);
        let keep = |key: &str| -> bool {
            matches!(key, "resourceType" | "id" | "meta")
                || match (elements, summary) {
                    (Some(elements), _) => {
                        elements
                            .iter()
                            .any(|element| element == key.strip_prefix('_').unwrap_or(key))
                            || mandatory(key)
                    }
                    (None, Some(Summary::Data)) => key != "text",
                    (None, Some(Summary::Text)) => key == "text" || mandatory(key),
                    (None, Some(Summary::True)) => {
                        tsunagi_fhir_xml::is_summary_element(resource_type, key).unwrap_or(true)
                    }
                    _ => true,
                }
        };
        map.retain(|key, _| keep(key));
        // Mark the resource as incomplete (FHIR: SUBSETTED).
        if let Some(Value::Object(meta)) = map.get_mut("meta") {
            let tags = meta
                .entry("tag")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(tags) = tags {
                tags.push(serde_json::json!({
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                    "code": "SUBSETTED"
                }));
            }
        }
    }
    tsunagi_fhir::json::write_resource(&value, out)
        .map_err(|error| ApiError::from(tsunagi_store::StoreError::Corrupt(error.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(1_700_000_000_000_000),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
    }

    #[test]
    fn http_dates_read_back() {
        for micros in [0, 1_700_000_000_000_000, 1_709_164_800_000_000] {
            assert_eq!(
                parse_http_date(&http_date(micros)),
                Some(micros / 1_000_000)
            );
        }
        for bad in [
            "",
            "Tue, 31 Feb 2023 22:13:20 GMT",
            "Tue, 14 Nov 2023 22:13:20 UTC",
            "Tuesday, 14-Nov-23 22:13:20 GMT",
            "Tue, 14 Nov 2023 24:00:00 GMT",
            "Tue, 14 Nov 2023 22:13 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }
}
