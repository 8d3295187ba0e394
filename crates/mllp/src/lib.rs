//! MLLP over TCP (optionally TLS): the socket layer of the HL7 v2 feeds.
//!
//! Layers: bytes (this crate's sockets) → frames ([`tsunagi_hl7v2::mllp::FrameDecoder`]) →
//! messages and ACKs (the [`FrameHandler`], e.g. the HL7 v2 feed adapter's intake). A connection's
//! frames are handed over in order and answered in order. Most senders wait for each ACK; one
//! that pipelines may have up to [`ServerOptions::pipeline`] frames taken before the first is
//! answered (with a handler that implements [`FrameHandler::accept`]), which lets the intake
//! commit them together.
//!
//! Limits, so no peer can exhaust the gateway (issue 17 §2): a frame larger than
//! [`ServerOptions::max_frame`] closes the connection (memory stays bounded); at most
//! [`ServerOptions::max_connections`] connections are served at once, and
//! [`ServerOptions::max_connections_per_peer`] from one address (more are closed at accept,
//! through a [`tsunagi_net::Gate`], whose accept backs off when descriptors run out); on a
//! plain-TCP listener a connection from an address the handler does not admit
//! ([`FrameHandler::admits`]: no sender is registered there) is closed at once; a TLS
//! handshake must end within [`ServerOptions::frame_timeout`]; a connection silent for
//! [`ServerOptions::idle_timeout`] is closed, and so is one whose frame, once begun, is not
//! ended within [`ServerOptions::frame_timeout`] (a sender trickling bytes). A handler that
//! cannot answer (its store failed) closes the connection without a reply, so the sender
//! resends.

pub mod client;
pub mod standin;

use std::{
    collections::VecDeque,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    time::Instant,
};
use tsunagi_hl7v2::mllp::{FrameDecoder, frame};
use tsunagi_net::{Admission, Evictable, Gate, Watched};

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's address.
    pub address: SocketAddr,
    /// The client id its TLS client certificate names (mutual TLS only).
    pub client: Option<String>,
}

/// The answer a frame will get: `Ok(Some(reply))` sends the reply framed, `Ok(None)` sends
/// nothing, `Err(())` closes the connection without an answer.
pub type Answer = Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, ()>> + Send>>;

/// What to do with frames.
#[async_trait::async_trait]
pub trait FrameHandler: Send + Sync + 'static {
    /// Whether a plain-TCP connection from `address` is served at all (the default: yes).
    fn admits(&self, _address: IpAddr) -> bool {
        true
    }

    /// Handles one frame: `Ok(Some(reply))` sends the reply framed, `Ok(None)` sends nothing,
    /// `Err(())` closes the connection without an answer.
    async fn handle(&self, frame: Vec<u8>, peer: &PeerInfo) -> Result<Option<Vec<u8>>, ()>;

    /// Takes a frame in arrival order and returns its answer-to-be, so that the connection can
    /// read the sender's next frame while this one is processed (a pipelining sender). Answers
    /// are written in frame order whatever the handler does. The default handles the frame to
    /// the end before the next is read.
    async fn accept(&self, frame: Vec<u8>, peer: &PeerInfo) -> Answer {
        let answer = self.handle(frame, peer).await;
        Box::pin(std::future::ready(answer))
    }
}

/// Listener limits.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Largest frame accepted, in bytes.
    pub max_frame: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections from one address at once.
    pub max_connections_per_peer: usize,
    /// A connection silent this long between frames is closed.
    pub idle_timeout: Duration,
    /// A frame must end this long after its first byte, and a TLS handshake end this long
    /// after the connection opened.
    pub frame_timeout: Duration,
    /// Frames of one connection taken before the first of them is answered (a sender that
    /// pipelines); further frames wait in the socket. Answers keep frame order.
    pub pipeline: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_frame: 16 * 1024 * 1024,
            max_connections: 256,
            max_connections_per_peer: 32,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(60),
            pipeline: 64,
        }
    }
}

/// Names the client a verified leaf certificate (DER) belongs to.
pub type ClientNamer = Arc<dyn Fn(&[u8]) -> Option<String> + Send + Sync>;

/// TLS for the listener: the rustls config and how to name a client from its certificate.
#[derive(Clone)]
pub struct Tls {
    /// The server config (client certificates required or not).
    pub config: Arc<rustls::ServerConfig>,
    /// The client id a verified leaf certificate (DER) names.
    pub client_id: ClientNamer,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// Serves MLLP on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Tls>,
    options: ServerOptions,
    handler: Arc<dyn FrameHandler>,
) {
    let gate = Gate::new(
        "mllp",
        tsunagi_net::Limits {
            max_connections: options.max_connections,
            max_per_peer: options.max_connections_per_peer,
            // A full listener makes room by closing a connection that has had no message
            // acknowledged (AA/AE): a sender that delivers is never closed for a newcomer.
            evict: true,
        },
    );
    // On plain TCP, an address no sender is registered at is closed before the gate counts it.
    let screen = {
        let handler = handler.clone();
        let plain = tls.is_none();
        move |address: IpAddr| !plain || handler.admits(address)
    };
    loop {
        let (stream, address, admission) = gate.accept(&listener, &screen).await;
        let ticket = match admission {
            Admission::Admitted(ticket) => ticket,
            Admission::Screened => {
                tracing::debug!(target: "tsunagi::mllp", %address, "no sender is registered at this address; closed");
                continue;
            }
            refused => {
                tracing::debug!(target: "tsunagi::mllp", %address, limit = ?refused, "connection limit reached; closed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let evictable = ticket.evictable();
            tokio::select! {
                () = serve_connection(stream, address, tls, options, handler, evictable) => {}
                () = ticket.evicted() => {
                    tracing::info!(target: "tsunagi::mllp", %address, "connection without an acknowledged message closed for a newcomer");
                }
            }
            drop(ticket);
        });
    }
}

/// One accepted connection: TLS when the listener speaks it, then frames until it closes.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    address: SocketAddr,
    tls: Option<Tls>,
    options: ServerOptions,
    handler: Arc<dyn FrameHandler>,
    evictable: Evictable,
) {
    // A sender that stops reading its ACKs is cut off after the frame timeout (the idle timeout
    // between frames is the connection's own, so the keep-alive clock here never runs first).
    let stream = Watched::new(
        stream,
        options.idle_timeout.saturating_mul(2),
        options.frame_timeout,
    );
    match tls {
        None => {
            let peer = PeerInfo {
                address,
                client: None,
            };
            connection(stream, peer, options, handler, evictable).await;
        }
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
            let handshake =
                tokio::time::timeout(options.frame_timeout, acceptor.accept(stream)).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::warn!(target: "tsunagi::mllp", %address, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(target: "tsunagi::mllp", %address, "TLS handshake timed out");
                    return;
                }
            };
            let client = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| (tls.client_id)(leaf.as_ref()));
            let peer = PeerInfo { address, client };
            connection(stream, peer, options, handler, evictable).await;
        }
    }
}

/// Whether an answer acknowledges a message as taken (MSA-1 AA, AE, CA or CE): the sender is a
/// real one. Read with the ACK reader, from the MSA segment itself: the MSH before it repeats
/// what the sender wrote about itself, which may be anything, `MSA|AA` included.
fn acknowledged(reply: &[u8]) -> bool {
    std::str::from_utf8(reply)
        .ok()
        .and_then(|text| tsunagi_hl7v2::Message::parse(text).ok())
        .and_then(|message| tsunagi_hl7v2::ack::read_ack(&message).ok())
        .is_some_and(|ack| ack.code.outcome() != tsunagi_hl7v2::ack::Outcome::Rejected)
}

/// What a connection waits for next.
enum Event {
    Answered(Result<Option<Vec<u8>>, ()>),
    Read(std::io::Result<usize>),
    Idle,
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: PeerInfo,
    options: ServerOptions,
    handler: Arc<dyn FrameHandler>,
    evictable: Evictable,
) {
    let mut decoder = FrameDecoder::new(options.max_frame);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut pending: VecDeque<Answer> = VecDeque::new();
    let in_flight = options.pipeline.max(1);
    let mut reading = true;
    // When the frame now arriving began (its first byte), while one is arriving.
    let mut frame_started: Option<Instant> = None;
    loop {
        // Take every complete frame, in order, up to the pipeline's depth.
        while pending.len() < in_flight {
            match decoder.next_frame() {
                Ok(Some(content)) => {
                    if decoder.discarded() > 0 {
                        tracing::debug!(target: "tsunagi::mllp", address = %peer.address, bytes = decoder.discarded(), "bytes outside frames discarded");
                    }
                    pending.push_back(handler.accept(content, &peer).await);
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(target: "tsunagi::mllp", address = %peer.address, %error, "framing error; closed");
                    reading = false;
                    break;
                }
            }
        }
        if pending.is_empty() && !reading {
            return;
        }
        // A frame begun and not ended is on the clock.
        if decoder.pending() == 0 {
            frame_started = None;
        } else if frame_started.is_none() {
            frame_started = Some(Instant::now());
        }
        let take_more = reading && pending.len() < in_flight;
        let event = match pending.front_mut() {
            // Nothing in flight: wait for bytes, at most the idle timeout between frames and
            // what is left of the frame timeout inside one.
            None => {
                let wait = match frame_started {
                    Some(started) => options
                        .frame_timeout
                        .saturating_sub(started.elapsed())
                        .min(options.idle_timeout),
                    None => options.idle_timeout,
                };
                match tokio::time::timeout(wait, stream.read(&mut buffer)).await {
                    Ok(read) => Event::Read(read),
                    Err(_) => Event::Idle,
                }
            }
            // The sender waits for us: no idle timeout while an answer is being made.
            Some(front) if take_more => tokio::select! {
                answer = front => Event::Answered(answer),
                read = stream.read(&mut buffer) => Event::Read(read),
            },
            Some(front) => Event::Answered(front.await),
        };
        match event {
            Event::Answered(answer) => {
                pending.pop_front();
                match answer {
                    Ok(Some(reply)) => {
                        if stream.write_all(&frame(&reply)).await.is_err()
                            || stream.flush().await.is_err()
                        {
                            return;
                        }
                        if acknowledged(&reply) {
                            evictable.spare();
                        }
                    }
                    Ok(None) => {}
                    Err(()) => return,
                }
            }
            Event::Read(Ok(0)) => {
                if decoder.pending() > 0 {
                    tracing::warn!(target: "tsunagi::mllp", address = %peer.address, bytes = decoder.pending(), "connection closed inside a frame; nothing stored");
                }
                // Frames already taken are still answered (their data may be committed).
                reading = false;
            }
            Event::Read(Ok(count)) => decoder.push(&buffer[..count]),
            Event::Read(Err(_)) => return,
            Event::Idle => {
                if frame_started.is_some() {
                    tracing::info!(target: "tsunagi::mllp", address = %peer.address, bytes = decoder.pending(), "a frame did not end within the frame timeout; closed, nothing stored");
                } else {
                    tracing::info!(target: "tsunagi::mllp", address = %peer.address, "idle timeout; closed");
                }
                return;
            }
        }
    }
}
