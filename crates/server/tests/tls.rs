//! TLS over real loopback sockets: TLS 1.3 by default, TLS 1.2 only with ECDHE AEAD suites
//! when configured, plaintext and stalled handshakes harmless, and the mutual-TLS listener that
//! binds each token (and each client assertion) to the client its certificate names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use serde_json::json;
use support::{FACILITY, NOW, Reply, fresh_store, parse_reply, system_client, system_token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tsunagi_core::clock::FixedClock;
use tsunagi_server::{
    AppState, Settings,
    security::signing_keys,
    tls::{TlsFiles, TlsListener, common_name, server_config},
};
use tsunagi_store::{Governance, governance::Client};
use tsunagi_store_sqlite::SqliteStore;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tls")
        .join(name)
}

fn files(allow_tls12: bool) -> TlsFiles {
    TlsFiles {
        certificate_chain: fixture("server.pem"),
        private_key: fixture("server.key"),
        allow_tls12,
    }
}

/// A server over TLS (mutual when `client_ca` is given) on a fresh port, with the token of
/// `test-system` and of `lab-company-1` (both of [`FACILITY`]).
struct Served {
    addr: SocketAddr,
    store: Arc<SqliteStore>,
    test_system: String,
    lab: String,
    _dir: tempfile::TempDir,
}

async fn serve(allow_tls12: bool, client_ca: Option<&str>) -> Served {
    let (store, dir) = fresh_store().await;
    let settings = Settings::default();
    let keys = signing_keys(store.as_ref(), NOW).await.unwrap();
    let test_system = system_token(&store, &settings, &keys).await;
    let jwks = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/keys/lab-rs384.jwks.json"),
    )
    .unwrap();
    let lab = system_client(&store, &settings, &keys, "lab-company-1", FACILITY, &jwks).await;
    let config = server_config(&files(allow_tls12), client_ca.map(fixture).as_deref()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TlsListener::new(tcp, config, client_ca.is_some()).unwrap();
    let addr = listener.address();
    let state = AppState::new(
        store.clone(),
        store.clone(),
        Arc::new(FixedClock(NOW)),
        settings,
        keys,
    );
    tokio::spawn(tsunagi_server::serve_tls(
        listener,
        state,
        std::future::pending(),
    ));
    Served {
        addr,
        store,
        test_system,
        lab,
        _dir: dir,
    }
}

/// A client trusting the test CA, limited to `versions`, presenting `identity` (a fixture name
/// such as `client-lab`) when given.
fn client(
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<&str>,
) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(name) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(fixture(&format!("{name}.pem")))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(fixture(&format!("{name}.key"))).unwrap(),
            )
            .unwrap(),
    };
    TlsConnector::from(Arc::new(config))
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
const ONLY_12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// What a TLS request came to: the reply and the negotiated version and suite, or why there was
/// no reply.
struct Outcome {
    reply: Option<Reply>,
    version: Option<rustls::ProtocolVersion>,
    suite: Option<rustls::CipherSuite>,
    error: Option<String>,
}

async fn attempt(
    connector: &TlsConnector,
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    target: &str,
    body: &str,
) -> Outcome {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = match connector.connect(name, tcp).await {
        Ok(stream) => stream,
        Err(error) => {
            return Outcome {
                reply: None,
                version: None,
                suite: None,
                error: Some(error.to_string()),
            };
        }
    };
    let version = stream.get_ref().1.protocol_version();
    let suite = stream
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .map(|suite| suite.suite());
    let mut text =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(token) = token {
        text.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !body.is_empty() {
        text.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    text.push_str("\r\n");
    text.push_str(body);
    let mut error = stream
        .write_all(text.as_bytes())
        .await
        .err()
        .map(|e| e.to_string());
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw).await {
        error.get_or_insert(e.to_string());
    }
    Outcome {
        reply: parse_reply(&raw),
        version,
        suite,
        error,
    }
}

#[tokio::test]
async fn tls_1_3_only_by_default() {
    let served = serve(false, None).await;
    let answer = attempt(
        &client(BOTH, None),
        served.addr,
        Some(&served.test_system),
        "GET",
        "/fhir/Patient?_count=1",
        "",
    )
    .await;
    assert_eq!(answer.reply.as_ref().map(|r| r.status), Some(200));
    assert_eq!(answer.version, Some(rustls::ProtocolVersion::TLSv1_3));
    // A client that speaks only TLS 1.2 is refused at the handshake.
    let old = attempt(
        &client(ONLY_12, None),
        served.addr,
        None,
        "GET",
        "/fhir/metadata",
        "",
    )
    .await;
    assert!(old.reply.is_none());
    assert!(old.error.is_some(), "the handshake fails with an error");
}

#[tokio::test]
async fn tls_1_2_when_configured_offers_only_ecdhe_aead_suites() {
    let served = serve(true, None).await;
    let answer = attempt(
        &client(ONLY_12, None),
        served.addr,
        None,
        "GET",
        "/fhir/metadata",
        "",
    )
    .await;
    assert_eq!(answer.reply.as_ref().map(|r| r.status), Some(200));
    assert_eq!(answer.version, Some(rustls::ProtocolVersion::TLSv1_2));
    let suite = format!("{:?}", answer.suite.unwrap());
    assert!(
        suite.starts_with("TLS_ECDHE_")
            && (suite.contains("_GCM_") || suite.contains("CHACHA20_POLY1305")),
        "{suite}"
    );
}

#[tokio::test]
async fn plaintext_and_stalled_handshakes_harm_nobody() {
    let served = serve(false, None).await;
    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    plain
        .write_all(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut raw)).await;
    assert!(
        !raw.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    // Connections that never start their handshake do not hold up the next client.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(tokio::net::TcpStream::connect(served.addr).await.unwrap());
    }
    let answer = tokio::time::timeout(
        Duration::from_secs(8),
        attempt(
            &client(BOTH, None),
            served.addr,
            None,
            "GET",
            "/fhir/metadata",
            "",
        ),
    )
    .await
    .expect("served while 20 handshakes stall");
    assert_eq!(answer.reply.map(|r| r.status), Some(200));
    drop(stalled);
}

#[tokio::test]
async fn mutual_tls_binds_tokens_to_the_certified_client() {
    let served = serve(false, Some("ca.pem")).await;
    let lab = client(BOTH, Some("client-lab"));
    // The lab's certificate and the lab's token: served.
    let own = attempt(
        &lab,
        served.addr,
        Some(&served.lab),
        "GET",
        "/fhir/Patient?_count=1",
        "",
    )
    .await;
    assert_eq!(own.reply.as_ref().map(|r| r.status), Some(200));
    // The lab's certificate with another client's token: refused as an invalid token.
    let borrowed = attempt(
        &lab,
        served.addr,
        Some(&served.test_system),
        "GET",
        "/fhir/Patient?_count=1",
        "",
    )
    .await;
    let borrowed = borrowed.reply.expect("an HTTP answer");
    assert_eq!(borrowed.status, 401);
    assert!(
        borrowed
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    // No certificate, or one from a CA the server does not trust: no HTTP at all.
    for connector in [client(BOTH, None), client(BOTH, Some("client-rogue"))] {
        let refused = attempt(
            &connector,
            served.addr,
            Some(&served.lab),
            "GET",
            "/fhir/Patient?_count=1",
            "",
        )
        .await;
        assert!(refused.reply.is_none(), "refused before HTTP");
    }
    // The refusal of the borrowed token is audited with the peer's address.
    let trail = served
        .store
        .audit(&tsunagi_store::governance::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        trail.iter().any(|listed| {
            let event: serde_json::Value = tsunagi_store::audit::render(&listed.record);
            event["outcome"] == "4" && event.to_string().contains("127.0.0.1")
        }),
        "{trail:?}"
    );
}

#[tokio::test]
async fn mutual_tls_token_endpoint_takes_only_the_certified_clients_assertion() {
    let served = serve(false, Some("ca.pem")).await;
    let keys = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/keys");
    // The same RS384 key is registered for a second client, so only the certificate tells them
    // apart.
    served
        .store
        .put_client(&Client {
            id: "lab-other".into(),
            facility: FACILITY.into(),
            kind: "system".into(),
            jwks: std::fs::read_to_string(keys.join("lab-rs384.jwks.json")).unwrap(),
            scope: "system/*.rs".into(),
            active: true,
            serves: Vec::new(),
        })
        .await
        .unwrap();
    let token_url = Settings::default().tokens.token_url;
    let assertion = |client: &str, jti: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS384);
        header.kid = Some("lab-1".into());
        let claims = json!({"iss": client, "sub": client, "aud": token_url, "exp": NOW / 1_000_000 + 60, "jti": jti});
        let signed = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(
                &std::fs::read(keys.join("lab-rs384.pem")).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        format!(
            "grant_type=client_credentials&scope=system%2F*.rs&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={signed}"
        )
    };
    let lab = client(BOTH, Some("client-lab"));
    let other = attempt(
        &lab,
        served.addr,
        None,
        "POST",
        "/auth/token",
        &assertion("lab-other", "a"),
    )
    .await;
    let other = other.reply.expect("an HTTP answer");
    assert_eq!(other.status, 401);
    assert_eq!(other.json()["error"], "invalid_client");
    let own = attempt(
        &lab,
        served.addr,
        None,
        "POST",
        "/auth/token",
        &assertion("lab-company-1", "b"),
    )
    .await;
    let own = own.reply.expect("an HTTP answer");
    assert_eq!(own.status, 200, "{}", String::from_utf8_lossy(&own.body));
    let token = own.json()["access_token"].as_str().unwrap().to_owned();
    let read = attempt(&lab, served.addr, Some(&token), "GET", "/fhir/metadata", "").await;
    assert_eq!(read.reply.map(|r| r.status), Some(200));
}

#[test]
fn the_client_id_is_the_certificates_single_common_name() {
    let pem = CertificateDer::pem_file_iter(fixture("client-lab.pem"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(common_name(pem.as_ref()).as_deref(), Some("lab-company-1"));
    assert_eq!(common_name(b"not a certificate"), None);
}

#[test]
fn configuration_errors_name_the_file() {
    let missing = TlsFiles {
        certificate_chain: fixture("absent.pem"),
        private_key: fixture("server.key"),
        allow_tls12: false,
    };
    let error = server_config(&missing, None).unwrap_err().to_string();
    assert!(error.contains("absent.pem"), "{error}");
    // A key that does not match the certificate.
    let mismatched = TlsFiles {
        certificate_chain: fixture("server.pem"),
        private_key: fixture("client-lab.key"),
        allow_tls12: false,
    };
    assert!(server_config(&mismatched, None).is_err());
    // A certificate file given as the CA bundle that holds no certificate.
    let error = server_config(&files(false), Some(&fixture("server.key")))
        .unwrap_err()
        .to_string();
    assert!(error.contains("server.key"), "{error}");
}
