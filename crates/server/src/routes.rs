//! The router: which path and method goes to which handler, the public routes and the layers
//! every request passes through.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::{
    Extension,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{Extensions, HeaderMap, Method, StatusCode, Version, header},
    response::{IntoResponse, Response},
};
use tsunagi_core::time::format_instant_jst;

use axum::{
    Router,
    routing::{any, get},
};
use tower_http::compression::{
    CompressionLayer, CompressionLevel,
    predicate::{DefaultPredicate, Predicate},
};

use crate::{
    AppState, Who, access, consent_api,
    everything_api::everything,
    format,
    history_api::{history_listing, instance_history},
    limits, notes_api,
    outcome::ApiError,
    pix,
    read_api::{read, vread},
    request::{decode_pairs, json_response, operation_parameters, valid_id, valid_type},
    search_api::{compartment_search, lastn, search},
    security, transaction_api, validation,
};
use crate::{hl7v2_api, request::base_url};

/// The router: FHIR under `/fhir`, DICOMweb under `/dicomweb`, plus `/health/live`,
/// `/health/ready` (also `/healthz`, `/readyz`) and `/metrics` (while no health listener runs).
pub fn router(state: Arc<AppState>) -> Router {
    // Everything under /fhir but the CapabilityStatement needs a valid token, and is audited.
    let protected = protected_routes(&state).route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        security::guard,
    ));
    assemble(state, protected)
}

/// The routes that read patient data; [`router`] puts them behind [`security::guard`].
pub(crate) fn protected_routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/fhir/{type}", any(type_level))
        .route("/fhir/{type}/{id}", any(instance_level))
        .route("/fhir/{type}/{id}/{operation}", any(instance_operation))
        .route("/fhir/{type}/{id}/_history/{version}", any(vread))
        .route("/hl7v2", axum::routing::post(hl7v2))
        // Images: searched in the store, retrieved from the hospital's PACS.
        .route("/dicomweb/studies", get(crate::dicomweb::search_studies))
        .route("/dicomweb/studies/{study}", get(crate::dicomweb::study))
        .route(
            "/dicomweb/studies/{study}/{*rest}",
            get(crate::dicomweb::study),
        )
        // The base itself, with or without a trailing slash (stock clients post to `/fhir/`).
        .route("/fhir", axum::routing::post(transaction))
        .route("/fhir/", axum::routing::post(transaction))
        // Bodies are read into memory only here, behind the guard (`limits::collect_body`).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::collect_body,
        ))
}

/// `POST [base]`: a `transaction` (lab results) or a `batch` Bundle.
pub(crate) async fn transaction(
    State(state): State<Arc<AppState>>,
    Extension(caller): Who,
    peer: Option<Extension<axum::extract::ConnectInfo<crate::tls::Peer>>>,
    request_id: Option<Extension<access::RequestId>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let bundle = crate::request::resource_body(&headers, &body, "Bundle")?;
    match bundle["type"].as_str() {
        Some("batch") => {
            let outer = crate::batch_api::Outer {
                headers: &headers,
                peer: peer.map(|Extension(peer)| peer),
                request_id: request_id.map(|Extension(id)| id.0),
            };
            crate::batch_api::post(&state, &outer, &bundle).await
        }
        Some("transaction") => {
            let scope = transaction_api::lab_scope(&state, &caller).await?;
            transaction_api::post(&state, scope, &caller, &headers, &bundle).await
        }
        _ => Err(ApiError::bad_request(
            "invalid",
            "POST /fhir takes a Bundle of type transaction or batch",
        )),
    }
}

pub(crate) async fn hl7v2(
    State(state): State<Arc<AppState>>,
    Extension(caller): Who,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    hl7v2_api::post(state.intake.get(), &caller, &headers, body).await
}

/// The health and metrics routes, served beside the API and, alone, on the health listener.
/// Beside the API, `/metrics` is served only while no health listener runs: with one, the
/// network's operational figures stay off the port the region's clients reach.
fn health_routes(api: bool) -> Router<Arc<AppState>> {
    let routes = Router::new()
        .route("/health/live", get(|| async { "live" }))
        .route("/health/ready", get(readyz))
        // The first names, kept for what scripts them.
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if api {
        routes.route("/metrics", get(api_metrics))
    } else {
        routes.route("/metrics", get(metrics))
    }
}

/// `/metrics` on the API's listeners: a 404 outcome once a health listener serves it.
async fn api_metrics(state: State<Arc<AppState>>) -> Response {
    if state
        .health
        .metrics_on_health_listener
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return ApiError::not_found("/metrics is served on the health listener").into_response();
    }
    metrics(state).await
}

/// The health listener's router: [`health_routes`] only; anything else is a 404 outcome.
pub(crate) fn health_router(state: Arc<AppState>) -> Router {
    health_routes(false)
        .fallback(|| async {
            crate::outcome::ApiError::not_found(
                "this listener serves /health/live, /health/ready and /metrics only",
            )
        })
        .with_state(state)
}

/// The public routes around the guarded ones, and the layers of every request.
pub(crate) fn assemble(state: Arc<AppState>, protected: Router<Arc<AppState>>) -> Router {
    health_routes(true)
        .route("/fhir/metadata", get(metadata))
        // `GET [base]` is the CapabilityStatement too, as `[base]/metadata` is.
        .route("/fhir", get(metadata))
        .route("/fhir/", get(metadata))
        // SMART discovery under the FHIR base (where SMART clients look) and at the origin.
        .route(
            "/fhir/.well-known/smart-configuration",
            get(security::smart_configuration),
        )
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
                .quality(CompressionLevel::Precise(4))
                // A document's bytes go as the source wrote them, with their length and ranges.
                .compress_when(DefaultPredicate::new().and(
                    |_: StatusCode, _: Version, _: &HeaderMap, extensions: &Extensions| {
                        extensions.get::<crate::binary_api::AsStored>().is_none()
                    },
                )),
        )
        .with_state(state)
}

/// `/health/ready` (and `/readyz`): 200 only while a listener is up, no shutdown has begun, and
/// the database answers with exactly this build's schema; else 503 saying which.
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let unready = |reason: String| (StatusCode::SERVICE_UNAVAILABLE, reason).into_response();
    if state.health.draining.load(Ordering::SeqCst) {
        return unready("draining: shutting down".to_owned());
    }
    if state.health.listening.load(Ordering::SeqCst) == 0 {
        return unready("no listener is up".to_owned());
    }
    // A probe is answered within half a second: a database that cannot give a connection in
    // that time is not ready for more work either.
    match tokio::time::timeout(
        std::time::Duration::from_millis(500),
        state.governance.schema_status(),
    )
    .await
    {
        Ok(Ok(None)) => (StatusCode::OK, "ready").into_response(),
        Ok(Ok(Some(reason))) => unready(reason),
        Ok(Err(_)) => unready("the database does not answer".to_owned()),
        Err(_) => unready("the database did not answer within 500 ms".to_owned()),
    }
}

pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.metrics;
    let body = format!(
        "# HELP tsunagi_http_requests_total HTTP requests answered.\n# TYPE tsunagi_http_requests_total counter\ntsunagi_http_requests_total {}\n\
         # HELP tsunagi_http_client_errors_total Requests answered 4xx.\n# TYPE tsunagi_http_client_errors_total counter\ntsunagi_http_client_errors_total {}\n\
         # HELP tsunagi_http_server_errors_total Requests answered 5xx.\n# TYPE tsunagi_http_server_errors_total counter\ntsunagi_http_server_errors_total {}\n\
         # HELP tsunagi_http_request_seconds_sum Time spent answering requests.\n# TYPE tsunagi_http_request_seconds_sum counter\ntsunagi_http_request_seconds_sum {:.6}\n\
         # HELP tsunagi_connections_open Connections open, by listener.\n# TYPE tsunagi_connections_open gauge\n\
         {}# HELP tsunagi_connections_refused_total Connections turned away over a cap, by listener.\n# TYPE tsunagi_connections_refused_total counter\n\
         {}# HELP tsunagi_connections_evicted_total Unauthenticated connections closed to admit newcomers at the cap, by listener.\n# TYPE tsunagi_connections_evicted_total counter\n{}{}",
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
        m.routes_and_latency(),
    );
    let mut body = body;
    body.push_str(&tsunagi_core::metrics::render());
    body.push_str(&queue_gauges(&state).await);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The database's queues as gauges (the same on every node), read within 500 ms; without an
/// answer, `tsunagi_queues_up 0` and no gauge.
async fn queue_gauges(state: &AppState) -> String {
    let read = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        state.governance.queue_depths(),
    )
    .await;
    let up = "# HELP tsunagi_queues_up Whether the queue gauges below were read from the database.
              # TYPE tsunagi_queues_up gauge
";
    let Ok(Ok(depths)) = read else {
        return format!(
            "{up}tsunagi_queues_up 0
"
        );
    };
    let now = state.clock.now_micros();
    let seconds = |micros: i64| now.saturating_sub(micros).max(0) as f64 / 1e6;
    let mut out = format!(
        "{up}tsunagi_queues_up 1
         # HELP tsunagi_outbox_messages Outbound messages waiting, by state (pending: to deliver; dead: for the operator).
         # TYPE tsunagi_outbox_messages gauge
         tsunagi_outbox_messages{{state=\"pending\"}} {}
         tsunagi_outbox_messages{{state=\"dead\"}} {}
         # HELP tsunagi_outbox_oldest_pending_seconds Age of the oldest outbound message not yet delivered (0: none).
         # TYPE tsunagi_outbox_oldest_pending_seconds gauge
         tsunagi_outbox_oldest_pending_seconds {:.3}
         # HELP tsunagi_hl7v2_quarantined_messages Inbound HL7 v2 messages in quarantine, waiting for the operator.
         # TYPE tsunagi_hl7v2_quarantined_messages gauge
         tsunagi_hl7v2_quarantined_messages {}
         # HELP tsunagi_pull_last_claim_age_seconds Seconds since each scheduled source's last pull began (its lag).
         # TYPE tsunagi_pull_last_claim_age_seconds gauge
",
        depths.outbox_pending,
        depths.outbox_dead,
        depths.outbox_oldest_pending.map_or(0.0, seconds),
        depths.messages_quarantined,
    );
    let label = |source: &str| tsunagi_core::metrics::labels_text(&[("source", source)]);
    for (source, claimed, _) in &depths.pulls {
        out.push_str(&format!(
            "tsunagi_pull_last_claim_age_seconds{{{}}} {:.3}\n",
            label(source),
            seconds(*claimed)
        ));
    }
    out.push_str(
        "# HELP tsunagi_pull_running Whether a node is pulling each scheduled source now.
         # TYPE tsunagi_pull_running gauge
",
    );
    for (source, _, until) in &depths.pulls {
        out.push_str(&format!(
            "tsunagi_pull_running{{{}}} {}\n",
            label(source),
            u8::from(*until > now)
        ));
    }
    out
}

pub(crate) async fn metadata(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let base = base_url(state.settings.base_url.as_deref(), &headers);
    let date = format_instant_jst(state.clock.now_micros());
    let statement =
        crate::capability::capability_statement(&base, &date, &state.settings.tokens.token_url);
    let mut body = Vec::new();
    tsunagi_fhir::json::write_resource(&statement, &mut body)
        .map_err(|error| ApiError::from(tsunagi_store::StoreError::Invalid(error.to_string())))?;
    Ok(json_response(StatusCode::OK, body))
}

pub(crate) async fn type_level(
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

pub(crate) async fn instance_level(
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
    if id == "$validate" {
        if method != Method::POST {
            return Err(ApiError::bad_request(
                "invalid",
                format!("POST the resource to /fhir/{resource_type}/$validate"),
            ));
        }
        return validation::validate_operation(
            &state.settings.profiles,
            &resource_type,
            &pairs,
            &headers,
            &body,
        );
    }
    if method == Method::POST && id == "_search" {
        // A POSTed search carries its parameters as a form body, after the URL's.
        let form = std::str::from_utf8(&body).map_err(|_| {
            ApiError::bad_request("invalid", "the _search body is not UTF-8".to_owned())
        })?;
        pairs.extend(decode_pairs(Some(form)));
    }
    if id.starts_with('$') {
        // Operations that change nothing take GET, or POST with a Parameters body or a form.
        pairs.extend(operation_parameters(&method, &headers, &body, &id)?);
    }
    match (method.clone(), id.as_str()) {
        (Method::GET | Method::POST, "_search") => {
            search(&state, &caller, &resource_type, pairs, &headers).await
        }
        (Method::GET | Method::POST, "$lastn") if resource_type == "Observation" => {
            lastn(&state, &caller, pairs, &headers).await
        }
        (Method::GET | Method::POST, "$ihe-pix") if resource_type == "Patient" => {
            pix::ihe_pix(&state, &caller, &pairs).await
        }
        (Method::GET | Method::POST, operation) if operation.starts_with('$') => {
            Err(ApiError::not_found(format!(
                "{operation} is not an operation of {resource_type}"
            )))
        }
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

/// `[type]/[id]/_history`, `[type]/[id]/$operation`, and compartment searches
/// (`Patient/[id]/[type]`).
pub(crate) async fn instance_operation(
    State(state): State<Arc<AppState>>,
    Extension(caller): Who,
    method: Method,
    Path((resource_type, id, operation)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    valid_type(&resource_type)?;
    valid_id(&id)?;
    let mut pairs = decode_pairs(raw.as_deref());
    if operation.starts_with('$') {
        pairs.extend(operation_parameters(&method, &headers, &body, &operation)?);
    }
    match (method, operation.as_str()) {
        (Method::GET, "_history") => {
            instance_history(&state, &caller, &resource_type, &id, &headers, &pairs).await
        }
        (Method::GET | Method::POST, "$everything") if resource_type == "Patient" => {
            everything(&state, &caller, &id, &headers, &pairs).await
        }
        (Method::GET | Method::POST, "$validate") => {
            crate::read_api::validate_stored(&state, &caller, &resource_type, &id, &pairs).await
        }
        (Method::GET | Method::POST, operation) if operation.starts_with('$') => {
            Err(ApiError::not_found(format!(
                "{operation} is not an operation of {resource_type}"
            )))
        }
        (Method::GET, compartment_type) if resource_type == "Patient" => {
            valid_type(compartment_type)?;
            compartment_search(&state, &caller, &id, compartment_type, pairs, &headers).await
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
