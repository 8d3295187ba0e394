//! MLLP over TCP (optionally TLS): the socket layer of the HL7 v2 feeds.
//!
//! Layers: bytes (this crate's sockets) → frames ([`tsunagi_hl7v2::mllp::FrameDecoder`]) →
//! messages and ACKs (the [`FrameHandler`], e.g. the HL7 v2 feed adapter's intake). A connection's
//! frames are handed over in order and answered in order. Most senders wait for each ACK; one
//! that pipelines may have up to [`ServerOptions::pipeline`] frames taken before the first is
//! answered (with a handler that implements [`FrameHandler::accept`]), which lets the intake
//! commit them together.
//!
//! Limits, so no peer can exhaust the gateway: a frame larger than
//! [`ServerOptions::max_frame`] closes the connection (memory stays bounded); at most
//! [`ServerOptions::max_connections`] connections are served at once (more are closed at
//! accept); a connection silent for [`ServerOptions::idle_timeout`] — including one that
//! started a frame and never ended it — is closed. A handler that cannot answer (its store
//! failed) closes the connection without a reply, so the sender resends.

pub mod client;
pub mod standin;

use std::{
    collections::VecDeque, future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::Semaphore,
};
use tsunagi_hl7v2::mllp::{FrameDecoder, frame};

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
    /// A connection with no complete frame for this long is closed.
    pub idle_timeout: Duration,
    /// Frames of one connection taken before the first of them is answered (a sender that
    /// pipelines); further frames wait in the socket. Answers keep frame order.
    pub pipeline: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_frame: 16 * 1024 * 1024,
            max_connections: 256,
            idle_timeout: Duration::from_secs(300),
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
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    loop {
        let (stream, address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(target: "tsunagi::mllp", %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(target: "tsunagi::mllp", %address, "connection limit reached; closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => {
                    let peer = PeerInfo {
                        address,
                        client: None,
                    };
                    connection(stream, peer, options, handler).await;
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
                    let handshake =
                        tokio::time::timeout(options.idle_timeout, acceptor.accept(stream)).await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::warn!(target: "tsunagi::mllp", %address, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let client = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|leaf| (tls.client_id)(leaf.as_ref()));
                    let peer = PeerInfo { address, client };
                    connection(stream, peer, options, handler).await;
                }
            }
        });
    }
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
) {
    let mut decoder = FrameDecoder::new(options.max_frame);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut pending: VecDeque<Answer> = VecDeque::new();
    let in_flight = options.pipeline.max(1);
    let mut reading = true;
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
        let take_more = reading && pending.len() < in_flight;
        let event = match pending.front_mut() {
            // Nothing in flight: wait for bytes, at most the idle timeout.
            None => {
                match tokio::time::timeout(options.idle_timeout, stream.read(&mut buffer)).await {
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
                tracing::info!(target: "tsunagi::mllp", address = %peer.address, "idle timeout; closed");
                return;
            }
        }
    }
}
