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
    http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tower_service::Service;

use crate::{AppState, json_response, outcome::ApiError, tls::Peer};

/// Most entries in one batch.
pub(crate) const MAX_ENTRIES: usize = 1000;

/// Largest answer kept for one entry (a searchset page).
const MAX_ENTRY_ANSWER: usize = 64 * 1024 * 1024;

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

/// `POST /fhir` with `Bundle.type = batch`.
pub(crate) async fn post(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    peer: Option<ConnectInfo<Peer>>,
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
    let mut answers = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let answer = match entry_request(entry, index, headers, peer.clone()) {
            Ok(request) => match router.clone().call(request).await {
                Ok(response) => entry_answer(response).await,
                Err(never) => match never {},
            },
            Err(error) => entry_answer(error.into_response()).await,
        };
        answers.push(answer);
    }
    let mut body = json!({"resourceType": "Bundle", "type": "batch-response"});
    if !answers.is_empty() {
        body["entry"] = Value::Array(answers);
    }
    let mut out = Vec::new();
    tsunagi_fhir::json::write_resource(&body, &mut out)
        .map_err(|error| ApiError::internal(error.to_string()))?;
    Ok(json_response(StatusCode::OK, out))
}

/// The request one entry stands for.
fn entry_request(
    entry: &Value,
    index: usize,
    headers: &HeaderMap,
    peer: Option<ConnectInfo<Peer>>,
) -> Result<Request<Body>, ApiError> {
    let place = format!("entry[{index}]");
    let request = &entry["request"];
    let method = request["method"]
        .as_str()
        .and_then(|method| Method::from_bytes(method.as_bytes()).ok())
        .filter(|method| {
            [
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::DELETE,
            ]
            .contains(method)
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "required",
                format!("{place}: request.method must be GET, HEAD, POST, PUT or DELETE"),
            )
        })?;
    let url = request["url"].as_str().unwrap_or("").trim();
    // A relative URL under the base: `Patient/p1`, `Observation?code=…`.
    let relative = url.trim_start_matches('/');
    let relative = relative.strip_prefix("fhir/").unwrap_or(relative);
    if relative.is_empty()
        || url.contains("://")
        || relative.starts_with('?')
        || relative.split(['?', '#']).next().is_some_and(|path| {
            path.split('/')
                .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        })
    {
        return Err(ApiError::bad_request(
            "invalid",
            format!(
                "{place}: request.url {url:?} must be relative to the base, e.g. Patient/p1 or Observation?code=…"
            ),
        ));
    }
    let resource = &entry["resource"];
    let resource_type = resource["resourceType"].as_str().unwrap_or("");
    let as_transaction =
        matches!(method, Method::POST | Method::PUT) && LAB_RESULT_TYPES.contains(&resource_type);
    let (path, body) = if as_transaction {
        let mut single = entry.clone();
        if let Value::Object(fields) = &mut single {
            fields.remove("response");
        }
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [single]});
        ("/fhir".to_owned(), Some(bundle))
    } else {
        let body = (!resource.is_null()).then(|| resource.clone());
        (format!("/fhir/{relative}"), body)
    };
    let method = if as_transaction { Method::POST } else { method };
    let mut builder = Request::builder().method(method).uri(&path);
    for name in PASSED_ON {
        for value in headers.get_all(*name) {
            builder = builder.header(*name, value.clone());
        }
    }
    builder = builder.header(header::ACCEPT, "application/fhir+json");
    for (field, name) in [
        ("ifNoneMatch", header::IF_NONE_MATCH),
        ("ifModifiedSince", header::IF_MODIFIED_SINCE),
        ("ifMatch", header::IF_MATCH),
    ] {
        if let Some(value) = request[field].as_str()
            && let Ok(value) = HeaderValue::from_str(value)
        {
            builder = builder.header(name, value);
        }
    }
    if let Some(prefer) = headers.get("prefer") {
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
    if let Some(peer) = peer {
        request.extensions_mut().insert(peer);
    }
    Ok(request)
}

/// A `Bundle.entry` of a batch-response from the answer to an entry's request.
async fn entry_answer(response: Response) -> Value {
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ENTRY_ANSWER).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return json!({"response": {
                "status": status_line(StatusCode::INTERNAL_SERVER_ERROR),
                "outcome": crate::outcome::outcome(
                    "error",
                    "too-costly",
                    "the entry's answer was too large to put in the batch response",
                ),
            }});
        }
    };
    let content: Option<Value> = serde_json::from_slice(&bytes).ok();
    // A one-entry transaction answers with a transaction-response: the entry's own answer.
    if let Some(bundle) = &content
        && bundle["type"] == "transaction-response"
        && let Some(inner) = bundle["entry"].get(0)
    {
        return inner.clone();
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
    if let Some(text) = answer["lastModified"].as_str()
        && let Some(instant) = crate::read_api::http_date_to_instant(text)
    {
        answer["lastModified"] = json!(instant);
    }
    let mut entry = json!({});
    match content {
        Some(resource) if resource["resourceType"] == "OperationOutcome" => {
            answer["outcome"] = resource;
        }
        Some(resource) if resource.get("resourceType").is_some() => {
            entry["resource"] = resource;
        }
        _ => {}
    }
    entry["response"] = answer;
    entry
}

/// `404 Not Found`.
fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}
