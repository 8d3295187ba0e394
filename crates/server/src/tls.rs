//! TLS for the FHIR API (issue 4 §6): rustls server configurations — TLS 1.3 only by default,
//! TLS 1.2 with ECDHE AEAD suites only when configured, verified client certificates on the
//! mutual-TLS listener — and the [`TlsListener`] the API serves on; handshakes run on each
//! connection's own task (`crate::listen`), so a client stalling its handshake delays nobody
//! else, and is cut off after the header-read timeout.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    CipherSuite, RootCertStore, ServerConfig, SupportedCipherSuite,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use x509_cert::der::{
    Decode,
    asn1::{ObjectIdentifier, PrintableStringRef, Utf8StringRef},
};

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

/// A listening socket and the TLS configuration its connections are served with.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    mutual: bool,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` with `config`. With `mutual`, a connection whose verified client
    /// certificate names no single common name is closed after the handshake.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>, mutual: bool) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            tcp: listener,
            acceptor: TlsAcceptor::from(config),
            mutual,
            local,
        })
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.local
    }

    /// The socket, the acceptor and whether client certificates name clients.
    pub(crate) fn into_parts(self) -> (TcpListener, TlsAcceptor, bool) {
        (self.tcp, self.acceptor, self.mutual)
    }
}
