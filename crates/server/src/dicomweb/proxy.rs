//! Forwarding to a hospital's PACS: a pooled HTTP/1.1 client per PACS (TLS to an `https://`
//! PACS, trusting only the CA configured for it), the PACS's own
//! `Authorization` (never the caller's token), a bounded number of requests in flight per PACS
//! and per caller, a time limit on the PACS's answer to begin, on each pause within it and on
//! the whole answer, and its failures turned into answers a client can act on — unreachable or
//! garbled 502, late 504, busy 503, one caller's too many 429, a 404 of its own 404. An answer
//! is relayed ([`super::relay`]) with its media type, never compressed; metadata (DICOM JSON,
//! bounded) is read whole and its URLs made the gateway's. Before a study is first forwarded,
//! the PACS is asked whose it is ([`Proxy::verify`]): a study the PACS has since filed under
//! another patient is not served as the first one's.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Uri, body::Bytes};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;
use tokio::{sync::Semaphore, time::Instant};
use tsunagi_net::client::Connector;

use super::relay::{Limits, PartFilter, Relay, Slots};
use crate::outcome::ApiError;

/// A hospital's PACS the gateway forwards to.
#[derive(Debug, Clone)]
pub struct Pacs {
    facility: String,
    base: String,
    authorization: Option<String>,
    timeout: Duration,
    issuer: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
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
            Some("http" | "https") if uri.host().is_some() => {}
            _ => {
                return Err(format!(
                    "{url}: the DICOMweb base URL must be http://host… or https://host…"
                ));
            }
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
            issuer: None,
            tls: None,
        })
    }

    /// TLS to the PACS (an `https://` URL) trusting `tls`'s roots.
    #[must_use]
    pub fn with_tls(mut self, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        self.tls = tls;
        self
    }

    /// The PACS files the hospital's patients under this Issuer of Patient ID (0010,0021): a
    /// study it files under another is not the patient's.
    #[must_use]
    pub fn with_issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer.filter(|issuer| !issuer.trim().is_empty());
        self
    }
}

/// The DICOMweb proxy's settings.
#[derive(Debug, Clone)]
pub struct DicomWebSettings {
    /// The PACS of each hospital whose images are opened through the gateway.
    pub pacs: Vec<Pacs>,
    /// The largest answer relayed, in bytes.
    pub max_answer_bytes: u64,
    /// The longest an answer may take, from the request to its last byte.
    pub max_answer_time: Duration,
    /// Requests forwarded to one PACS at once; more wait (up to its timeout), then get 503.
    pub max_in_flight: usize,
    /// Requests of one caller (token subject and client) in flight to one PACS; more get 429.
    pub max_per_caller: usize,
}

impl Default for DicomWebSettings {
    fn default() -> Self {
        Self {
            pacs: Vec::new(),
            max_answer_bytes: 8 * 1024 * 1024 * 1024,
            max_answer_time: Duration::from_secs(600),
            max_in_flight: 64,
            max_per_caller: 8,
        }
    }
}

/// The largest metadata answer read (it is rewritten whole).
const MAX_METADATA_BYTES: u64 = 64 * 1024 * 1024;
/// How long a study's patient, as the PACS said, is trusted before it is asked again.
const VERIFIED_FOR: Duration = Duration::from_secs(60);
/// Studies whose patient is remembered at most (the oldest half forgotten beyond).
const MAX_VERIFIED: usize = 100_000;

/// One PACS as the proxy holds it.
struct Target {
    pacs: Pacs,
    authorization: Option<HeaderValue>,
    slots: Arc<Semaphore>,
    /// Pooled connections to it (plain, or TLS trusting its CA).
    client: Client<Connector, Empty<Bytes>>,
}

/// What is asked of a PACS.
pub(crate) struct Forward<'a> {
    /// The hospital.
    pub(crate) facility: &'a str,
    /// Who asks (their requests in flight are counted).
    pub(crate) caller: String,
    /// The path below the PACS's base (`studies/…`) and its query (`?…` or empty).
    pub(crate) path: String,
    /// The client's `Accept`, when it is one worth passing.
    pub(crate) accept: Option<HeaderValue>,
    /// What kind of answer is expected (`multipart/related`, `image/`, `application/dicom+json`…).
    pub(crate) expect: &'a [&'a str],
    /// For metadata: the gateway's DICOMweb base, put where the PACS names its own.
    pub(crate) metadata_base: Option<String>,
}

/// Counts one caller's requests in flight to one PACS; the count drops with it.
struct CallerSlot {
    counts: Arc<Mutex<HashMap<(String, String), usize>>>,
    key: (String, String),
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Forwards requests to the configured PACSes.
pub(crate) struct Proxy {
    targets: HashMap<String, Target>,
    settings: DicomWebSettings,
    callers: Arc<Mutex<HashMap<(String, String), usize>>>,
    /// (facility, study UID, the study's FHIR subject) the PACS confirmed, and when.
    verified: Mutex<HashMap<(String, String, String), Instant>>,
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

/// Makes a URL the PACS gave for an object the gateway's: its `/studies/…` part under `base`;
/// `None` for one that names no study.
fn gateway_url(url: &str, base: &str) -> Option<String> {
    let at = url.find("/studies/")?;
    Some(format!("{base}{}", &url[at..]))
}

/// Turns every `BulkDataURI` and Retrieve URL (0008,1190) of DICOM JSON into the gateway's;
/// one that names no study is dropped.
fn rewrite_urls(value: &mut Value, base: &str) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_urls(item, base)),
        Value::Object(map) => {
            if let Some(uri) = map.get("BulkDataURI").and_then(Value::as_str) {
                match gateway_url(uri, base) {
                    Some(url) => {
                        map.insert("BulkDataURI".to_owned(), Value::String(url));
                    }
                    None => {
                        map.remove("BulkDataURI");
                    }
                }
            }
            if let Some(Value::Array(urls)) = map
                .get_mut("00081190")
                .and_then(|attribute| attribute.get_mut("Value"))
            {
                urls.retain_mut(
                    |url| match url.as_str().and_then(|u| gateway_url(u, base)) {
                        Some(rewritten) => {
                            *url = Value::String(rewritten);
                            true
                        }
                        None => false,
                    },
                );
            }
            map.values_mut().for_each(|item| rewrite_urls(item, base));
        }
        _ => {}
    }
}

impl Proxy {
    pub(crate) fn new(settings: &DicomWebSettings) -> Self {
        let targets = settings
            .pacs
            .iter()
            .map(|pacs| {
                let connector = Connector::new(pacs.tls.clone(), Duration::from_secs(10));
                let client = Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .pool_max_idle_per_host(64)
                    .build(connector);
                let target = Target {
                    client,
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
            settings: settings.clone(),
            callers: Arc::default(),
            verified: Mutex::default(),
        }
    }

    /// Whether the images of `facility` can be opened through the gateway.
    pub(crate) fn knows(&self, facility: &str) -> bool {
        self.targets.contains_key(facility)
    }

    /// The facilities whose images can be opened.
    pub(crate) fn facilities(&self) -> Vec<&str> {
        let mut facilities: Vec<&str> = self.targets.keys().map(String::as_str).collect();
        facilities.sort_unstable();
        facilities
    }

    fn target(&self, facility: &str) -> Result<&Target, ApiError> {
        self.targets.get(facility).ok_or_else(|| {
            ApiError::not_found(format!(
                "the images of {facility} cannot be opened through this gateway"
            ))
        })
    }

    /// A place for `caller` among its requests to `facility`'s PACS, then among the PACS's.
    async fn slots(&self, facility: &str, caller: &str) -> Result<Slots, ApiError> {
        let target = self.target(facility)?;
        let key = (facility.to_owned(), caller.to_owned());
        {
            let mut counts = self
                .callers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = counts.entry(key.clone()).or_insert(0);
            if *count >= self.settings.max_per_caller.max(1) {
                return Err(ApiError::too_many(format!(
                    "{} image requests of yours to {facility} are in flight; wait for one to finish",
                    self.settings.max_per_caller
                )));
            }
            *count += 1;
        }
        let caller_slot = CallerSlot {
            counts: self.callers.clone(),
            key,
        };
        let permit =
            tokio::time::timeout(target.pacs.timeout, target.slots.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| {
                    ApiError::busy(format!(
                        "the image archive of {facility} is busy with other requests; try again"
                    ))
                })?;
        Ok(Box::new((permit, caller_slot)))
    }

    /// Sends `GET <base>/<path>` and waits for the answer's head: the PACS's failures made
    /// answers.
    async fn send(
        &self,
        facility: &str,
        path: &str,
        accept: Option<&HeaderValue>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ApiError> {
        let target = self.target(facility)?;
        let timeout = target.pacs.timeout;
        let url = format!("{}/{path}", target.pacs.base);
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let mut request = Request::get(&url);
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept.clone());
            }
            if let Some(authorization) = &target.authorization {
                request = request.header(header::AUTHORIZATION, authorization.clone());
            }
            let request = request
                .body(Empty::<Bytes>::new())
                .map_err(|error| ApiError::internal(format!("the PACS request: {error}")))?;
            let left = timeout.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, target.client.request(request)).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(error))
                    if attempt < RETRIES
                        && !tsunagi_net::client::describe(&error).contains("certificate") =>
                {
                    tracing::debug!(target: "tsunagi::dicomweb", %error, attempt, "sent again");
                    attempt += 1;
                }
                Ok(Err(error)) => {
                    let error = tsunagi_net::client::describe(&error);
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
        }
    }

    /// Whether the PACS of `facility` confirmed within the last minute that it files study
    /// `uid` under the patient the gateway knows as `subject`.
    pub(crate) fn verified(&self, facility: &str, uid: &str, subject: &str) -> bool {
        let key = (facility.to_owned(), uid.to_owned(), subject.to_owned());
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .is_some_and(|at| at.elapsed() < VERIFIED_FOR)
    }

    /// Whether the PACS of `facility` files study `uid` under Patient ID `patient` (and under
    /// no other); remembered for a minute for the study's FHIR `subject` ([`Proxy::verified`]).
    pub(crate) async fn verify(
        &self,
        facility: &str,
        caller: &str,
        uid: &str,
        (patient, subject): (&str, &str),
    ) -> Result<bool, ApiError> {
        let key = (facility.to_owned(), uid.to_owned(), subject.to_owned());
        let now = Instant::now();
        let _slots = self.slots(facility, caller).await?;
        let accept = HeaderValue::from_static("application/dicom+json");
        let response = self
            .send(
                facility,
                &format!(
                    "studies?StudyInstanceUID={uid}&includefield=00100020&includefield=00100021"
                ),
                Some(&accept),
            )
            .await?;
        if !response.status().is_success() {
            return Err(ApiError::bad_gateway(format!(
                "the image archive of {facility} answered {} when asked whose study it is",
                response.status().as_u16()
            )));
        }
        let timeout = self.target(facility)?.pacs.timeout;
        let body = tokio::time::timeout(
            timeout,
            http_body_util::Limited::new(response.into_body(), 1024 * 1024).collect(),
        )
        .await
        .map_err(|_| {
            ApiError::gateway_timeout(format!(
                "the image archive of {facility} did not answer within {} s",
                timeout.as_secs()
            ))
        })?
        .map_err(|_| {
            ApiError::bad_gateway(format!(
                "the image archive of {facility} answered what is not DICOM JSON"
            ))
        })?
        .to_bytes();
        let rows: Vec<Value> = if body.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(&body).map_err(|_| {
                ApiError::bad_gateway(format!(
                    "the image archive of {facility} answered what is not DICOM JSON"
                ))
            })?
        };
        let issuer = self.target(facility)?.pacs.issuer.as_deref();
        let filed: Vec<(Option<&str>, Option<&str>)> = rows
            .iter()
            .filter(|row| row["0020000D"]["Value"][0].as_str().map(str::trim) == Some(uid))
            .map(|row| {
                (
                    row["00100020"]["Value"][0].as_str().map(str::trim),
                    row["00100021"]["Value"][0].as_str().map(str::trim),
                )
            })
            .collect();
        let holds = !filed.is_empty()
            && filed.iter().all(|(id, said)| {
                *id == Some(patient) && (issuer.is_none() || said.is_none() || *said == issuer)
            });
        if holds {
            let mut verified = self
                .verified
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if verified.len() >= MAX_VERIFIED {
                verified.retain(|_, at| now.duration_since(*at) < VERIFIED_FOR);
            }
            verified.insert(key, now);
        } else {
            tracing::warn!(target: "tsunagi::dicomweb", facility, "the PACS files a study under another patient than the gateway knows; not served until the next sync");
        }
        Ok(holds)
    }

    /// Forwards one GET and relays the answer.
    pub(crate) async fn forward(&self, ask: Forward<'_>) -> Result<Response, ApiError> {
        let facility = ask.facility;
        let slots = self.slots(facility, &ask.caller).await?;
        let started = Instant::now();
        let response = self.send(facility, &ask.path, ask.accept.as_ref()).await?;
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
        // The length hyper will frame the body by (a Content-Length beside chunked coding is
        // not it).
        let length = hyper::body::Body::size_hint(response.body()).exact();
        let limit = if ask.metadata_base.is_some() {
            MAX_METADATA_BYTES
        } else {
            self.settings.max_answer_bytes
        };
        if length.is_some_and(|length| length > limit) {
            return Err(ApiError::bad_gateway(format!(
                "the image archive of {facility} answered more than the gateway relays ({limit} bytes)"
            )));
        }
        let timeout = self.target(facility)?.pacs.timeout;
        let limits = Limits {
            // The PACS's time limit holds for each pause within its answer too.
            stall: timeout,
            deadline: started + self.settings.max_answer_time,
            bytes: limit,
        };
        let filter = if kind.starts_with("multipart/") {
            PartFilter::for_type(&content_type)
        } else {
            None
        };
        let filtering = filter.is_some();
        let body = Relay::new(response.into_body(), limits, filter, slots);
        let mut answer = match &ask.metadata_base {
            Some(base) => {
                let bytes = body.collect().await.map_err(|error| {
                    ApiError::bad_gateway(format!(
                        "the image archive of {facility}'s metadata could not be read: {error}"
                    ))
                })?;
                let mut metadata: Value =
                    serde_json::from_slice(&bytes.to_bytes()).map_err(|_| {
                        ApiError::bad_gateway(format!(
                            "the image archive of {facility} answered metadata that is not JSON"
                        ))
                    })?;
                rewrite_urls(&mut metadata, base);
                let body = serde_json::to_vec(&metadata).map_err(|error| {
                    ApiError::internal(format!("metadata could not be written: {error}"))
                })?;
                let mut answer = (status, body).into_response();
                answer.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/dicom+json"),
                );
                answer
            }
            None => {
                let mut answer = (status, Body::new(body)).into_response();
                if let Ok(value) = HeaderValue::from_str(&content_type) {
                    answer.headers_mut().insert(header::CONTENT_TYPE, value);
                }
                if let (Some(length), false) = (length, filtering) {
                    answer
                        .headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
                }
                answer
            }
        };
        let headers = answer.headers_mut();
        super::private(headers);
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_pacs_urls_in_metadata_become_the_gateways() {
        let mut metadata = json!([{
            "7FE00010": {"vr": "OW", "BulkDataURI": "http://10.0.0.5:8042/dicom-web/studies/1.2/series/1.2.3/instances/1.2.3.4/bulk/7fe00010"},
            "00420011": {"vr": "OB", "BulkDataURI": "http://pacs/elsewhere"},
            "00081190": {"vr": "UR", "Value": ["http://pacs/dicom-web/studies/1.2", "urn:x"]},
            "00400275": {"vr": "SQ", "Value": [{"7FE00010": {"vr": "OB", "BulkDataURI": "https://PACS:443/wado/studies/1.2/x"}}]}
        }]);
        rewrite_urls(&mut metadata, "https://gw/dicomweb");
        assert_eq!(
            metadata[0]["7FE00010"]["BulkDataURI"],
            "https://gw/dicomweb/studies/1.2/series/1.2.3/instances/1.2.3.4/bulk/7fe00010"
        );
        assert!(metadata[0]["00420011"].get("BulkDataURI").is_none());
        assert_eq!(
            metadata[0]["00081190"]["Value"],
            json!(["https://gw/dicomweb/studies/1.2"])
        );
        assert_eq!(
            metadata[0]["00400275"]["Value"][0]["7FE00010"]["BulkDataURI"],
            "https://gw/dicomweb/studies/1.2/x"
        );
        assert!(!metadata.to_string().contains("pacs"));
        assert!(!metadata.to_string().contains("PACS"));
    }
}
