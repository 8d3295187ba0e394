//! What every request is held to before a handler sees it, and the one rule for what an error
//! looks like on the wire (issue 17 §2, §5).
//!
//! [`bounded`]: the target at most [`MAX_URI_BYTES`] (414), the head at most [`MAX_HEADERS`]
//! fields and [`MAX_HEAD_BYTES`] (431), the body at most `max_body_bytes` (413, refused from its
//! `Content-Length` before it is read, or while it is read when chunked) and entirely arrived
//! within `body_read_timeout` (408). A request refused for its body closes its connection. The
//! API's bodies are read only behind the token guard ([`collect_body`]); an endpoint open to
//! all takes at most [`PUBLIC_BODY_BYTES`], so no one without a token can make the server
//! hold more than that per connection.
//!
//! [`ensure_outcome`]: every answer of status 400 or more is an OperationOutcome, whoever made
//! it — a handler, an extractor's rejection (a path that is not UTF-8), the router (a method
//! a route does not take), these limits — unless it has a wire form of its own ([`OwnForm`]:
//! the OAuth token endpoint's errors). It runs inside content negotiation, so the outcome is
//! written in JSON or XML as the client asked.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::{
    AppState,
    outcome::{ApiError, FHIR_JSON},
};

/// The longest request target, in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Header fields of one request.
pub const MAX_HEADERS: usize = 100;
/// Bytes of all header fields of one request.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Marks an error response whose wire form is not an OperationOutcome by design.
#[derive(Debug, Clone, Copy)]
pub struct OwnForm;

fn refuse(status: StatusCode, code: &'static str, message: String, close: bool) -> Response {
    let mut response = ApiError {
        status,
        code,
        message,
        findings: Vec::new(),
    }
    .into_response();
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Middleware: the request's target, head and body within their limits.
pub async fn bounded(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let limits = &state.settings.limits;
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > MAX_URI_BYTES {
        return refuse(
            StatusCode::URI_TOO_LONG,
            "too-long",
            format!(
                "the request target has {target} bytes; at most {MAX_URI_BYTES} (use POST _search for long searches)"
            ),
            false,
        );
    }
    let headers = request.headers();
    let head: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || head > MAX_HEAD_BYTES {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too-long",
            format!(
                "{} header fields of {head} bytes; at most {MAX_HEADERS} fields and {MAX_HEAD_BYTES} bytes",
                headers.len()
            ),
            false,
        );
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    // A body is read into memory only once it may be: behind the token guard for the API
    // ([`collect_body`]), small for the public endpoints (the token form).
    let behind_guard = behind_guard(request.uri().path());
    let cap = if behind_guard {
        limits.max_body_bytes
    } else {
        PUBLIC_BODY_BYTES
    };
    if declared.is_some_and(|length| length > cap as u64) {
        return too_large(cap);
    }
    if behind_guard {
        return next.run(request).await;
    }
    match collect(request, cap, limits.body_read_timeout).await {
        Ok(request) => next.run(request).await,
        Err(refused) => refused,
    }
}

/// Middleware inside the token guard: the request's body read into memory, within
/// `max_body_bytes` and `body_read_timeout`, only for a caller whose token stands.
pub async fn collect_body(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let limits = &state.settings.limits;
    match collect(request, limits.max_body_bytes, limits.body_read_timeout).await {
        Ok(request) => next.run(request).await,
        Err(refused) => refused,
    }
}

/// The largest body of an endpoint anyone may call without a token (the token request form).
pub const PUBLIC_BODY_BYTES: usize = 64 * 1024;

/// Whether `path` is served behind the token guard (its body is read only after the guard).
fn behind_guard(path: &str) -> bool {
    // The base itself takes a POST (transaction or batch) behind the guard; its GET is public
    // and has no body.
    const PUBLIC: &[&str] = &["/fhir/metadata", "/fhir/.well-known/smart-configuration"];
    path == "/hl7v2" || (path == "/fhir" || path.starts_with("/fhir/")) && !PUBLIC.contains(&path)
}

fn too_large(cap: usize) -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-costly",
        format!("the body is larger than {cap} bytes (limit max_body_bytes)"),
        true,
    )
}

/// Reads the whole body of `request` within `cap` bytes and `deadline` (nothing to do for a
/// request without one, most of them).
async fn collect(request: Request, cap: usize, deadline: Duration) -> Result<Request, Response> {
    if axum::body::HttpBody::is_end_stream(request.body()) {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let limited = Limited::new(body, cap);
    match tokio::time::timeout(deadline, limited.collect()).await {
        Ok(Ok(collected)) => Ok(Request::from_parts(parts, Body::from(collected.to_bytes()))),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(cap)),
        Ok(Err(_)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "incomplete",
            "the request body could not be read to its end".to_owned(),
            true,
        )),
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request body did not arrive within {} s (limit body_read_timeout)",
                deadline.as_secs()
            ),
            true,
        )),
    }
}

/// The OperationOutcome issue code for an HTTP status.
fn issue_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "login",
        403 => "forbidden",
        404 => "not-found",
        405 | 406 | 415 | 501 => "not-supported",
        408 | 504 => "timeout",
        409 | 412 => "conflict",
        410 => "deleted",
        411 => "required",
        413 => "too-costly",
        414 | 431 => "too-long",
        422 => "processing",
        429 => "throttled",
        502 | 503 => "transient",
        500..=599 => "exception",
        _ => "invalid",
    }
}

/// Middleware: an error answer that is not already FHIR becomes an OperationOutcome with the
/// same status and headers (`Allow`, `WWW-Authenticate`, `Retry-After` are kept); the text a
/// lower layer gave becomes its diagnostics.
pub async fn ensure_outcome(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_fhir = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes() == FHIR_JSON.as_bytes());
    if status.as_u16() < 400 || is_fhir || response.extensions().get::<OwnForm>().is_some() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let said = match tokio::time::timeout(
        Duration::from_secs(1),
        Limited::new(body, 2048).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        _ => String::new(),
    };
    let message = if said.is_empty() {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => format!(
                "this endpoint does not take {method}; the Allow header lists the methods it takes"
            ),
            other => other
                .canonical_reason()
                .unwrap_or("the request failed")
                .to_owned(),
        }
    } else {
        said
    };
    let outcome = ApiError {
        status,
        code: issue_code(status),
        message,
        findings: Vec::new(),
    }
    .into_response();
    let (outcome_parts, outcome_body) = outcome.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    if let Some(content_type) = outcome_parts.headers.get(header::CONTENT_TYPE) {
        parts
            .headers
            .insert(header::CONTENT_TYPE, content_type.clone());
    }
    Response::from_parts(parts, outcome_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_status_has_an_issue_code() {
        for (status, code) in [
            (400, "invalid"),
            (405, "not-supported"),
            (411, "required"),
            (413, "too-costly"),
            (414, "too-long"),
            (429, "throttled"),
            (431, "too-long"),
            (503, "transient"),
            (504, "timeout"),
            (599, "exception"),
        ] {
            assert_eq!(
                issue_code(StatusCode::from_u16(status).unwrap_or_default()),
                code
            );
        }
    }
}
