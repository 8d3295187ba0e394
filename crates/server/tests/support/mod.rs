//! A minimal HTTP/1.1 client over real loopback sockets (one connection per request, chunked
//! bodies decoded), and helpers that load resources into a store and serve it: shared by the
//! server's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tsunagi_auth::token::SigningKey;
use tsunagi_core::clock::FixedClock;
use tsunagi_server::{
    AppState, Settings,
    security::{Subject, issue_token, signing_keys},
};
use tsunagi_store::{
    Batch, Governance, Operation, ResourceWrite, Store,
    governance::{Client, Facility},
};
use tsunagi_store_sqlite::SqliteStore;

/// The clock of every test server and store: 2023-11-14T22:13:20Z.
pub const NOW: i64 = 1_700_000_000_000_000;

/// The facility every record loaded by these tests belongs to, and the facility of the system
/// client whose token [`request`] sends.
pub const FACILITY: &str = "0610100010";

/// The token of each test server's system client, by address (see [`serve`]).
static TOKENS: Mutex<Option<HashMap<SocketAddr, String>>> = Mutex::new(None);

/// The access token [`request`] sends to `addr`.
pub fn token_for(addr: SocketAddr) -> String {
    TOKENS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|tokens| tokens.get(&addr).cloned())
        .expect("a server started by support::serve")
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request on a fresh connection, with the server's test token unless `headers`
/// has an Authorization header of its own (`("authorization", "")` sends none).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let token = if headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
    {
        None
    } else {
        Some(token_for(addr))
    };
    exchange(
        stream,
        addr,
        token.as_deref(),
        method,
        target,
        headers,
        body,
    )
    .await
}

/// One HTTP/1.1 request on `stream` (plain or TLS), closed after the reply; with `token` as
/// bearer token when given.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut text = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        text.push_str(&format!("Host: {addr}\r\n"));
    }
    if let Some(token) = token {
        text.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        if !value.is_empty() {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if !body.is_empty() {
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            text.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify once the reply is complete.
    let _ = stream.read_to_end(&mut raw).await;
    parse_reply(&raw).unwrap_or_else(|| panic!("no HTTP reply: {}", String::from_utf8_lossy(&raw)))
}

/// The HTTP/1.1 reply in `raw`, `None` when it holds none.
pub fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut reply = Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    if reply.header("transfer-encoding") == Some("chunked") {
        reply.body = dechunk(&reply.body);
    }
    Some(reply)
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

pub async fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target, &[], "").await
}

pub fn write(resource: Value) -> ResourceWrite {
    let resource_type = resource["resourceType"].as_str().unwrap().to_owned();
    let id = resource["id"].as_str().unwrap().to_owned();
    ResourceWrite::from_json(&resource_type, &id, &resource).unwrap()
}

pub async fn replace(store: &dyn Store, source: &str, resources: Vec<Value>) {
    store
        .apply(Batch {
            operations: vec![Operation::ReplaceSource {
                source_key: source.into(),
                facility: FACILITY.into(),
                resources: resources.into_iter().map(write).collect(),
            }],
        })
        .await
        .unwrap();
}

pub fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == relation)
        .map(|l| l["url"].as_str().unwrap().to_owned())
}

pub fn entry_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Registers [`FACILITY`] and its system client `test-system` (`system/*.rs`), and returns a
/// token for it.
pub async fn system_token(store: &SqliteStore, settings: &Settings, keys: &[SigningKey]) -> String {
    store
        .put_facility(&Facility {
            code: FACILITY.into(),
            name: "荘内病院".into(),
            kind: "hospital".into(),
            active: true,
        })
        .await
        .unwrap();
    system_client(
        store,
        settings,
        keys,
        "test-system",
        FACILITY,
        r#"{"keys":[]}"#,
    )
    .await
}

/// Registers system client `id` of `facility` (`system/*.rs`, with the JWK Set `jwks`) and
/// returns a token for it.
pub async fn system_client(
    store: &SqliteStore,
    settings: &Settings,
    keys: &[SigningKey],
    id: &str,
    facility: &str,
    jwks: &str,
) -> String {
    store
        .put_client(&Client {
            id: id.into(),
            facility: facility.into(),
            kind: "system".into(),
            jwks: jwks.into(),
            scope: "system/*.rs".into(),
            active: true,
            serves: Vec::new(),
        })
        .await
        .unwrap();
    issue_token(
        store,
        &keys[0],
        &settings.tokens,
        Subject::System(id),
        "system/*.rs",
        NOW / 1_000_000,
    )
    .await
    .unwrap()
    .0
}

/// Serves `store` on a fresh loopback port; [`request`] sends the token of a system client of
/// [`FACILITY`] to it.
pub async fn serve(store: Arc<SqliteStore>, settings: Settings) -> SocketAddr {
    serve_with_health(store, settings, false).await.0
}

/// [`serve`], and, with `health`, a health listener on its own port beside the API; sending on
/// the third value stops the API's listener (dropping it does not).
pub async fn serve_with_health(
    store: Arc<SqliteStore>,
    settings: Settings,
    health: bool,
) -> (
    SocketAddr,
    Option<SocketAddr>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keys = signing_keys(store.as_ref(), NOW).await.unwrap();
    let token = system_token(&store, &settings, &keys).await;
    TOKENS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(addr, token);
    // As `tsunagi serve` does: audit records go through the journal (reads import it).
    store.journal_audit().await.unwrap();
    let state = AppState::new(
        store.clone(),
        store,
        Arc::new(FixedClock(NOW)),
        settings,
        keys,
    );
    let mut health_addr = None;
    if health {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        health_addr = Some(listener.local_addr().unwrap());
        tokio::spawn(tsunagi_server::serve_health(
            listener,
            state.clone(),
            std::future::pending(),
        ));
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tsunagi_server::serve(listener, state, async move {
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
    }));
    (addr, health_addr, stop)
}

/// One patient `p1` with 25 laboratory Observations `o1`…`o25` (one a day in May 2024) and a
/// deleted patient `p9`, served on a fresh port.
pub fn observation(id: &str, patient: &str, day: u32) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "urn:oid:1.2.392.200119.4.504", "code": "3A010000002327101"}], "text": "総蛋白"},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": format!("2024-05-{day:02}T09:00:00+09:00"),
        "valueQuantity": {"value": 7.0, "unit": "g/dL"}
    })
}

/// A fresh SQLite store in a new temporary folder, on the fixed clock.
pub async fn fresh_store() -> (Arc<SqliteStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("api.db").display());
    let store = SqliteStore::open(&url, Arc::new(FixedClock(NOW)))
        .await
        .unwrap();
    (Arc::new(store), dir)
}

pub async fn start() -> (SocketAddr, Arc<SqliteStore>, tempfile::TempDir) {
    let (store, dir) = fresh_store().await;
    let mut resources = vec![json!({
        "resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.10610100010", "value": "1"}],
        "name": [{"family": "山田", "given": ["太郎"]}],
        "gender": "male", "birthDate": "1950-04-01"
    })];
    for day in 1..=25 {
        resources.push(observation(&format!("o{day}"), "p1", day));
    }
    replace(store.as_ref(), "p1", resources).await;
    replace(
        store.as_ref(),
        "gone",
        vec![json!({"resourceType": "Patient", "id": "p9"})],
    )
    .await;
    store
        .apply(Batch {
            operations: vec![Operation::DeleteSource {
                source_key: "gone".into(),
            }],
        })
        .await
        .unwrap();
    let addr = serve(store.clone(), Settings::default()).await;
    (addr, store, dir)
}
