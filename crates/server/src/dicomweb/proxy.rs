//! Forwarding to a hospital's PACS: one pooled HTTP/1.1 client for every PACS, the PACS's own
//! `Authorization` (never the caller's token), a bounded number of requests in flight per PACS,
//! a time limit on the PACS's answer to begin, and its failures turned into answers a client
//! can act on — unreachable or garbled 502, late 504, busy 503, a 404 of its own 404. The
//! answer is relayed ([`super::relay`]) with its media type and length, never compressed.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body_util::Empty;
use hyper::{Request, Uri, body::Bytes};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::Semaphore;

use super::relay::{Relay, Rewrite};
use crate::outcome::ApiError;

/// A hospital's PACS the gateway forwards to.
#[derive(Debug, Clone)]
pub struct Pacs {
    facility: String,
    base: String,
    authorization: Option<String>,
    timeout: Duration,
}

impl Pacs {
    /// The PACS of `facility` at `url` (its DICOMweb base, `http://…`), sent `authorization`
    /// as its `Authorization` header, beginning each answer within `timeout` and never pausing
    /// longer within one.
    pub fn new(
        facility: &str,
        url: &str,
        authorization: Option<String>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|error| format!("{url:?} is not a URL: {error}"))?;
        match uri.scheme_str() {
            Some("http") if uri.host().is_some() => {}
            Some("https") => {
                return Err(format!(
                    "{url}: TLS to a PACS is not supported yet; reach it over a TLS-terminating \
                     proxy on the gateway's host, or a trusted network"
                ));
            }
            _ => return Err(format!("{url}: the DICOMweb base URL must be http://host…")),
        }
        if let Some(value) = &authorization
            && HeaderValue::from_str(value).is_err()
        {
            return Err(format!(
                "the Authorization of the PACS of {facility} is not a valid header value"
            ));
        }
        Ok(Self {
            facility: facility.to_owned(),
            base: url.trim_end_matches('/').to_owned(),
            authorization,
            timeout,
        })
    }
}

/// The DICOMweb proxy's settings.
#[derive(Debug, Clone)]
pub struct DicomWebSettings {
    /// The PACS of each hospital whose images are opened through the gateway.
    pub pacs: Vec<Pacs>,
    /// The largest answer relayed, in bytes.
    pub max_answer_bytes: u64,
    /// Requests forwarded to one PACS at once; more wait (up to its timeout), then get 503.
    pub max_in_flight: usize,
}

impl Default for DicomWebSettings {
    fn default() -> Self {
        Self {
            pacs: Vec::new(),
            max_answer_bytes: 8 * 1024 * 1024 * 1024,
            max_in_flight: 64,
        }
    }
}

/// One PACS as the proxy holds it.
struct Target {
    pacs: Pacs,
    authorization: Option<HeaderValue>,
    slots: Arc<Semaphore>,
}

/// What is asked of a PACS.
pub(crate) struct Forward<'a> {
    /// The hospital.
    pub(crate) facility: &'a str,
    /// The path below the PACS's base (`studies/…`) and its query (`?…` or empty).
    pub(crate) path: String,
    /// The client's `Accept`, when it is one worth passing.
    pub(crate) accept: Option<HeaderValue>,
    /// What kind of answer is expected (`multipart/related`, `image/`, `application/dicom+json`…).
    pub(crate) expect: &'a [&'a str],
    /// The gateway's DICOMweb base, put where the PACS names its own (metadata answers).
    pub(crate) rewrite_to: Option<String>,
}

/// Forwards requests to the configured PACSes.
pub(crate) struct Proxy {
    targets: HashMap<String, Target>,
    client: Client<HttpConnector, Empty<Bytes>>,
    max_answer_bytes: u64,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("pacs", &self.targets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A request that failed before any answer began is sent again this many times (a kept-alive
/// connection the PACS closed just as it was reused).
const RETRIES: u32 = 2;

impl Proxy {
    pub(crate) fn new(settings: &DicomWebSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        let targets = settings
            .pacs
            .iter()
            .map(|pacs| {
                let target = Target {
                    authorization: pacs
                        .authorization
                        .as_deref()
                        .and_then(|value| HeaderValue::from_str(value).ok())
                        .map(|mut value| {
                            value.set_sensitive(true);
                            value
                        }),
                    slots: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
                    pacs: pacs.clone(),
                };
                (pacs.facility.clone(), target)
            })
            .collect();
        Self {
            targets,
            client,
            max_answer_bytes: settings.max_answer_bytes,
        }
    }

    /// Whether the images of `facility` can be opened through the gateway.
    pub(crate) fn knows(&self, facility: &str) -> bool {
        self.targets.contains_key(facility)
    }

    /// Forwards one GET and relays the answer.
    pub(crate) async fn forward(&self, ask: Forward<'_>) -> Result<Response, ApiError> {
        let facility = ask.facility;
        let target = self.targets.get(facility).ok_or_else(|| {
            ApiError::not_found(format!(
                "the images of {facility} cannot be opened through this gateway"
            ))
        })?;
        let timeout = target.pacs.timeout;
        let slot = tokio::time::timeout(timeout, target.slots.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                ApiError::busy(format!(
                    "the image archive of {facility} is busy with other requests; try again"
                ))
            })?;
        let url = format!("{}/{}", target.pacs.base, ask.path);
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        let response = loop {
            let mut request = Request::get(&url);
            if let Some(accept) = &ask.accept {
                request = request.header(header::ACCEPT, accept.clone());
            }
            if let Some(authorization) = &target.authorization {
                request = request.header(header::AUTHORIZATION, authorization.clone());
            }
            let request = request
                .body(Empty::<Bytes>::new())
                .map_err(|error| ApiError::internal(format!("the PACS request: {error}")))?;
            let left = timeout.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, self.client.request(request)).await {
                Ok(Ok(response)) => break response,
                Ok(Err(error)) if attempt < RETRIES => {
                    tracing::debug!(target: "tsunagi::dicomweb", %error, attempt, "sent again");
                    attempt += 1;
                }
                Ok(Err(error)) => {
                    tracing::warn!(target: "tsunagi::dicomweb", facility, %error, "the PACS cannot be reached");
                    return Err(ApiError::bad_gateway(format!(
                        "the image archive of {facility} cannot be reached"
                    )));
                }
                Err(_) => {
                    tracing::warn!(target: "tsunagi::dicomweb", facility, "the PACS did not answer in time");
                    return Err(ApiError::gateway_timeout(format!(
                        "the image archive of {facility} did not answer within {} s",
                        timeout.as_secs()
                    )));
                }
            }
        };
        let status = response.status();
        if !status.is_success() {
            tracing::warn!(target: "tsunagi::dicomweb", facility, status = status.as_u16(), "the PACS refused");
            return Err(match status {
                StatusCode::NOT_FOUND => ApiError::not_found(format!(
                    "the image archive of {facility} has no such object"
                )),
                StatusCode::NOT_ACCEPTABLE => ApiError::not_acceptable(format!(
                    "the image archive of {facility} cannot answer in the media type asked for"
                )),
                StatusCode::BAD_REQUEST => ApiError::bad_request(
                    "invalid",
                    format!("the image archive of {facility} refused the request as malformed"),
                ),
                other => ApiError::bad_gateway(format!(
                    "the image archive of {facility} answered {}",
                    other.as_u16()
                )),
            });
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let kind = content_type.to_ascii_lowercase();
        if status != StatusCode::NO_CONTENT
            && !ask.expect.iter().any(|expected| kind.starts_with(expected))
        {
            tracing::warn!(target: "tsunagi::dicomweb", facility, content_type, "the PACS answered another media type");
            return Err(ApiError::bad_gateway(format!(
                "the image archive of {facility} answered {}, not {}",
                if content_type.is_empty() {
                    "without a media type"
                } else {
                    content_type.as_str()
                },
                ask.expect.join(" or ")
            )));
        }
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if length.is_some_and(|length| length > self.max_answer_bytes) {
            return Err(ApiError::bad_gateway(format!(
                "the image archive of {facility} answered more than the gateway relays ({} bytes)",
                self.max_answer_bytes
            )));
        }
        let rewrite = ask
            .rewrite_to
            .as_deref()
            .and_then(|to| Rewrite::new(&target.pacs.base, to));
        let rewriting = rewrite.is_some();
        let body = Relay::new(
            response.into_body(),
            // The PACS's time limit holds for each pause within its answer too.
            timeout,
            self.max_answer_bytes,
            rewrite,
            slot,
        );
        let mut answer = (status, Body::new(body)).into_response();
        let headers = answer.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&content_type) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        if let (Some(length), false) = (length, rewriting) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
        // Relayed as the PACS sent it: never compressed on the way (images are, and the
        // length is the PACS's).
        answer.extensions_mut().insert(crate::binary_api::AsStored);
        Ok(answer)
    }
}
