//! Serving HTTP/1.1 connections under limits (issue 17 §2): every listener of the API (plain,
//! TLS, mutual TLS) accepts through a [`tsunagi_net::Gate`] (a cap on its connections and on
//! each peer address's), wraps each socket in a [`tsunagi_net::Watched`] stream (keep-alive
//! and send timeouts), completes TLS handshakes within the header-read timeout on the
//! connection's own task, and serves HTTP with hyper's header-read timeout and bounded header
//! sizes. Request bodies are bounded in size and time by [`crate::limits`].
//!
//! A full listener makes room for a newcomer by closing its oldest connection that has not
//! carried an authenticated request (the guard spares a connection once a valid token came on
//! it), so idle or slow sockets cannot keep authenticated clients out; only when every open
//! connection has proven itself is a newcomer refused. A connection over a cap is answered, when
//! it can be, with a short HTTP error (429 for one address over its share, 503 for a full
//! listener) as an OperationOutcome, then closed; on a TLS listener it is simply closed. Stopping drains: no new connections, every open one is
//! asked to finish its request in progress and close, for at most [`HttpLimits::drain`].

use std::{
    future::Future,
    io,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;
use tsunagi_net::{Admission, Evictable, Gate, Watched};

use crate::{AppState, tls::Peer};

/// The limits of the API's connections and requests (`[server]` in `tsunagi.toml`).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections of one listener at once.
    pub max_connections: usize,
    /// Connections from one address at once (behind a reverse proxy, the proxy is one address).
    pub max_connections_per_peer: usize,
    /// The request line and headers must be complete within this, counted from when the
    /// server starts waiting for them (a new connection, or the end of the previous answer);
    /// a TLS handshake too.
    pub header_read_timeout: Duration,
    /// A connection silent this long after an answer (or after it opened) is closed.
    pub keep_alive_timeout: Duration,
    /// A request's body must have arrived entirely within this.
    pub body_read_timeout: Duration,
    /// An answer the client does not read for this long is abandoned.
    pub send_timeout: Duration,
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// How long a stopping server waits for requests in progress.
    pub drain: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_peer: 256,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_body_bytes: 16 * 1024 * 1024,
            drain: Duration::from_secs(10),
        }
    }
}

/// The largest request head hyper itself buffers; heads up to [`crate::limits::MAX_HEAD_BYTES`]
/// are judged by the API (an OperationOutcome), larger ones get hyper's bare 431.
const HYPER_MAX_HEAD: usize = 64 * 1024;
/// Headers hyper parses at most (the API refuses more than [`crate::limits::MAX_HEADERS`]).
const HYPER_MAX_HEADERS: usize = 256;
/// Connections over a cap being answered at once; more are closed without an answer.
const TURN_AWAY_AT_ONCE: usize = 64;

/// Connections of the health listener at once (probes and metrics scrapes, all unproven: the
/// oldest makes room for a newcomer), and from one address (the kubelet's probes come from
/// its node, Prometheus from its pod): one peer cannot push out the others.
pub const HEALTH_MAX_CONNECTIONS: usize = 64;
const HEALTH_MAX_PER_PEER: usize = 8;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The API (and the public health routes beside it); counts as a listener up for
    /// `/health/ready`.
    Api,
    /// Only `/health/*` and `/metrics`, under a cap of its own, so probes are answered while
    /// the API's listeners are full.
    Health,
}

/// How a listener's connections become HTTP streams.
#[derive(Clone)]
pub(crate) enum Transport {
    /// Plain TCP.
    Plain,
    /// TLS; with `mutual`, the client certificate names the client.
    Tls { acceptor: TlsAcceptor, mutual: bool },
}

/// Serves `state`'s router on `listener` until `shutdown`, then drains.
pub(crate) async fn serve(
    name: &'static str,
    listener: TcpListener,
    transport: Transport,
    role: Role,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut limits = state.settings.limits.clone();
    if role == Role::Health {
        // Probes and scrapes come from few addresses (the kubelet, Prometheus).
        limits.max_connections = HEALTH_MAX_CONNECTIONS;
        limits.max_connections_per_peer = HEALTH_MAX_PER_PEER;
    }
    let gate = Gate::new(
        name,
        tsunagi_net::Limits {
            max_connections: limits.max_connections,
            max_per_peer: limits.max_connections_per_peer,
            // A full listener makes room by closing a connection that never carried a valid
            // token (the guard spares those that did).
            evict: true,
        },
    );
    state.metrics.watch_gate(gate.clone());
    let health = state.clone();
    let api = role == Role::Api;
    if api {
        health.health.listening.fetch_add(1, Ordering::SeqCst);
    } else {
        health
            .health
            .metrics_on_health_listener
            .store(true, Ordering::SeqCst);
    }
    let router = match role {
        Role::Api => crate::router(state),
        Role::Health => crate::routes::health_router(state),
    };
    let (stop, stopping) = watch::channel(false);
    let turning_away = Arc::new(Semaphore::new(TURN_AWAY_AT_ONCE));
    tokio::pin!(shutdown);
    loop {
        let (stream, address, admission) = tokio::select! {
            () = &mut shutdown => break,
            accepted = gate.accept(&listener, &|_| true) => accepted,
        };
        match admission {
            Admission::Admitted(ticket) => {
                let router = router.clone();
                let transport = transport.clone();
                let limits = limits.clone();
                let stopping = stopping.clone();
                tokio::spawn(async move {
                    let evictable = ticket.evictable();
                    tokio::select! {
                        () = connection(stream, address, transport, router, &limits, stopping, evictable) => {}
                        () = ticket.evicted() => {
                            tracing::debug!(target: "tsunagi::net", %address, "unproven connection evicted for a newcomer");
                        }
                    }
                    drop(ticket);
                });
            }
            refused => {
                let (status, text) = match refused {
                    Admission::PeerFull => (
                        "429 Too Many Requests",
                        format!(
                            "this address already has {} connections open (limit max_connections_per_peer); close some or retry later",
                            limits.max_connections_per_peer
                        ),
                    ),
                    _ => (
                        "503 Service Unavailable",
                        format!(
                            "the server has its {} connections open (limit max_connections); retry later",
                            limits.max_connections
                        ),
                    ),
                };
                tracing::debug!(target: "tsunagi::net", listener = name, %address, status, "connection turned away");
                match (&transport, turning_away.clone().try_acquire_owned()) {
                    (Transport::Plain, Ok(permit)) => {
                        tokio::spawn(async move {
                            let _permit = permit;
                            turn_away(stream, status, &text).await;
                        });
                    }
                    _ => drop(stream),
                }
            }
        }
    }
    // Not ready from now on: a load balancer sends no new work here while what is open drains.
    if api {
        health.health.draining.store(true, Ordering::SeqCst);
    }
    drop(listener);
    let _ = stop.send(true);
    if !gate.drained(limits.drain).await {
        tracing::warn!(target: "tsunagi::net", listener = name, open = gate.open(), "connections still open after the drain deadline");
    }
    if api {
        health.health.listening.fetch_sub(1, Ordering::SeqCst);
    }
    Ok(())
}

/// Answers a connection over a cap with `status` and an OperationOutcome, then closes it after
/// giving the client a moment to read.
async fn turn_away(mut stream: TcpStream, status: &str, text: &str) {
    let body = crate::outcome::outcome("error", "throttled", text).to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        crate::outcome::FHIR_JSON,
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sends until it closes, so its request does not reset the
        // connection before it has read the answer.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// One connection: TLS if the listener speaks it, then HTTP/1.1 until the client closes, a
/// limit is hit, or the server stops.
async fn connection(
    stream: TcpStream,
    address: std::net::SocketAddr,
    transport: Transport,
    router: Router,
    limits: &HttpLimits,
    stopping: watch::Receiver<bool>,
    evictable: Evictable,
) {
    let _ = stream.set_nodelay(true);
    let stream = Watched::new(stream, limits.keep_alive_timeout, limits.send_timeout);
    match transport {
        Transport::Plain => {
            let peer = Peer {
                address,
                certified_client: None,
            };
            http(stream, peer, router, limits, stopping, evictable.clone()).await;
        }
        Transport::Tls { acceptor, mutual } => {
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::info!(target: "tsunagi::tls", %address, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(target: "tsunagi::tls", %address, "TLS handshake timed out");
                    return;
                }
            };
            let certified_client = if mutual {
                let name = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| crate::tls::common_name(leaf.as_ref()));
                let Some(name) = name else {
                    tracing::info!(target: "tsunagi::tls", %address, "client certificate names no single common name");
                    return;
                };
                Some(Arc::from(name))
            } else {
                None
            };
            let peer = Peer {
                address,
                certified_client,
            };
            http(stream, peer, router, limits, stopping, evictable.clone()).await;
        }
    }
}

async fn http<S>(
    stream: S,
    peer: Peer,
    router: Router,
    limits: &HttpLimits,
    mut stopping: watch::Receiver<bool>,
    evictable: Evictable,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer.clone()));
            request.extensions_mut().insert(evictable.clone());
            let mut router = router.clone();
            async move { tower_service::Service::call(&mut router, request).await }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(HYPER_MAX_HEAD)
        // A malformed header line fails the request (hyper's bare 400): dropping it instead
        // could let a lenient proxy in front frame the request differently (smuggling).
        .max_headers(HYPER_MAX_HEADERS);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stopping.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(target: "tsunagi::net", %error, "connection ended");
    }
}
