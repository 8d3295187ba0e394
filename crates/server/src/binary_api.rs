//! `GET [base]/Binary/[id]`: a document's bytes, read as any resource is — the caller's access
//! (hidden is 404, as absent), the audit naming the patient whose compartment it is in — then
//! answered in the form asked for:
//! - a FHIR media type first in `Accept`, or `_format`: the Binary resource, its `data` the
//!   stored bytes in base64;
//! - otherwise (its own type, `*/*`, no `Accept`): the bytes exactly as the source wrote them,
//!   with their `Content-Type`, `ETag`, `Last-Modified` and `Accept-Ranges: bytes`; one range
//!   (`bytes=a-b`, `a-`, `-n`) is answered 206 with `Content-Range`, one past the end 416. The
//!   bytes are streamed from the store part by part ([`tsunagi_store::Store::blob_part`]), never
//!   held whole, never compressed on the way; they are served inert
//!   (`Content-Security-Policy: sandbox`, `nosniff`): a document is never a page of this origin.
//!
//! A vread of a Binary answers the same way, for that version.
//!
//! A Binary whose bytes are not stored apart (no `urn:tsunagi:sha256` tag) is served as stored.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body_util::channel::Channel;
use serde_json::Value;
use tracing::Instrument;
use tsunagi_store::{Store, StoredResource};

use crate::{
    AppState,
    outcome::ApiError,
    read_api::{Reduction, etag, http_date, not_modified, resource_response},
    request::json_response,
};

/// Marks a response carrying a document's bytes as stored: never compressed on the way out, so
/// that its length and ranges are those of the stored bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsStored;

/// Media types that ask for the Binary resource rather than its content.
const FHIR_TYPES: &[&str] = &[
    "json",
    "xml",
    "application/fhir+json",
    "application/json+fhir",
    "application/json",
    "application/fhir+xml",
    "application/xml+fhir",
    "application/xml",
];

/// Whether the caller asked for the resource (`_format`, or a FHIR type ranked first).
fn wants_resource(headers: &HeaderMap, pairs: &[(String, String)]) -> bool {
    if pairs.iter().any(|(name, _)| name == "_format") {
        return true;
    }
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut ranges: Vec<(String, f32)> = accept
        .split(',')
        .map(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, value)| value.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (media, q)
        })
        .filter(|(_, q)| *q > 0.0)
        .collect();
    ranges.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranges
        .first()
        .is_some_and(|(media, _)| FHIR_TYPES.contains(&media.as_str()))
}

/// One byte range of `length` bytes: `Ok(None)` for none (or one we do not serve: several
/// ranges, another unit), `Err(())` for one that cannot be satisfied.
fn range(headers: &HeaderMap, length: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(text) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let parse = |n: &str| n.trim().parse::<u64>().ok();
    let (start, end) = match (first.trim().is_empty(), last.trim().is_empty()) {
        // The last n bytes.
        (true, false) => match parse(last) {
            Some(0) | None => return Err(()),
            Some(n) => (length.saturating_sub(n), length.saturating_sub(1)),
        },
        (false, true) => match parse(first) {
            Some(start) => (start, length.saturating_sub(1)),
            None => return Ok(None),
        },
        (false, false) => match (parse(first), parse(last)) {
            (Some(start), Some(end)) if start <= end => (start, end.min(length.saturating_sub(1))),
            _ => return Ok(None),
        },
        (true, true) => return Ok(None),
    };
    if length == 0 || start >= length {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// The bytes `from..to` of the content under `hash`, read part by part as the client takes
/// them: one part is held at a time, the database connection only while a part is read (a slow
/// client pins no connection), and a client that goes away stops the reading. A part missing or
/// unreadable midway ends the body with an error: the client sees a short, failed transfer,
/// never a wrong one.
fn stream(store: Arc<dyn Store>, id: &str, hash: [u8; 32], from: u64, to: u64) -> Body {
    let (mut sender, body) = Channel::<Bytes, std::io::Error>::new(1);
    // The request's span (its id in every log line), and the Binary named.
    let span = tracing::info_span!(parent: tracing::Span::current(), "binary", id = %id);
    let reading = async move {
        let mut at = from;
        while at < to {
            let (first, bytes) = match store.blob_part(&hash, at).await {
                Ok(Some((first, bytes))) if first <= at && first + bytes.len() as u64 > at => {
                    (first, bytes)
                }
                Ok(_) => {
                    tracing::error!(at, "the stored bytes lack the part holding byte {at}");
                    sender.abort(std::io::Error::other("a stored part is missing"));
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "reading a stored document");
                    sender.abort(std::io::Error::other("the document could not be read"));
                    return;
                }
            };
            let length = bytes.len();
            let skip = usize::try_from(at - first).unwrap_or(length);
            let take = usize::try_from(to - first).map_or(length, |end| end.min(length));
            let chunk = Bytes::from(bytes).slice(skip..take.max(skip));
            at = first + take as u64;
            if sender.send_data(chunk).await.is_err() {
                return; // The client went away.
            }
        }
    };
    tokio::spawn(reading.instrument(span));
    Body::new(body)
}

/// Answers a read of `Binary/<id>` whose current version is `resource`.
pub(crate) async fn respond(
    state: &AppState,
    resource: &StoredResource,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    reduction: &Reduction,
) -> Result<Response, ApiError> {
    let json: Value = resource
        .content
        .as_deref()
        .and_then(|content| serde_json::from_slice(content).ok())
        .unwrap_or(Value::Null);
    let Some(hash) = tsunagi_store::stored_bytes_of(&json) else {
        return resource_response(resource, headers, reduction);
    };
    // A document's bytes outside every patient's record would be visible to everyone: never
    // serve them so (fail closed; the store files a tagged Binary in its patient's record).
    if resource.patient.is_none() {
        return Err(ApiError::not_found(format!(
            "Binary/{} is not known",
            resource.id
        )));
    }
    if not_modified(resource, headers) {
        return resource_response(resource, headers, reduction);
    }
    let missing = || {
        ApiError::internal(format!(
            "Binary/{}: its stored bytes are missing",
            resource.id
        ))
    };
    let tag = etag(resource.version);
    if wants_resource(headers, pairs) {
        let bytes = state.store.blob(&hash).await?.ok_or_else(missing)?;
        let mut json = json;
        json["data"] = Value::String(tsunagi_core::base64::encode(&bytes));
        json["meta"]["versionId"] = Value::String(resource.version.to_string());
        json["meta"]["lastUpdated"] = Value::String(tsunagi_core::time::format_instant_jst(
            resource.last_updated,
        ));
        let body = serde_json::to_vec(&json)
            .map_err(|error| ApiError::internal(format!("Binary JSON: {error}")))?;
        let mut response = json_response(StatusCode::OK, body);
        set(&mut response, header::ETAG, &tag);
        set(
            &mut response,
            header::LAST_MODIFIED,
            &http_date(resource.last_updated),
        );
        return Ok(response);
    }
    let length = state.store.blob_size(&hash).await?.ok_or_else(missing)?;
    let content_type = json["contentType"]
        .as_str()
        .unwrap_or("application/octet-stream")
        .to_owned();
    // If-Range naming another version: the whole content.
    let if_range_stale = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|value| value.trim_start_matches("W/") != tag.trim_start_matches("W/"));
    let chosen = if if_range_stale {
        None
    } else {
        match range(headers, length) {
            Ok(chosen) => chosen,
            Err(()) => {
                let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                set(
                    &mut response,
                    header::CONTENT_RANGE,
                    &format!("bytes */{length}"),
                );
                return Ok(response);
            }
        }
    };
    let (status, from, to) = match chosen {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        None => (StatusCode::OK, 0, length),
    };
    let mut response = (
        status,
        stream(state.store.clone(), &resource.id, hash, from, to),
    )
        .into_response();
    if let Some((start, end)) = chosen {
        set(
            &mut response,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{end}/{length}"),
        );
    }
    set(
        &mut response,
        header::CONTENT_LENGTH,
        &(to - from).to_string(),
    );
    response.extensions_mut().insert(AsStored);
    set(&mut response, header::CONTENT_TYPE, &content_type);
    set(&mut response, header::ETAG, &tag);
    set(
        &mut response,
        header::LAST_MODIFIED,
        &http_date(resource.last_updated),
    );
    set(&mut response, header::ACCEPT_RANGES, "bytes");
    set(&mut response, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(&mut response, header::CONTENT_SECURITY_POLICY, "sandbox");
    private(&mut response);
    Ok(response)
}

/// A patient's document: kept by no shared cache, and one URL answers two forms.
fn private(response: &mut Response) {
    set(response, header::CACHE_CONTROL, "private, no-store");
    set(response, header::VARY, "Accept");
}

fn set(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn ranges_are_read_as_rfc_7233_says() {
        let r = |value: &str| range(&with(header::RANGE, value), 100);
        assert_eq!(r("bytes=0-9"), Ok(Some((0, 9))));
        assert_eq!(r("bytes=90-"), Ok(Some((90, 99))));
        assert_eq!(r("bytes=-10"), Ok(Some((90, 99))));
        assert_eq!(r("bytes=95-200"), Ok(Some((95, 99))));
        assert_eq!(r("bytes=100-"), Err(()));
        assert_eq!(r("bytes=-0"), Err(()));
        assert_eq!(r("bytes=0-1,5-6"), Ok(None), "several ranges: the whole");
        assert_eq!(r("lines=1-2"), Ok(None));
        assert_eq!(r("bytes=9-2"), Ok(None));
        assert_eq!(range(&HeaderMap::new(), 100), Ok(None));
    }

    #[test]
    fn the_resource_is_given_only_to_who_asks_for_fhir() {
        let accept = |value: &str| wants_resource(&with(header::ACCEPT, value), &[]);
        assert!(accept("application/fhir+json"));
        assert!(accept("application/pdf;q=0.5, application/fhir+xml"));
        assert!(!accept("application/pdf"));
        assert!(!accept("*/*"));
        assert!(!accept("application/pdf, application/fhir+json;q=0.1"));
        assert!(!wants_resource(&HeaderMap::new(), &[]));
        assert!(wants_resource(
            &HeaderMap::new(),
            &[("_format".into(), "json".into())]
        ));
    }
}
