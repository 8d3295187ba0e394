//! Request ids, metrics and the access log, in one middleware around every request.
//!
//! Each request gets an id: the client's `X-Request-Id` when it is a short safe token, else a
//! fresh one. The id is echoed in the response and names the tracing span the handler runs in.
//! The access log line (target `tsunagi::access`) holds the method, the route with the resource
//! type and operation filled in, the status, the body size and the duration. It never holds
//! query strings, logical ids or bodies: those can name a patient.

use std::{
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    body::HttpBody,
    extract::{MatchedPath, Request, State},
    http::HeaderValue,
    middleware::Next,
    response::Response,
};
use tracing::Instrument;

use crate::AppState;

/// The request-id header, read and echoed.
pub const REQUEST_ID: &str = "x-request-id";

/// Request counters for `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) requests: AtomicU64,
    pub(crate) client_errors: AtomicU64,
    pub(crate) server_errors: AtomicU64,
    pub(crate) micros: AtomicU64,
    /// The listeners' connection gates (open and refused connections).
    pub(crate) gates: std::sync::Mutex<Vec<tsunagi_net::Gate>>,
    /// Requests answered by method, route (ids as placeholders: a bounded set) and status.
    by_route: std::sync::Mutex<std::collections::BTreeMap<(String, String, u16), u64>>,
    /// Answer times: counts at or under each of [`LATENCY_BUCKETS`], then the rest.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// A per-process random prefix for generated request ids.
    id_prefix: u64,
}

impl Metrics {
    /// One Prometheus line per listener of `value`.
    pub(crate) fn per_listener(
        &self,
        value: impl Fn(&tsunagi_net::Gate) -> u64,
        metric: &str,
    ) -> String {
        let gates = self
            .gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gates
            .iter()
            .map(|gate| format!("{metric}{{listener=\"{}\"}} {}\n", gate.name(), value(gate)))
            .collect()
    }

    /// Counts one answer: its route and status, and its time.
    fn record(&self, method: &str, route: &str, status: u16, micros: u64) {
        let seconds = micros as f64 / 1e6;
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|limit| seconds <= *limit)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        *self
            .by_route
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((method.to_owned(), route.to_owned(), status))
            .or_insert(0) += 1;
    }

    /// The Prometheus lines of requests by route and status, and of the latency histogram.
    pub(crate) fn routes_and_latency(&self) -> String {
        let mut out = String::from(
            "# HELP tsunagi_http_route_requests_total Requests answered, by method, route and status.\n\
             # TYPE tsunagi_http_route_requests_total counter\n",
        );
        for ((method, route, status), count) in self
            .by_route
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!(
                "tsunagi_http_route_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}\n"
            ));
        }
        out.push_str(
            "# HELP tsunagi_http_request_duration_seconds Time to answer a request (to its head).\n\
             # TYPE tsunagi_http_request_duration_seconds histogram\n",
        );
        let mut cumulative = 0;
        for (index, limit) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.latency[index].load(Ordering::Relaxed);
            out.push_str(&format!(
                "tsunagi_http_request_duration_seconds_bucket{{le=\"{limit}\"}} {cumulative}\n"
            ));
        }
        cumulative += self.latency[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        out.push_str(&format!(
            "tsunagi_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}\n\
             tsunagi_http_request_duration_seconds_sum {:.6}\n\
             tsunagi_http_request_duration_seconds_count {cumulative}\n",
            self.micros.load(Ordering::Relaxed) as f64 / 1e6
        ));
        out
    }

    /// Counts a listener's gate in `/metrics`.
    pub(crate) fn watch_gate(&self, gate: tsunagi_net::Gate) {
        self.gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(gate);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            micros: AtomicU64::new(0),
            gates: std::sync::Mutex::default(),
            by_route: std::sync::Mutex::default(),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            id_prefix: RandomState::new().hash_one(std::process::id()),
        }
    }
}

/// The upper bounds, in seconds, of the answer-time histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A client-sent request id we are willing to repeat in headers and logs.
fn acceptable_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A `{type}` segment naming a type we serve (anything else could be data).
fn known_type(segment: &str) -> bool {
    tsunagi_fhir::query::searchable_types().contains(&segment)
}

/// An `{operation}` segment naming an operation or `_history`/`_search`, not data.
fn operation_name(segment: &str) -> bool {
    matches!(segment, "_history" | "_search")
        || (segment.starts_with('$')
            && (2..=64).contains(&segment.len())
            && segment[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// The route with `{type}` and `{operation}` filled in and every id left as a placeholder:
/// `/fhir/Patient/{id}/$everything`.
pub fn loggable_route(template: Option<&str>, path: &str) -> String {
    let Some(template) = template else {
        return String::from("(no route)");
    };
    let mut actual = path.split('/');
    template
        .split('/')
        .map(|part| {
            let value = actual.next().unwrap_or_default();
            match part {
                "{type}" if known_type(value) => value.to_owned(),
                "{operation}" if operation_name(value) => value.to_owned(),
                _ => part.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The request's id, for handlers and the audit trail.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The middleware: id, span, metrics, access log.
pub async fn observe(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let metrics = &state.metrics;
    let number = metrics.requests.fetch_add(1, Ordering::Relaxed);
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable_id(id))
        .map_or_else(
            || format!("{:016x}-{number}", metrics.id_prefix),
            str::to_owned,
        );
    let route = loggable_route(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
        request.uri().path(),
    );
    let method = request.method().clone();
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = next.run(request).instrument(span).await;
    let status = response.status();
    if status.is_client_error() {
        metrics.client_errors.fetch_add(1, Ordering::Relaxed);
    } else if status.is_server_error() {
        metrics.server_errors.fetch_add(1, Ordering::Relaxed);
    }
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    metrics.micros.fetch_add(micros, Ordering::Relaxed);
    metrics.record(method.as_str(), &route, status.as_u16(), micros);
    tracing::info!(
        target: "tsunagi::access",
        request_id = %id,
        method = %method,
        route = %route,
        status = status.as_u16(),
        bytes = response.body().size_hint().exact(),
        micros,
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_keep_types_and_operations_but_never_ids() {
        assert_eq!(
            loggable_route(
                Some("/fhir/{type}/{id}/{operation}"),
                "/fhir/Patient/yamada-1/$everything"
            ),
            "/fhir/Patient/{id}/$everything"
        );
        assert_eq!(
            loggable_route(Some("/fhir/{type}"), "/fhir/Observation"),
            "/fhir/Observation"
        );
        assert_eq!(
            loggable_route(Some("/fhir/{type}"), "/fhir/Yamada"),
            "/fhir/{type}",
            "a segment that is not a served type is not logged"
        );
        assert_eq!(
            loggable_route(
                Some("/fhir/{type}/{id}/{operation}"),
                "/fhir/Patient/p/Taro"
            ),
            "/fhir/Patient/{id}/{operation}"
        );
        assert_eq!(loggable_route(None, "/fhir/x/y/z/w"), "(no route)");
    }

    #[test]
    fn only_safe_client_request_ids_are_repeated() {
        assert!(acceptable_id("3f2c-11:ab_c.d"));
        assert!(!acceptable_id(""));
        assert!(!acceptable_id("a b"));
        assert!(!acceptable_id("x\r\nSet-Cookie: y"));
        assert!(!acceptable_id(&"a".repeat(129)));
    }
}
