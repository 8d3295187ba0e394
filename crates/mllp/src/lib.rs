//! MLLP over TCP (optionally TLS): the socket layer of the HL7 v2 feeds.
//!
//! Layers: bytes (this crate's sockets) → frames ([`tsunagi_hl7v2::mllp::FrameDecoder`]) →
//! messages and ACKs (the [`FrameHandler`], e.g. the HL7 v2 feed adapter's intake). A connection
//! is served one frame at a time, in order: the next frame is read only after the previous one
//! was answered, which is what MLLP senders expect and what keeps one sender's messages in order.
//!
//! Limits, so no peer can exhaust the gateway: a frame larger than
//! [`ServerOptions::max_frame`] closes the connection (memory stays bounded); at most
//! [`ServerOptions::max_connections`] connections are served at once (more are closed at
//! accept); a connection silent for [`ServerOptions::idle_timeout`] — including one that
//! started a frame and never ended it — is closed. A handler that cannot answer (its store
//! failed) closes the connection without a reply, so the sender resends.

pub mod client;
pub mod standin;

use std::{net::SocketAddr, sync::Arc, time::Duration};

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

/// What to do with frames.
#[async_trait::async_trait]
pub trait FrameHandler: Send + Sync + 'static {
    /// Handles one frame: `Ok(Some(reply))` sends the reply framed, `Ok(None)` sends nothing,
    /// `Err(())` closes the connection without an answer.
    async fn handle(&self, frame: Vec<u8>, peer: &PeerInfo) -> Result<Option<Vec<u8>>, ()>;
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
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_frame: 16 * 1024 * 1024,
            max_connections: 256,
            idle_timeout: Duration::from_secs(300),
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

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: PeerInfo,
    options: ServerOptions,
    handler: Arc<dyn FrameHandler>,
) {
    let mut decoder = FrameDecoder::new(options.max_frame);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let frame_content = match decoder.next_frame() {
            Ok(Some(content)) => content,
            Ok(None) => {
                let read =
                    tokio::time::timeout(options.idle_timeout, stream.read(&mut buffer)).await;
                match read {
                    Ok(Ok(0)) => {
                        if decoder.pending() > 0 {
                            tracing::warn!(target: "tsunagi::mllp", address = %peer.address, bytes = decoder.pending(), "connection closed inside a frame; nothing stored");
                        }
                        return;
                    }
                    Ok(Ok(count)) => {
                        decoder.push(&buffer[..count]);
                        continue;
                    }
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::info!(target: "tsunagi::mllp", address = %peer.address, "idle timeout; closed");
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(target: "tsunagi::mllp", address = %peer.address, %error, "framing error; closed");
                return;
            }
        };
        if decoder.discarded() > 0 {
            tracing::debug!(target: "tsunagi::mllp", address = %peer.address, bytes = decoder.discarded(), "bytes outside frames discarded");
        }
        match handler.handle(frame_content, &peer).await {
            Ok(Some(reply)) => {
                if stream.write_all(&frame(&reply)).await.is_err() || stream.flush().await.is_err()
                {
                    return;
                }
            }
            Ok(None) => {}
            Err(()) => return,
        }
    }
}
