//! The FHIR REST API that portals and clinic systems read: axum routes over any
//! [`tsunagi_store::Store`].
//!
//! - `GET /fhir/metadata`; read, vread, instance/type/system history; search by GET and
//!   `POST _search`; `Patient/{id}/$everything`;
//! - searchset Bundles cut from [`snapshot`]s, so pages are stable under ingestion; links are
//!   absolute on the base the client used (`--base-url`, else `X-Forwarded-*`, else `Host`);
//! - writes: notes and documents, consents, lab transactions, HL7 v2 over HTTP, and
//!   `$validate` against the loaded profiles; other writes answer 405 (data arrives through the
//!   adapters);
//! - errors are [`outcome::ApiError`]s, turned into OperationOutcomes here and nowhere else.

pub mod access;
mod audit_api;
#[cfg(feature = "bench-baseline")]
pub mod baseline;
pub mod capability;
mod consent_api;
pub mod format;
pub mod hl7v2_api;
pub mod limits;
pub mod listen;
mod notes_api;
pub mod outcome;
mod pix;
pub mod security;
pub mod snapshot;
mod standing;
pub mod tls;
mod token_api;
pub mod transaction_api;
mod validation;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use serde_json::Value;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tsunagi_auth::{Interaction, token::SigningKey};
use tsunagi_core::{clock::Clock, time::format_instant_jst};
use tsunagi_fhir::{
    query::{Include, SearchQuery, Summary, Total},
    search::{IndexValue, extract_param},
};
use tsunagi_store::{Governance, HistoryCursor, Key, Store, StoredResource};

use crate::{
    outcome::{ApiError, FHIR_JSON, outcome},
    security::{AuditWriter, Caller, TokenSettings},
    snapshot::{Snapshot, Snapshots},
};

/// The authenticated caller, put in the request by [`security::guard`].
type Who = Extension<Arc<Caller>>;

/// Server settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Fixed public base URL (ending in `/fhir`), overriding request headers.
    pub base_url: Option<String>,
    /// How long search snapshots (paging) live.
    pub snapshot_ttl: Duration,
    /// Keys kept in all snapshots together.
    pub snapshot_max_keys: usize,
    /// Most `_revinclude` resources per page.
    pub max_revinclude: usize,
    /// Token issuer, audience and endpoint.
    pub tokens: TokenSettings,
    /// Profiles posted resources are checked against (see [`validation`]); empty: structural
    /// checks only.
    pub profiles: Arc<tsunagi_fhir::validate::Profiles>,
    /// Connection and request limits ([`listen`], [`limits`]).
    pub limits: listen::HttpLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_url: None,
            snapshot_ttl: Duration::from_secs(30 * 60),
            snapshot_max_keys: 5_000_000,
            max_revinclude: 1000,
            tokens: TokenSettings::default(),
            profiles: Arc::default(),
            limits: listen::HttpLimits::default(),
        }
    }
}

/// Shared state of all handlers.
pub struct AppState {
    store: Arc<dyn Store>,
    governance: Arc<dyn Governance>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    snapshots: Snapshots,
    metrics: access::Metrics,
    /// Tsunagi's token-signing keys, newest first (see [`security::signing_keys`]).
    keys: Vec<SigningKey>,
    /// Access tokens whose signature against `keys` was verified.
    verified: tsunagi_auth::token::VerifiedTokens,
    /// Tokens found standing in the store's current standing epoch.
    standings: standing::Remembered,
    audit: AuditWriter,
    /// Where `POST /hl7v2` hands messages, once the binary wires a feed intake.
    intake: std::sync::OnceLock<Arc<dyn hl7v2_api::MessageIntake>>,
}

impl AppState {
    /// State over a store and its governance records; starts the audit writer (call inside a
    /// tokio runtime).
    pub fn new(
        store: Arc<dyn Store>,
        governance: Arc<dyn Governance>,
        clock: Arc<dyn Clock>,
        settings: Settings,
        keys: Vec<SigningKey>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            audit: AuditWriter::start(governance.clone()),
            governance,
            clock,
            snapshots: Snapshots::new(settings.snapshot_ttl, settings.snapshot_max_keys),
            settings,
            metrics: access::Metrics::default(),
            keys,
            verified: tsunagi_auth::token::VerifiedTokens::new(100_000),
            standings: standing::Remembered::default(),
            intake: std::sync::OnceLock::new(),
        })
    }

    /// Takes HL7 v2 over HTTP (`POST /hl7v2`) into `intake`; the first intake set stays.
    pub fn set_intake(&self, intake: Arc<dyn hl7v2_api::MessageIntake>) {
        let _ = self.intake.set(intake);
    }
}

/// The router: FHIR under `/fhir`, plus `/healthz`, `/readyz`, `/metrics`.
pub fn router(state: Arc<AppState>) -> Router {
    // Everything under /fhir but the CapabilityStatement needs a valid token, and is audited.
    let protected = protected_routes(&state).route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        security::guard,
    ));
    assemble(state, protected)
}

/// The routes that read patient data; [`router`] puts them behind [`security::guard`].
fn protected_routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/fhir/{type}", any(type_level))
        .route("/fhir/{type}/{id}", any(instance_level))
        .route("/fhir/{type}/{id}/{operation}", any(instance_operation))
        .route("/fhir/{type}/{id}/_history/{version}", any(vread))
        .route("/hl7v2", axum::routing::post(hl7v2))
        .route("/fhir", axum::routing::post(transaction))
        // Bodies are read into memory only here, behind the guard (`limits::collect_body`).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::collect_body,
        ))
}

async fn transaction(
    State(state): State<Arc<AppState>>,
    Extension(caller): Who,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let scope = state
        .intake
        .get()
        .and_then(|intake| intake.lab_scope(&caller.principal.client_id));
    transaction_api::post(&state, scope, &caller, &headers, &body).await
}

async fn hl7v2(
    State(state): State<Arc<AppState>>,
    Extension(caller): Who,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    hl7v2_api::post(state.intake.get(), &caller, &headers, body).await
}

/// The public routes around the guarded ones, and the layers of every request.
fn assemble(state: Arc<AppState>, protected: Router<Arc<AppState>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/fhir/metadata", get(metadata))
        .route(
            "/.well-known/smart-configuration",
            get(security::smart_configuration),
        )
        .route("/.well-known/jwks.json", get(security::jwks))
        .route("/auth/token", axum::routing::post(security::token_endpoint))
        .merge(protected)
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::not_found(format!("{method} {}: no such endpoint", uri.path()))
        })
        // Bodies are bounded (size and time) by `limits::bounded`, not per extractor.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::bounded,
        ))
        .layer(axum::middleware::from_fn(limits::ensure_outcome))
        .layer(axum::middleware::from_fn(format::convert))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::observe,
        ))
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .br(true)
                .quality(CompressionLevel::Precise(4)),
        )
        .with_state(state)
}

/// Serves the API on a bound listener until the future `shutdown` completes, then drains
/// (see [`listen`]: connection caps and timeouts from [`Settings::limits`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listen::serve("http", listener, listen::Transport::Plain, state, shutdown).await
}

/// Serves the API over TLS until `shutdown` completes. On a mutual-TLS listener every token
/// must have been issued to the client the connection's certificate names.
pub async fn serve_tls(
    listener: tls::TlsListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tcp, acceptor, mutual) = listener.into_parts();
    let name = if mutual { "mtls" } else { "https" };
    listen::serve(
        name,
        tcp,
        listen::Transport::Tls { acceptor, mutual },
        state,
        shutdown,
    )
    .await
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.governance.signing_keys().await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.metrics;
    let body = format!(
        "# HELP tsunagi_http_requests_total HTTP requests answered.\n# TYPE tsunagi_http_requests_total counter\ntsunagi_http_requests_total {}\n\
         # HELP tsunagi_http_client_errors_total Requests answered 4xx.\n# TYPE tsunagi_http_client_errors_total counter\ntsunagi_http_client_errors_total {}\n\
         # HELP tsunagi_http_server_errors_total Requests answered 5xx.\n# TYPE tsunagi_http_server_errors_total counter\ntsunagi_http_server_errors_total {}\n\
         # HELP tsunagi_http_request_seconds_sum Time spent answering requests.\n# TYPE tsunagi_http_request_seconds_sum counter\ntsunagi_http_request_seconds_sum {:.6}\n\
         # HELP tsunagi_connections_open Connections open, by listener.\n# TYPE tsunagi_connections_open gauge\n\
         {}# HELP tsunagi_connections_refused_total Connections turned away over a cap, by listener.\n# TYPE tsunagi_connections_refused_total counter\n\
         {}# HELP tsunagi_connections_evicted_total Unauthenticated connections closed to admit newcomers at the cap, by listener.\n# TYPE tsunagi_connections_evicted_total counter\n{}",
        m.requests.load(Ordering::Relaxed),
        m.client_errors.load(Ordering::Relaxed),
        m.server_errors.load(Ordering::Relaxed),
        m.micros.load(Ordering::Relaxed) as f64 / 1e6,
        m.per_listener(|gate| gate.open() as u64, "tsunagi_connections_open"),
        m.per_listener(
            tsunagi_net::Gate::refused,
            "tsunagi_connections_refused_total"
        ),
        m.per_listener(
            tsunagi_net::Gate::evicted,
            "tsunagi_connections_evicted_total"
        ),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Decoded query parameters, in order.
fn decode_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|raw| {
        form_urlencoded::parse(raw.as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// A FHIR JSON response; [`format::convert`] turns it into XML or indents it when the client asked.
fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

/// The base URL (ending in `/fhir`) the client used.
fn base_url(configured: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(base) = configured {
        return base.trim_end_matches('/').to_owned();
    }
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    let host_ok = |host: &&str| {
        host.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    };
    let scheme = match first("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    let mut host = first("x-forwarded-host")
        .filter(host_ok)
        .or_else(|| first("host").filter(host_ok))
        .unwrap_or("localhost")
        .to_owned();
    if let Some(port) = first("x-forwarded-port").filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        && !host.contains(':')
        && !matches!((scheme, port), ("http", "80") | ("https", "443"))
    {
        host = format!("{host}:{port}");
    }
    let prefix = first("x-forwarded-prefix")
        .filter(|p| {
            p.starts_with('/')
                && p.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
        })
        .unwrap_or("")
        .trim_end_matches('/');
    format!("{scheme}://{host}{prefix}/fhir")
}

fn valid_type(resource_type: &str) -> Result<(), ApiError> {
    let ok = resource_type.starts_with(|c: char| c.is_ascii_uppercase())
        && resource_type.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "{resource_type} is not a resource type"
        )))
    }
}

fn valid_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("{id} is not a FHIR id")))
    }
}

async fn metadata(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let base = base_url(state.settings.base_url.as_deref(), &headers);
    let date = format_instant_jst(state.clock.now_micros());
    let statement = capability::capability_statement(&base, &date);
    let mut body = Vec::new();
    tsunagi_fhir::json::write_resource(&statement, &mut body)
        .map_err(|error| ApiError::from(tsunagi_store::StoreError::Invalid(error.to_string())))?;
    Ok(json_response(StatusCode::OK, body))
}

async fn type_level(
    State(state): State<Arc<AppState>>,
    Extension(caller): Who,
    method: Method,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let pairs = decode_pairs(raw.as_deref());
    if resource_type == "_history" && method == Method::GET {
        return history_listing(&state, &caller, None, &headers, &pairs).await;
    }
    valid_type(&resource_type)?;
    match method {
        Method::GET => search(&state, &caller, &resource_type, pairs, &headers).await,
        Method::POST if resource_type == "Consent" => {
            consent_api::create(&state, &caller, &headers, &body).await
        }
        Method::POST
            if matches!(
                resource_type.as_str(),
                "Communication" | "DocumentReference"
            ) =>
        {
            notes_api::create(&state, &caller, &resource_type, &headers, &body).await
        }
        _ => Err(ApiError::read_only(
            method.as_str(),
            &format!("/fhir/{resource_type}"),
        )),
    }
}

async fn instance_level(
    State(state): State<Arc<AppState>>,
    Extension(caller): Who,
    method: Method,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    valid_type(&resource_type)?;
    let mut pairs = decode_pairs(raw.as_deref());
    // A POSTed search or operation carries its parameters as a form body, after the URL's.
    if method == Method::POST && id == "$validate" {
        return validation::validate_operation(
            &state.settings.profiles,
            &resource_type,
            &pairs,
            &headers,
            &body,
        );
    }
    if method == Method::POST && matches!(id.as_str(), "_search" | "$lastn") {
        let form = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("invalid", format!("the {id} body is not UTF-8")))?;
        pairs.extend(decode_pairs(Some(form)));
    }
    match (method.clone(), id.as_str()) {
        (Method::GET | Method::POST, "_search") => {
            search(&state, &caller, &resource_type, pairs, &headers).await
        }
        (Method::GET | Method::POST, "$lastn") if resource_type == "Observation" => {
            lastn(&state, &caller, pairs, &headers).await
        }
        (Method::GET, "$ihe-pix") if resource_type == "Patient" => {
            pix::ihe_pix(&state, &caller, &pairs).await
        }
        (Method::GET, operation) if operation.starts_with('$') => Err(ApiError::not_found(
            format!("{operation} is not an operation of {resource_type}"),
        )),
        (Method::GET, "_history") => {
            history_listing(&state, &caller, Some(&resource_type), &headers, &pairs).await
        }
        (Method::GET, _) => read(&state, &caller, &resource_type, &id, &headers, &pairs).await,
        (Method::PUT, _) if resource_type == "Consent" => {
            consent_api::update(&state, &caller, &id, &headers, &body).await
        }
        _ => Err(ApiError::read_only(
            method.as_str(),
            &format!("/fhir/{resource_type}/{id}"),
        )),
    }
}

async fn instance_operation(
    State(state): State<Arc<AppState>>,
    Extension(caller): Who,
    method: Method,
    Path((resource_type, id, operation)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    valid_type(&resource_type)?;
    valid_id(&id)?;
    let pairs = decode_pairs(raw.as_deref());
    match (method, operation.as_str()) {
        (Method::GET, "_history") => {
            instance_history(&state, &caller, &resource_type, &id, &headers, &pairs).await
        }
        (Method::GET, "$everything") if resource_type == "Patient" => {
            everything(&state, &caller, &id, &headers, &pairs).await
        }
        (Method::GET, _) => Err(ApiError::not_found(format!(
            "{operation} is not an operation of {resource_type}"
        ))),
        (method, _) => Err(ApiError::read_only(
            method.as_str(),
            &format!("/fhir/{resource_type}/{id}/{operation}"),
        )),
    }
}

fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// RFC 7231 IMF-fixdate of microseconds since the epoch.
fn http_date(micros: i64) -> String {
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

fn resource_response(
    resource: &StoredResource,
    headers: &HeaderMap,
    elements: Option<&[String]>,
) -> Result<Response, ApiError> {
    let tag = etag(resource.version);
    if let Some(condition) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        && condition
            .split(',')
            .any(|candidate| candidate.trim() == tag || candidate.trim() == "*")
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(&tag) {
            response.headers_mut().insert(header::ETAG, value);
        }
        return Ok(response);
    }
    let mut body = Vec::with_capacity(resource.content.as_ref().map_or(0, Vec::len) + 96);
    write_entry_resource(resource, elements, None, &mut body)?;
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

async fn read(
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
    let Some(resource) = state.store.read(&caller.access, resource_type, id).await? else {
        return Err(ApiError::not_found(format!(
            "{resource_type}/{id} is not known"
        )));
    };
    caller.touch([&resource]);
    if resource.deleted {
        return Err(ApiError::gone(format!("{resource_type}/{id} was deleted")));
    }
    let elements = elements_of(pairs);
    resource_response(&resource, headers, elements.as_deref())
}

fn elements_of(pairs: &[(String, String)]) -> Option<Vec<String>> {
    param(pairs, "_elements").map(tsunagi_fhir::query::parse_elements)
}

async fn vread(
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
    let elements = elements_of(&pairs);
    resource_response(&resource, &headers, elements.as_deref())
}

/// Writes one resource, optionally reduced to `_elements` or a summary mode.
fn write_entry_resource(
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

/// Pairs of the original search to repeat in links (without paging and format parameters).
fn link_query(pairs: &[(String, String)], extra: &[(&str, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if matches!(name.as_str(), "_snapshot" | "_offset" | "_cursor") {
            continue;
        }
        serializer.append_pair(name, value);
    }
    for (name, value) in extra {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

struct Page<'a> {
    base: &'a str,
    /// Path under the base, e.g. `Observation` or `Patient/p1/$everything`.
    path: &'a str,
    pairs: &'a [(String, String)],
    snapshot: Option<String>,
    offset: usize,
    count: usize,
    total: usize,
}

fn push_link(out: &mut Vec<u8>, first: &mut bool, relation: &str, url: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.extend_from_slice(b"{\"relation\":");
    out.extend_from_slice(Value::String(relation.to_owned()).to_string().as_bytes());
    out.extend_from_slice(b",\"url\":");
    out.extend_from_slice(Value::String(url.to_owned()).to_string().as_bytes());
    out.push(b'}');
}

fn page_links(out: &mut Vec<u8>, page: &Page<'_>) {
    let url = |extra: &[(&str, String)]| {
        let query = link_query(page.pairs, extra);
        if query.is_empty() {
            format!("{}/{}", page.base, page.path)
        } else {
            format!("{}/{}?{query}", page.base, page.path)
        }
    };
    let mut first = true;
    out.extend_from_slice(b"\"link\":[");
    match &page.snapshot {
        Some(snapshot) => {
            let at = |offset: usize| {
                url(&[
                    ("_snapshot", snapshot.clone()),
                    ("_offset", offset.to_string()),
                ])
            };
            push_link(out, &mut first, "self", &at(page.offset));
            if page.offset + page.count < page.total && page.count > 0 {
                push_link(out, &mut first, "next", &at(page.offset + page.count));
            }
            if page.offset > 0 {
                push_link(
                    out,
                    &mut first,
                    "previous",
                    &at(page.offset.saturating_sub(page.count)),
                );
            }
        }
        None => push_link(out, &mut first, "self", &url(&[])),
    }
    out.extend_from_slice(b"]");
}

fn start_bundle(out: &mut Vec<u8>, bundle_type: &str, id: &str, now: i64) {
    out.extend_from_slice(b"{\"resourceType\":\"Bundle\",\"id\":\"");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\",\"meta\":{\"lastUpdated\":\"");
    out.extend_from_slice(format_instant_jst(now).as_bytes());
    out.extend_from_slice(b"\"},\"type\":\"");
    out.extend_from_slice(bundle_type.as_bytes());
    out.extend_from_slice(b"\"");
}

fn write_search_entry(
    out: &mut Vec<u8>,
    base: &str,
    resource: &StoredResource,
    mode: &str,
    elements: Option<&[String]>,
    summary: Option<Summary>,
) -> Result<(), ApiError> {
    out.extend_from_slice(b"{\"fullUrl\":\"");
    out.extend_from_slice(format!("{base}/{}/{}", resource.resource_type, resource.id).as_bytes());
    out.extend_from_slice(b"\",\"resource\":");
    write_entry_resource(resource, elements, summary, out)?;
    out.extend_from_slice(b",\"search\":{\"mode\":\"");
    out.extend_from_slice(mode.as_bytes());
    out.extend_from_slice(b"\"}}");
    Ok(())
}

/// Finds the page's keys: from a snapshot named in the request, or by running the search.
async fn page_keys(
    state: &AppState,
    caller: &Caller,
    scope: &str,
    pairs: &[(String, String)],
    count: usize,
    run: impl std::future::Future<Output = Result<Vec<Key>, ApiError>>,
) -> Result<(Arc<Vec<Key>>, Option<String>, usize), ApiError> {
    // Another principal's snapshot id answers exactly like an expired one.
    let scope = caller.snapshot_scope(scope);
    let scope = scope.as_str();
    if let Some(id) = param(pairs, "_snapshot") {
        let offset: usize = param(pairs, "_offset")
            .unwrap_or("0")
            .parse()
            .map_err(|_| ApiError::bad_request("invalid", "_offset must be a whole number"))?;
        let snapshot = state
            .snapshots
            .get(id)
            .filter(|snapshot| snapshot.scope == scope)
            .ok_or_else(|| ApiError::gone("this result set has expired; run the search again"))?;
        return Ok((snapshot.keys, Some(id.to_owned()), offset));
    }
    let keys = Arc::new(run.await?);
    let snapshot = (keys.len() > count).then(|| {
        state.snapshots.put(Snapshot {
            scope: scope.to_owned(),
            keys: keys.clone(),
        })
    });
    Ok((keys, snapshot, 0))
}

fn strict_handling(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| {
            value
                .split(';')
                .any(|part| part.trim() == "handling=strict")
        })
}

async fn search(
    state: &AppState,
    caller: &Caller,
    resource_type: &str,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if resource_type == "AuditEvent" {
        return audit_api::search(state, caller, &pairs, headers).await;
    }
    search_as(
        state,
        caller,
        resource_type,
        resource_type,
        &pairs,
        &pairs,
        headers,
        None,
    )
    .await
}

/// `Observation/$lastn`: the most recent `max` (default 1) Observations of each code, for one
/// patient (`patient` or `subject` is required), narrowed by any Observation search parameter.
/// Grouped by the first coding of `Observation.code` (system and code; else its text); most
/// recent by `date` (`effective[x]`); groups follow each other, the newest group first.
async fn lastn(
    state: &AppState,
    caller: &Caller,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let max = match param(&pairs, "max") {
        None => 1,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid",
                    format!("max={text}: a whole number from 1 to 1000"),
                )
            })?,
    };
    let scoped = pairs.iter().any(|(key, _)| {
        let name = key.split(':').next().unwrap_or(key);
        name == "patient" || name == "subject" || name == "_snapshot"
    });
    if !scoped {
        return Err(ApiError::bad_request(
            "required",
            "Observation/$lastn needs a patient (or subject) parameter",
        ));
    }
    let mut search_pairs: Vec<(String, String)> = pairs
        .iter()
        .filter(|(key, _)| key != "max" && key != "_sort")
        .cloned()
        .collect();
    search_pairs.push(("_sort".to_owned(), "-date".to_owned()));
    search_as(
        state,
        caller,
        "Observation",
        "Observation/$lastn",
        &pairs,
        &search_pairs,
        headers,
        Some(max),
    )
    .await
}

/// The group of an Observation for `$lastn`.
fn lastn_group(resource: &StoredResource) -> Result<String, ApiError> {
    let value = match resource.content.as_deref() {
        Some(content) => {
            tsunagi_fhir::json::parse_fields(content, &|key| key == "code").map_err(|error| {
                ApiError::from(tsunagi_store::StoreError::Corrupt(error.to_string()))
            })?
        }
        None => Value::Null,
    };
    let code = &value["code"];
    Ok(match code["coding"].get(0) {
        Some(coding) => format!(
            "{}|{}",
            coding["system"].as_str().unwrap_or_default(),
            coding["code"].as_str().unwrap_or_default()
        ),
        None => format!("text:{}", code["text"].as_str().unwrap_or_default()),
    })
}

/// Keeps the first `max` keys of each `$lastn` group (keys come newest first), groups in the
/// order their newest member appears.
async fn lastn_keys(
    state: &AppState,
    caller: &Caller,
    keys: Vec<Key>,
    max: usize,
) -> Result<Vec<Key>, ApiError> {
    let mut groups: Vec<(String, Vec<Key>)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for chunk in keys.chunks(500) {
        let resources = state.store.fetch(&caller.access, chunk).await?;
        for (key, resource) in chunk.iter().zip(&resources) {
            let group = lastn_group(resource)?;
            let slot = *index.entry(group.clone()).or_insert_with(|| {
                groups.push((group, Vec::new()));
                groups.len() - 1
            });
            if groups[slot].1.len() < max {
                groups[slot].1.push(*key);
            }
        }
    }
    Ok(groups.into_iter().flat_map(|(_, keys)| keys).collect())
}

/// A search whose links repeat `link_pairs` under `path`; `lastn` reduces the keys to the most
/// recent of each code.
#[expect(
    clippy::too_many_arguments,
    reason = "the one search path shared by search and $lastn; a request struct is the next refactor"
)]
async fn search_as(
    state: &AppState,
    caller: &Caller,
    resource_type: &str,
    path: &str,
    link_pairs: &[(String, String)],
    pairs: &[(String, String)],
    headers: &HeaderMap,
    lastn: Option<usize>,
) -> Result<Response, ApiError> {
    if tsunagi_fhir::query::searchable_types()
        .binary_search(&resource_type)
        .is_err()
    {
        return Err(ApiError::not_found(format!(
            "{resource_type} cannot be searched on this server"
        )));
    }
    caller.require(resource_type, Interaction::Search)?;
    let now = state.clock.now_micros();
    let query = SearchQuery::parse(
        resource_type,
        pairs,
        now.div_euclid(1_000_000),
        strict_handling(headers),
    )?;
    require_chained_types(caller, &query)?;
    let base = base_url(state.settings.base_url.as_deref(), headers);
    if query.summary == Summary::Count || query.count == 0 {
        let total = match lastn {
            None => state.store.count(&caller.access, &query).await?,
            Some(max) => lastn_keys(
                state,
                caller,
                state.store.search(&caller.access, &query).await?,
                max,
            )
            .await?
            .len() as u64,
        };
        let mut out = Vec::with_capacity(512);
        start_bundle(&mut out, "searchset", &bundle_id(state), now);
        if query.total == Total::Accurate || query.summary == Summary::Count {
            out.extend_from_slice(format!(",\"total\":{total}").as_bytes());
        }
        out.push(b',');
        page_links(
            &mut out,
            &Page {
                base: &base,
                path,
                pairs: link_pairs,
                snapshot: None,
                offset: 0,
                count: 0,
                total: total as usize,
            },
        );
        out.push(b'}');
        return Ok(json_response(StatusCode::OK, out));
    }
    let (keys, snapshot, offset) = page_keys(state, caller, path, pairs, query.count, async {
        let keys = state.store.search(&caller.access, &query).await?;
        match lastn {
            Some(max) => lastn_keys(state, caller, keys, max).await,
            None => Ok(keys),
        }
    })
    .await?;
    let end = (offset + query.count).min(keys.len());
    let page_keys = keys.get(offset..end).unwrap_or(&[]);
    let matches = state.store.fetch(&caller.access, page_keys).await?;
    let included = includes(state, caller, &query, &matches).await?;
    caller.touch(matches.iter().chain(&included));
    let mut out = Vec::with_capacity(4096 + matches.len() * 2048);
    start_bundle(
        &mut out,
        "searchset",
        snapshot.as_deref().unwrap_or(&bundle_id(state)),
        now,
    );
    if query.total == Total::Accurate {
        out.extend_from_slice(format!(",\"total\":{}", keys.len()).as_bytes());
    }
    out.push(b',');
    page_links(
        &mut out,
        &Page {
            base: &base,
            path,
            pairs: link_pairs,
            snapshot: snapshot.clone(),
            offset,
            count: query.count,
            total: keys.len(),
        },
    );
    out.extend_from_slice(b",\"entry\":[");
    let summary = (query.summary != Summary::False).then_some(query.summary);
    let mut first = true;
    for resource in &matches {
        if !first {
            out.push(b',');
        }
        first = false;
        write_search_entry(
            &mut out,
            &base,
            resource,
            "match",
            query.elements.as_deref(),
            summary,
        )?;
    }
    for resource in &included {
        if !first {
            out.push(b',');
        }
        first = false;
        write_search_entry(&mut out, &base, resource, "include", None, None)?;
    }
    if !query.ignored.is_empty() {
        if !first {
            out.push(b',');
        }
        let message = format!(
            "ignored unknown search parameters: {}",
            query.ignored.join(", ")
        );
        out.extend_from_slice(b"{\"resource\":");
        out.extend_from_slice(
            outcome("warning", "not-supported", &message)
                .to_string()
                .as_bytes(),
        );
        out.extend_from_slice(b",\"search\":{\"mode\":\"outcome\"}}");
    }
    out.extend_from_slice(b"]}");
    Ok(json_response(StatusCode::OK, out))
}

/// Chains may only pass through types the caller may search: a chain is a question about the
/// target's data.
fn require_chained_types(caller: &Caller, query: &SearchQuery) -> Result<(), ApiError> {
    fn walk(caller: &Caller, predicate: &tsunagi_fhir::query::Predicate) -> Result<(), ApiError> {
        if let tsunagi_fhir::query::Predicate::Chain {
            target_type, inner, ..
        } = predicate
        {
            caller.require(target_type, Interaction::Search)?;
            walk(caller, inner)?;
        }
        Ok(())
    }
    for filter in &query.filters {
        for predicate in &filter.any_of {
            walk(caller, predicate)?;
        }
    }
    Ok(())
}

fn bundle_id(state: &AppState) -> String {
    state.snapshots.new_id()
}

/// `_include` and `_revinclude` (with one level of `:iterate`) for a page of matches.
async fn includes(
    state: &AppState,
    caller: &Caller,
    query: &SearchQuery,
    matches: &[StoredResource],
) -> Result<Vec<StoredResource>, ApiError> {
    if query.include.is_empty() && query.revinclude.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: std::collections::HashSet<(String, String)> = matches
        .iter()
        .map(|r| (r.resource_type.clone(), r.id.clone()))
        .collect();
    let mut included = Vec::new();
    let first = include_round(state, caller, query, matches, false, &mut seen).await?;
    let iterate = query
        .include
        .iter()
        .chain(&query.revinclude)
        .any(|i| i.iterate);
    if iterate && !first.is_empty() {
        let second = include_round(state, caller, query, &first, true, &mut seen).await?;
        included.extend(first);
        included.extend(second);
    } else {
        included.extend(first);
    }
    Ok(included)
}

async fn include_round(
    state: &AppState,
    caller: &Caller,
    query: &SearchQuery,
    sources: &[StoredResource],
    iterate_only: bool,
    seen: &mut std::collections::HashSet<(String, String)>,
) -> Result<Vec<StoredResource>, ApiError> {
    let applies = |include: &&Include| !iterate_only || include.iterate;
    let mut targets: Vec<(String, String)> = Vec::new();
    for include in query.include.iter().filter(applies) {
        for source in sources
            .iter()
            .filter(|s| s.resource_type == include.source_type)
        {
            // Only this parameter's references, read from the stored content (no meta needed).
            let Some(content) = source.content.as_deref() else {
                continue;
            };
            let value = tsunagi_fhir::json::parse_fields(content, &|key| {
                include.param.paths.iter().any(|path| {
                    let head = path.split('.').next().unwrap_or(path);
                    match head.strip_suffix("[x]") {
                        Some(prefix) => key.starts_with(prefix),
                        None => key == head,
                    }
                })
            })
            .map_err(|error| {
                ApiError::from(tsunagi_store::StoreError::Corrupt(error.to_string()))
            })?;
            for entry in extract_param(&value, include.param) {
                if let IndexValue::Reference {
                    target_type,
                    target_id,
                } = entry
                    && include
                        .target_type
                        .as_ref()
                        .is_none_or(|t| *t == target_type)
                {
                    targets.push((target_type, target_id));
                }
            }
        }
    }
    targets.retain(|target| !seen.contains(target));
    targets.sort();
    targets.dedup();
    let mut keys = state.store.keys_of(&caller.access, &targets).await?;
    for include in query.revinclude.iter().filter(applies) {
        let referenced: Vec<(String, String)> = sources
            .iter()
            .map(|s| (s.resource_type.clone(), s.id.clone()))
            .collect();
        keys.extend(
            state
                .store
                .referencing(
                    &caller.access,
                    include.param.id,
                    &referenced,
                    state.settings.max_revinclude,
                )
                .await?,
        );
    }
    keys.sort_unstable();
    keys.dedup();
    let mut found = Vec::new();
    for resource in state.store.fetch(&caller.access, &keys).await? {
        // Types the caller's role or scopes do not cover are left out, not refused.
        if caller.may_see(&resource.resource_type)
            && seen.insert((resource.resource_type.clone(), resource.id.clone()))
        {
            found.push(resource);
        }
    }
    Ok(found)
}

fn since_of(pairs: &[(String, String)]) -> Result<Option<i64>, ApiError> {
    param(pairs, "_since")
        .map(|text| {
            tsunagi_core::time::fhir_date_range(text)
                .map(|(start, _)| start.saturating_mul(1_000_000))
                .ok_or_else(|| {
                    ApiError::bad_request("invalid", format!("_since: {text} is not an instant"))
                })
        })
        .transpose()
}

fn count_of(pairs: &[(String, String)]) -> Result<usize, ApiError> {
    Ok(param(pairs, "_count")
        .map(tsunagi_fhir::query::parse_count)
        .transpose()?
        .unwrap_or(tsunagi_fhir::query::DEFAULT_COUNT))
}

async fn everything(
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
    let summary = match param(pairs, "_summary") {
        None | Some("false") => None,
        Some("true") => Some(Summary::True),
        Some("count") => Some(Summary::Count),
        Some("data") => Some(Summary::Data),
        Some("text") => Some(Summary::Text),
        Some(_) => {
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
    let (keys, snapshot, offset) = page_keys(state, caller, &scope, pairs, count, async {
        Ok(state
            .store
            .compartment(&caller.access, id, &types, since)
            .await?)
    })
    .await?;
    let end = (offset + count).min(keys.len());
    let resources = state
        .store
        .fetch(&caller.access, keys.get(offset..end).unwrap_or(&[]))
        .await?;
    caller.touch(&resources);
    let mut out = Vec::with_capacity(4096 + resources.len() * 2048);
    start_bundle(
        &mut out,
        "searchset",
        snapshot.as_deref().unwrap_or(&bundle_id(state)),
        now,
    );
    out.extend_from_slice(format!(",\"total\":{},", keys.len()).as_bytes());
    page_links(
        &mut out,
        &Page {
            base: &base,
            path: &scope,
            pairs,
            snapshot: snapshot.clone(),
            offset,
            count,
            total: keys.len(),
        },
    );
    out.extend_from_slice(b",\"entry\":[");
    for (index, resource) in resources.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_search_entry(&mut out, &base, resource, "match", None, summary)?;
    }
    out.extend_from_slice(b"]}");
    Ok(json_response(StatusCode::OK, out))
}

fn write_history(
    out: &mut Vec<u8>,
    base: &str,
    versions: &[StoredResource],
) -> Result<(), ApiError> {
    out.extend_from_slice(b",\"entry\":[");
    for (index, version) in versions.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let url = format!("{}/{}", version.resource_type, version.id);
        out.extend_from_slice(format!("{{\"fullUrl\":\"{base}/{url}\"").as_bytes());
        if version.deleted {
            out.extend_from_slice(format!(",\"request\":{{\"method\":\"DELETE\",\"url\":\"{url}\"}},\"response\":{{\"status\":\"204\",\"lastModified\":\"{}\"}}}}", format_instant_jst(version.last_updated)).as_bytes());
        } else {
            out.extend_from_slice(b",\"resource\":");
            version.write_json(out)?;
            let (method, status) = if version.version == 1 {
                ("POST", "201")
            } else {
                ("PUT", "200")
            };
            let request_url = if method == "POST" {
                version.resource_type.clone()
            } else {
                url.clone()
            };
            out.extend_from_slice(format!(",\"request\":{{\"method\":\"{method}\",\"url\":\"{request_url}\"}},\"response\":{{\"status\":\"{status}\",\"etag\":\"W/\\\"{}\\\"\",\"lastModified\":\"{}\"}}}}", version.version, format_instant_jst(version.last_updated)).as_bytes());
        }
    }
    out.extend_from_slice(b"]}");
    Ok(())
}

async fn instance_history(
    state: &AppState,
    caller: &Caller,
    resource_type: &str,
    id: &str,
    headers: &HeaderMap,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    caller.require(resource_type, Interaction::Read)?;
    let since = since_of(pairs)?;
    let count = count_of(pairs)?;
    let mut versions = state
        .store
        .history(&caller.access, resource_type, id)
        .await?;
    caller.touch(&versions);
    if versions.is_empty() {
        return Err(ApiError::not_found(format!(
            "{resource_type}/{id} is not known"
        )));
    }
    versions.retain(|version| since.is_none_or(|since| version.last_updated >= since));
    let total = versions.len();
    versions.truncate(count);
    let base = base_url(state.settings.base_url.as_deref(), headers);
    let now = state.clock.now_micros();
    let mut out = Vec::new();
    start_bundle(&mut out, "history", &bundle_id(state), now);
    out.extend_from_slice(format!(",\"total\":{total},").as_bytes());
    let path = format!("{resource_type}/{id}/_history");
    page_links(
        &mut out,
        &Page {
            base: &base,
            path: &path,
            pairs,
            snapshot: None,
            offset: 0,
            count,
            total,
        },
    );
    write_history(&mut out, &base, &versions)?;
    Ok(json_response(StatusCode::OK, out))
}

async fn history_listing(
    state: &AppState,
    caller: &Caller,
    resource_type: Option<&str>,
    headers: &HeaderMap,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    if let Some(resource_type) = resource_type {
        valid_type(resource_type)?;
        caller.require(resource_type, Interaction::Search)?;
    }
    let since = since_of(pairs)?;
    let count = count_of(pairs)?;
    let after = match param(pairs, "_cursor") {
        Some(token) => Some(HistoryCursor::parse(token).ok_or_else(|| {
            ApiError::bad_request("invalid", "_cursor is not a position in this history")
        })?),
        None => None,
    };
    // One more than a page tells whether there is a next page.
    let mut versions = state
        .store
        .history_all(
            &caller.access,
            resource_type,
            since,
            after.as_ref(),
            count + 1,
        )
        .await?;
    let next = (versions.len() > count).then(|| {
        versions.truncate(count);
        versions
            .last()
            .map(|last| HistoryCursor::after(last).token())
    });
    // Whole-system history lists only the types the caller's role and scopes cover.
    versions.retain(|version| caller.may_see(&version.resource_type));
    caller.touch(&versions);
    let base = base_url(state.settings.base_url.as_deref(), headers);
    let now = state.clock.now_micros();
    let mut out = Vec::new();
    start_bundle(&mut out, "history", &bundle_id(state), now);
    out.push(b',');
    let path = match resource_type {
        Some(resource_type) => format!("{resource_type}/_history"),
        None => "_history".to_owned(),
    };
    let url = |extra: &[(&str, String)]| {
        let query = link_query(pairs, extra);
        if query.is_empty() {
            format!("{base}/{path}")
        } else {
            format!("{base}/{path}?{query}")
        }
    };
    let mut first = true;
    out.extend_from_slice(b"\"link\":[");
    let this_page: Vec<(&str, String)> = after.iter().map(|c| ("_cursor", c.token())).collect();
    push_link(&mut out, &mut first, "self", &url(&this_page));
    if let Some(Some(token)) = next {
        push_link(&mut out, &mut first, "next", &url(&[("_cursor", token)]));
    }
    out.extend_from_slice(b"]");
    write_history(&mut out, &base, &versions)?;
    Ok(json_response(StatusCode::OK, out))
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
    fn base_url_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.jp:8080"));
        assert_eq!(base_url(None, &headers), "http://example.jp:8080/fhir");
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("portal.example.jp"),
        );
        headers.insert("x-forwarded-prefix", HeaderValue::from_static("/gw"));
        assert_eq!(
            base_url(None, &headers),
            "https://portal.example.jp/gw/fhir"
        );
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil\"host"));
        assert_eq!(base_url(None, &headers), "https://example.jp:8080/gw/fhir");
    }
}
