//! The FHIR REST API that portals and clinic systems read: axum routes over any
//! [`tsunagi_store::Store`].
//!
//! - `GET /fhir/metadata`; read, vread, instance/type/system history; search by GET and
//!   `POST _search`; `Patient/{id}/$everything`;
//! - searchset Bundles cut from [`snapshot`]s, so pages are stable under ingestion; links are
//!   absolute on the base the client used (`--base-url`, else `X-Forwarded-*`, else `Host`);
//! - images: `/dicomweb` (QIDO-RS from the store, WADO-RS forwarded to the hospital's PACS),
//!   under the same token, consent and audit ([`dicomweb`]);
//! - writes: notes and documents, consents, lab transactions, HL7 v2 over HTTP, and
//!   `$validate` against the loaded profiles; other writes answer 405 (data arrives through the
//!   adapters);
//! - errors are [`outcome::ApiError`]s, turned into OperationOutcomes here and nowhere else.

pub mod access;
mod audit_api;
#[cfg(feature = "bench-baseline")]
pub mod baseline;
mod batch_api;
mod binary_api;
mod bundle;
pub mod capability;
mod consent_api;
pub mod dicomweb;
mod everything_api;
pub mod format;
mod history_api;
pub mod hl7v2_api;
pub mod limits;
pub mod listen;
mod notes_api;
pub mod outcome;
mod pix;
mod read_api;
mod request;
mod routes;
mod search_api;
pub mod security;
pub mod snapshot;
mod standing;
pub mod tls;
mod token_api;
pub mod transaction_api;
mod validation;
mod write_answer;

use std::{sync::Arc, time::Duration};

use axum::Extension;
use tsunagi_auth::token::SigningKey;
use tsunagi_core::clock::Clock;
use tsunagi_store::{Governance, Store};

pub use crate::routes::router;
pub(crate) use crate::{
    bundle::{bundle_id, link_query, push_link, start_bundle},
    read_api::etag,
    request::{base_url, decode_pairs, json_response, param, valid_id},
};
use crate::{
    security::{AuditWriter, Caller, TokenSettings},
    snapshot::Snapshots,
};

/// The authenticated caller, put in the request by [`security::guard`].
pub(crate) type Who = Extension<Arc<Caller>>;

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
    /// The hospitals' PACSes images are opened from, through `/dicomweb` ([`dicomweb`]).
    pub dicomweb: dicomweb::DicomWebSettings,
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
            dicomweb: dicomweb::DicomWebSettings::default(),
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
    /// Forwards image retrievals to the hospitals' PACSes.
    dicomweb: dicomweb::Proxy,
    /// Listeners serving, and whether the server is draining (`/health/ready`).
    health: Health,
}

/// What `/health/ready` reads besides the database.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Listeners accepting connections.
    pub(crate) listening: std::sync::atomic::AtomicUsize,
    /// A shutdown began: no new work should come here.
    pub(crate) draining: std::sync::atomic::AtomicBool,
    /// A health listener serves `/metrics`: the API's listeners no longer do.
    pub(crate) metrics_on_health_listener: std::sync::atomic::AtomicBool,
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
            dicomweb: dicomweb::Proxy::new(&settings.dicomweb),
            health: Health::default(),
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

/// Serves the API on a bound listener until the future `shutdown` completes, then drains
/// (see [`listen`]: connection caps and timeouts from [`Settings::limits`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listen::serve(
        "http",
        listener,
        listen::Transport::Plain,
        listen::Role::Api,
        state,
        shutdown,
    )
    .await
}

/// Serves only `/health/live`, `/health/ready` (and `/healthz`, `/readyz`) and `/metrics` on
/// `listener`, plain HTTP under a connection cap of its own, until `shutdown` completes: probes
/// and scrapes are answered while the API's listeners are full. It does not count as a
/// listener up for `/health/ready`. Once it runs, the API's listeners answer `/metrics` 404.
pub async fn serve_health(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listen::serve(
        "health",
        listener,
        listen::Transport::Plain,
        listen::Role::Health,
        state,
        shutdown,
    )
    .await
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
        listen::Role::Api,
        state,
        shutdown,
    )
    .await
}
