//! The answer to a write (create, update, a transaction's entry): `Location`, `ETag`,
//! `Last-Modified`, and the body the client's `Prefer: return=` asks for — the resource
//! (`representation`, the default), nothing (`minimal`) or an OperationOutcome.

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::Value;
use tsunagi_store::StoredResource;

use crate::{
    base_url, etag, json_response,
    outcome::{ApiError, outcome},
    read_api::http_date,
    request::preference,
};

/// What `Prefer: return=` asks a write to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Return {
    /// No body.
    Minimal,
    /// The resource as stored (the default).
    Representation,
    /// An OperationOutcome about the write.
    Outcome,
}

impl Return {
    /// The client's preference; anything else (or none) is `representation`.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        match preference(headers, "return") {
            Some(value) if value.eq_ignore_ascii_case("minimal") => Self::Minimal,
            Some(value) if value.eq_ignore_ascii_case("OperationOutcome") => Self::Outcome,
            _ => Self::Representation,
        }
    }
}

/// The OperationOutcome that says what a write did.
pub(crate) fn write_outcome(resource: &StoredResource, status: StatusCode) -> Value {
    let done = if status == StatusCode::CREATED {
        "created"
    } else {
        "stored"
    };
    outcome(
        "information",
        "informational",
        &format!(
            "{}/{} {done}, version {}",
            resource.resource_type, resource.id, resource.version
        ),
    )
}

/// The response to a write of `resource` (read back after the commit).
pub(crate) fn answer(
    configured_base: Option<&str>,
    headers: &HeaderMap,
    resource: &StoredResource,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let mut response = match Return::of(headers) {
        Return::Minimal => status.into_response(),
        Return::Representation => {
            let mut body = Vec::new();
            resource.write_json(&mut body)?;
            json_response(status, body)
        }
        Return::Outcome => {
            let mut body = Vec::new();
            tsunagi_fhir::json::write_resource(&write_outcome(resource, status), &mut body)
                .map_err(|error| ApiError::internal(error.to_string()))?;
            json_response(status, body)
        }
    };
    let base = base_url(configured_base, headers);
    let response_headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag(resource.version)) {
        response_headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&http_date(resource.last_updated)) {
        response_headers.insert(header::LAST_MODIFIED, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{base}/{}/{}/_history/{}",
        resource.resource_type, resource.id, resource.version
    )) {
        response_headers.insert(header::LOCATION, value);
    }
    Ok(response)
}
