//! TLS for the FHIR API (issue 4 §6): rustls server configurations — TLS 1.3 only by default,
//! TLS 1.2 with ECDHE AEAD suites only when configured, verified client certificates on the
//! mutual-TLS listener — and an axum [`Listener`] that completes handshakes off its accept loop,
//! so that a client stalling its handshake delays nobody else.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::connect_info::Connected,
    serve::{IncomingStream, Listener},
};
use rustls::{
    CipherSuite, RootCertStore, ServerConfig, SupportedCipherSuite,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use x509_cert::der::{
    Decode,
    asn1::{ObjectIdentifier, PrintableStringRef, Utf8StringRef},
};

/// A handshake not finished within this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 1024;
/// The subject attribute commonName (X.520).
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// The TLS 1.2 suites offered when TLS 1.2 is enabled: ephemeral ECDH key exchange and AEAD
/// ciphers only (BSI TR-02102-2, Mozilla "intermediate").
const TLS12_SUITES: [CipherSuite; 6] = [
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Who is at the other end of a connection: its address and, on the mutual-TLS listener, the
/// client id its verified certificate names.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The remote socket address.
    pub address: SocketAddr,
    /// `Some` only on the mutual-TLS listener: the subject common name of the client
    /// certificate, which must equal the `client_id` of every token used on the connection.
    pub certified_client: Option<Arc<str>>,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Self {
            address: *stream.remote_addr(),
            certified_client: None,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// The server's certificate and key, and whether TLS 1.2 is allowed besides 1.3.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM: the server certificate first, then its intermediates.
    pub certificate_chain: PathBuf,
    /// PEM: the private key (PKCS#8, SEC1 or PKCS#1).
    pub private_key: PathBuf,
    /// Offer TLS 1.2 (ECDHE AEAD suites only) to clients that cannot speak 1.3.
    pub allow_tls12: bool,
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds nothing usable.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination (a key that does not match the certificate, say).
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn config_error(error: impl ToString) -> TlsError {
    TlsError::Config(error.to_string())
}

/// The rustls configuration of a listener. With `client_ca`, every client must present a
/// certificate issued under one of its CAs and naming a client id (mutual TLS).
pub fn server_config(
    files: &TlsFiles,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(provider(files.allow_tls12));
    let versions: &[&rustls::SupportedProtocolVersion] = if files.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(config_error)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path)? {
                roots
                    .add(certificate)
                    .map_err(|error| file_error(path, error))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(config_error)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_file(&files.private_key)
        .map_err(|error| file_error(&files.private_key, error))?;
    let mut config = builder
        .with_single_cert(certificates(&files.certificate_chain)?, key)
        .map_err(config_error)?;
    // The server speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// ring's provider with the TLS 1.2 suites cut to [`TLS12_SUITES`] (none without TLS 1.2).
fn provider(allow_tls12: bool) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|suite| match suite {
        SupportedCipherSuite::Tls13(_) => true,
        SupportedCipherSuite::Tls12(_) => allow_tls12 && TLS12_SUITES.contains(&suite.suite()),
    });
    provider
}

/// Every certificate of a PEM file; an error when it holds none.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, error))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certificates)
}

/// The subject common name of a DER certificate, when it has exactly one.
pub fn common_name(certificate: &[u8]) -> Option<String> {
    let certificate = x509_cert::Certificate::from_der(certificate).ok()?;
    let mut names = certificate
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|attribute| attribute.oid == COMMON_NAME)
        .map(|attribute| {
            attribute
                .value
                .decode_as::<Utf8StringRef<'_>>()
                .map(|name| name.as_str().to_owned())
                .or_else(|_| {
                    attribute
                        .value
                        .decode_as::<PrintableStringRef<'_>>()
                        .map(|name| name.as_str().to_owned())
                })
                .ok()
        });
    let name = names.next()??;
    match names.next() {
        None if !name.is_empty() => Some(name),
        _ => None,
    }
}

/// TLS connections ready to serve, handshaken by tasks of their own.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `listener` with `config`. With `mutual`, a connection whose verified client
    /// certificate names no single common name is closed after the handshake.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>, mutual: bool) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(config),
            mutual,
            sender,
        ));
        Ok(Self {
            local,
            ready,
            acceptor,
        })
    }
}

impl TlsListener {
    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Closes the listening socket with the server.
        self.acceptor.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop never ends on its own; nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            address: self.local,
            certified_client: None,
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    mutual: bool,
    ready: mpsc::Sender<(TlsStream<TcpStream>, Peer)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(target: "tsunagi::tls", %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                .await
            {
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
                    .and_then(|leaf| common_name(leaf.as_ref()));
                let Some(name) = name else {
                    tracing::info!(target: "tsunagi::tls", %address, "client certificate names no single common name");
                    return;
                };
                Some(Arc::from(name))
            } else {
                None
            };
            let _ = ready
                .send((
                    stream,
                    Peer {
                        address,
                        certified_client,
                    },
                ))
                .await;
        });
    }
}
