//! `POST /fhir` with a `batch` Bundle: each entry is sent through the router as a request of
//! its own — authenticated with the caller's token, authorised, answered and audited exactly
//! as if the client had sent it alone — and its answer becomes the entry's `response`.
//!
//! So no rule about who sees what is restated here: a read in a batch passes the same guard,
//! consent filter and audit as the same read on its own. A lab's result (DiagnosticReport,
//! Observation, Specimen) POSTed or conditionally PUT in a batch goes as a one-entry
//! transaction ([`crate::transaction_api`]); entries are independent, as FHIR defines a batch.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header},
    response::Response,
};
use serde_json::{Value, json};
use tower_service::Service;

use crate::{AppState, json_response, outcome::ApiError, tls::Peer};

/// Most entries in one batch.
pub(crate) const MAX_ENTRIES: usize = 200;

/// Most bytes of answers one batch holds in all: entries past it are answered `too-costly`
/// without being run, so one request cannot make the server hold more.
pub(crate) const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Request headers passed on to every entry: who is asking, and the base URL they used.
const PASSED_ON: &[&str] = &[
    "authorization",
    "host",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

/// The types a lab posts in a transaction; in a batch each goes as a one-entry transaction.
const LAB_RESULT_TYPES: &[&str] = &["DiagnosticReport", "Observation", "Specimen"];

/// The caller's request, as every entry passes it on.
pub(crate) struct Outer<'a> {
    pub(crate) headers: &'a HeaderMap,
    pub(crate) peer: Option<ConnectInfo<Peer>>,
    pub(crate) request_id: Option<String>,
}

/// `POST /fhir` with `Bundle.type = batch`.
pub(crate) async fn post(
    state: &Arc<AppState>,
    outer: &Outer<'_>,
    bundle: &Value,
) -> Result<Response, ApiError> {
    let entries = bundle["entry"].as_array().map_or(&[][..], Vec::as_slice);
    if entries.len() > MAX_ENTRIES {
        return Err(ApiError::unprocessable(format!(
            "a batch takes at most {MAX_ENTRIES} entries; this one has {}",
            entries.len()
        )));
    }
    let router = crate::router(state.clone());
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(br#"{"resourceType":"Bundle","type":"batch-response""#);
    let mut held = 0usize;
    for (index, entry) in entries.iter().enumerate() {
        out.extend_from_slice(if index == 0 { b",\"entry\":[" } else { b"," });
        let answer = if held >= MAX_ANSWER_BYTES {
            refused_answer(
                StatusCode::INSUFFICIENT_STORAGE,
                "too-costly",
                &format!(
                    "not run: the answers before it reached the batch's limit of {MAX_ANSWER_BYTES} bytes; send it again in a batch of its own"
                ),
            )
        } else {
            match entry_request(entry, index, outer) {
                Ok((request, as_transaction)) => match router.clone().call(request).await {
                    Ok(response) => {
                        entry_answer(response, as_transaction, MAX_ANSWER_BYTES - held).await
                    }
                    Err(never) => match never {},
                },
                Err(error) => refused_answer(error.status, error.code, &error.message),
            }
        };
        held += answer.len();
        out.extend_from_slice(&answer);
    }
    if !entries.is_empty() {
        out.push(b']');
    }
    out.push(b'}');
    Ok(json_response(StatusCode::OK, out))
}

/// The request one entry stands for, and whether it goes as a one-entry transaction.
fn entry_request(
    entry: &Value,
    index: usize,
    outer: &Outer<'_>,
) -> Result<(Request<Body>, bool), ApiError> {
    let place = format!("entry[{index}]");
    let request = &entry["request"];
    let method = request["method"]
        .as_str()
        .and_then(|method| Method::from_bytes(method.as_bytes()).ok())
        .filter(|method| [Method::GET, Method::POST, Method::PUT, Method::DELETE].contains(method))
        .ok_or_else(|| {
            ApiError::bad_request(
                "required",
                format!("{place}: request.method must be GET, POST, PUT or DELETE"),
            )
        })?;
    let url = request["url"].as_str().unwrap_or("").trim();
    // A relative URL under the base: `Patient/p1`, `Observation?code=…`.
    let relative = url.trim_start_matches('/');
    let relative = relative.strip_prefix("fhir/").unwrap_or(relative);
    let (path, query) = relative.split_once('?').unwrap_or((relative, ""));
    if path.is_empty()
        || url.contains("://")
        || path.contains('#')
        || path
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(ApiError::bad_request(
            "invalid",
            format!(
                "{place}: request.url {url:?} must be relative to the base, e.g. Patient/p1 or Observation?code=…"
            ),
        ));
    }
    // The batch answers in JSON as a whole: an entry's own format parameters are dropped.
    let query: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            !pair.is_empty() && name != "_format" && name != "_pretty"
        })
        .collect();
    let target = if query.is_empty() {
        format!("/fhir/{path}")
    } else {
        format!("/fhir/{path}?{}", query.join("&"))
    };
    let resource = &entry["resource"];
    let resource_type = resource["resourceType"].as_str().unwrap_or("");
    let as_transaction =
        matches!(method, Method::POST | Method::PUT) && LAB_RESULT_TYPES.contains(&resource_type);
    let (target, method, body) = if as_transaction {
        let mut single = entry.clone();
        if let Value::Object(fields) = &mut single {
            fields.remove("response");
        }
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [single]});
        ("/fhir".to_owned(), Method::POST, Some(bundle))
    } else {
        let body = (!resource.is_null()).then(|| resource.clone());
        (target, method, body)
    };
    let mut builder = Request::builder().method(method).uri(&target);
    for name in PASSED_ON {
        for value in outer.headers.get_all(*name) {
            builder = builder.header(*name, value.clone());
        }
    }
    builder = builder.header(header::ACCEPT, "application/fhir+json");
    if let Some(id) = &outer.request_id {
        builder = builder.header(crate::access::REQUEST_ID, format!("{id}.{index}"));
    }
    for (field, name) in [
        ("ifNoneMatch", header::IF_NONE_MATCH),
        ("ifMatch", header::IF_MATCH),
        ("ifNoneExist", HeaderName::from_static("if-none-exist")),
    ] {
        if let Some(value) = request[field].as_str()
            && let Ok(value) = HeaderValue::from_str(value)
        {
            builder = builder.header(name, value);
        }
    }
    // In a Bundle, ifModifiedSince is a FHIR instant; in HTTP, a date.
    if let Some(instant) = request["ifModifiedSince"].as_str() {
        let (seconds, _) = tsunagi_core::time::fhir_date_range(instant).ok_or_else(|| {
            ApiError::bad_request(
                "invalid",
                format!("{place}: request.ifModifiedSince {instant:?} is not an instant"),
            )
        })?;
        builder = builder.header(
            header::IF_MODIFIED_SINCE,
            crate::read_api::http_date(seconds.saturating_mul(1_000_000)),
        );
    }
    if let Some(prefer) = outer.headers.get("prefer") {
        builder = builder.header("prefer", prefer.clone());
    }
    let body = match body {
        Some(body) => {
            builder = builder.header(header::CONTENT_TYPE, "application/fhir+json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let mut request = builder
        .body(body)
        .map_err(|error| ApiError::bad_request("invalid", format!("{place}: {error}")))?;
    if let Some(peer) = outer.peer.clone() {
        request.extensions_mut().insert(peer);
    }
    Ok((request, as_transaction))
}

/// The `Bundle.entry` (JSON bytes) of a batch-response from the answer to an entry's request;
/// the resource is copied as the entry's request answered it, never parsed into a tree.
async fn entry_answer(response: Response, as_transaction: bool, room: usize) -> Vec<u8> {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, room).await else {
        return refused_answer(
            StatusCode::INSUFFICIENT_STORAGE,
            "too-costly",
            &format!(
                "the answer did not fit in what is left of the batch's {MAX_ANSWER_BYTES} bytes; send it again on its own"
            ),
        );
    };
    // A one-entry transaction answers with a transaction-response: the entry's own answer.
    if as_transaction
        && let Ok(bundle) = serde_json::from_slice::<Value>(&bytes)
        && bundle["type"] == "transaction-response"
        && let Some(inner) = bundle["entry"].get(0)
    {
        return inner.to_string().into_bytes();
    }
    let mut answer = json!({"status": status_line(parts.status)});
    for (name, field) in [
        (header::LOCATION, "location"),
        (header::ETAG, "etag"),
        (header::LAST_MODIFIED, "lastModified"),
    ] {
        if let Some(value) = parts.headers.get(&name).and_then(|v| v.to_str().ok()) {
            answer[field] = json!(value);
        }
    }
    if let Some(text) = answer["lastModified"].as_str() {
        match crate::read_api::http_date_to_instant(text) {
            Some(instant) => answer["lastModified"] = json!(instant),
            None => {
                if let Value::Object(fields) = &mut answer {
                    fields.remove("lastModified");
                }
            }
        }
    }
    // The handlers write compact JSON that starts with its resourceType.
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("json"));
    // Resources and Bundles are written resourceType first; an OperationOutcome may not be
    // (it is small, so it is read to tell).
    let (bytes, outcome) = if !is_json || bytes.starts_with(br#"{"resourceType":"#) {
        let outcome = bytes.starts_with(br#"{"resourceType":"OperationOutcome""#);
        (bytes.to_vec(), outcome)
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) if value["resourceType"].is_string() => {
                let outcome = value["resourceType"] == "OperationOutcome";
                let mut written = Vec::with_capacity(bytes.len());
                match tsunagi_fhir::json::write_resource(&value, &mut written) {
                    Ok(()) => (written, outcome),
                    Err(_) => (Vec::new(), false),
                }
            }
            _ => (Vec::new(), false),
        }
    };
    let mut out = Vec::with_capacity(bytes.len() + 256);
    out.push(b'{');
    if is_json && bytes.starts_with(br#"{"resourceType":"#) {
        if outcome {
            out.extend_from_slice(b"\"response\":");
            let mut response = answer.to_string().into_bytes();
            // Splice the outcome into the response object: `{…,"outcome":<bytes>}`.
            response.pop();
            out.extend_from_slice(&response);
            out.extend_from_slice(b",\"outcome\":");
            out.extend_from_slice(&bytes);
            out.extend_from_slice(b"}}");
            return out;
        }
        out.extend_from_slice(b"\"resource\":");
        out.extend_from_slice(&bytes);
        out.push(b',');
    }
    out.extend_from_slice(b"\"response\":");
    out.extend_from_slice(answer.to_string().as_bytes());
    out.push(b'}');
    out
}

/// The entry of a request refused before it was run.
fn refused_answer(status: StatusCode, code: &str, message: &str) -> Vec<u8> {
    json!({"response": {
        "status": status_line(status),
        "outcome": crate::outcome::outcome("error", code, message),
    }})
    .to_string()
    .into_bytes()
}

/// `404 Not Found`.
fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}
