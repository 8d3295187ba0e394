//! What the `tsunagi` binary's integration tests share: running the binary, one MLLP exchange and
//! one HTTP/1.1 request over plain sockets, registering a lab company with its client, and the
//! JP Core package in `../shared`.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Output},
    time::Duration,
};

/// Runs `tsunagi args…`.
pub fn tsunagi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `tsunagi args…`, which must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let output = tsunagi(args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Sends one framed HL7 v2 message and reads the framed answer: MSA-1, or `None` when the
/// connection failed on the way.
pub fn mllp_exchange(stream: &mut TcpStream, message: &[u8]) -> Option<String> {
    let mut frame = vec![0x0b];
    frame.extend_from_slice(message);
    frame.extend_from_slice(&[0x1c, 0x0d]);
    stream.write_all(&frame).ok()?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(&[0x1c, 0x0d]) {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        reply.push(byte[0]);
    }
    let text = String::from_utf8(reply).ok()?;
    let msa = text
        .split('\r')
        .find(|segment| segment.starts_with("MSA|"))?;
    Some(msa.split('|').nth(1)?.to_owned())
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`) with a bearer token: the
/// status and the raw answer, or `None` when the connection failed.
pub fn http(
    address: &str,
    method: &str,
    target: &str,
    token: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Option<(u16, String)> {
    let headers: Vec<(&str, &str)> = content_type
        .map(|media| ("Content-Type", media))
        .into_iter()
        .collect();
    http_with(address, method, target, token, &headers, body)
}

/// [`http`] with any further request headers.
pub fn http_with(
    address: &str,
    method: &str,
    target: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n{headers}Content-Length: {}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    Some((status, answer))
}

/// Adds facility `code` of `kind` to the directory of `db`.
pub fn add_facility(db: &str, code: &str, name: &str, kind: &str) {
    ok(&[
        "admin", "facility", "add", "--db", db, "--code", code, "--name", name, "--kind", kind,
    ]);
}

/// Adds user `id` of `facility` with `role` to `db`.
pub fn add_user(db: &str, id: &str, facility: &str, role: &str) {
    ok(&[
        "admin",
        "user",
        "add",
        "--db",
        db,
        "--id",
        id,
        "--name",
        id,
        "--facility",
        facility,
        "--role",
        role,
    ]);
}

/// Registers lab company `code` and its system client `client-lab` (the test key pair's public
/// half) in `db`.
pub fn register_lab(db: &str, code: &str) {
    let jwks = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/keys/lab-rs384.jwks.json");
    ok(&[
        "admin",
        "facility",
        "add",
        "--db",
        db,
        "--code",
        code,
        "--name",
        "検査センター",
        "--kind",
        "lab-company",
    ]);
    ok(&[
        "admin",
        "client",
        "add",
        "--db",
        db,
        "--id",
        "client-lab",
        "--facility",
        code,
        "--kind",
        "system",
        "--jwks",
        jwks.to_str().unwrap(),
        "--scope",
        LAB_SCOPE,
    ]);
}

/// What a lab company's client may do: read, and create its results.
pub const LAB_SCOPE: &str =
    "system/*.rs system/DiagnosticReport.cu system/Observation.cu system/Specimen.cu";

/// The JP Core package beside the checkout (`../shared`), as an operator's
/// `[server] profile_packages` names it.
pub fn jp_core_package() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/jp-core.r4-1.1.1-snap.tgz")
}

/// A small synthetic region (8 people, seed 11, with images) in `dir`: Nihonkai's SS-MIX2
/// storage ingested into `<dir>/t.db`, and its PACS in a real Orthanc. The database URL and
/// the Orthanc.
pub fn nihonkai_with_pacs(dir: &std::path::Path) -> (String, tsunagi_testkit::orthanc::Orthanc) {
    const NIHONKAI: &str = "0610200018";
    let region = dir.join("region");
    let db = format!("sqlite://{}", dir.join("t.db").display());
    ok(&[
        "generate",
        "region",
        "--out",
        region.to_str().unwrap(),
        "--patients",
        "8",
        "--seed",
        "11",
        "--images",
    ]);
    ok(&[
        "ingest",
        "ssmix2",
        "--db",
        &db,
        "--facility",
        NIHONKAI,
        "--json",
        region.join(NIHONKAI).to_str().unwrap(),
    ]);
    let pacs = tsunagi_testkit::orthanc::Orthanc::start().unwrap();
    let stored = pacs
        .store_folder(&region.join("pacs").join(NIHONKAI))
        .unwrap();
    assert!(stored > 0);
    (db, pacs)
}

/// A schema of its own on the test PostgreSQL (`TSUNAGI_TEST_POSTGRES`, default the CI
/// machines' server), dropped again when this is dropped.
pub struct PostgresSchema {
    server: String,
    schema: String,
    /// The store URL to pass as `--db` (the schema as its search path).
    pub url: String,
}

impl PostgresSchema {
    /// A fresh, empty schema named after `tag` and this process.
    pub fn new(tag: &str) -> Self {
        let server = std::env::var("TSUNAGI_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let schema = format!("tsunagi_{tag}_{}", std::process::id());
        let this = Self {
            url: format!("{server}?options=-c%20search_path%3D{schema}"),
            server,
            schema,
        };
        this.sql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", this.schema));
        this.sql(&format!("CREATE SCHEMA {}", this.schema));
        this
    }

    /// Runs one statement in the schema.
    pub fn sql(&self, statement: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use sqlx::Connection;
            let mut connection = sqlx::PgConnection::connect(&self.server).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SET search_path TO {}; {statement}",
                self.schema
            )))
            .execute(&mut connection)
            .await
            .unwrap();
        });
    }
}

impl Drop for PostgresSchema {
    fn drop(&mut self) {
        let statement = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = runtime {
            runtime.block_on(async {
                use sqlx::Connection;
                if let Ok(mut connection) = sqlx::PgConnection::connect(&self.server).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(&mut connection)
                        .await;
                }
            });
        }
    }
}

/// A free TCP port on loopback (bound and released: a test starting a server on it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An ADT^A08 from sender SEND: MSH-10 `<prefix><number:05>`, a new patient
/// `<first_patient + number>` (10 digits) each.
pub fn adt_message(prefix: &str, number: usize, first_patient: usize) -> Vec<u8> {
    format!(
        "MSH|^~\\&|HIS|SEND|TSUNAGI|NET|20261124101500||ADT^A08^ADT_A01|{prefix}{number:05}|P|2.5\r\
         EVN||20261124101500\r\
         PID|||{:010}^^^^PI||Kensa^Taro{number}^^^^^L||19600101|M\r\
         PV1||O\r",
        first_patient + number
    )
    .into_bytes()
}

/// A small deterministic generator (kill times in the crash tests).
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number below `bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

/// Invites `to` to patient `patient`'s record held by `from`.
pub fn add_consent(db: &str, patient: &str, from: &str, to: &str) {
    ok(&[
        "admin",
        "consent",
        "add",
        "--db",
        db,
        "--patient",
        patient,
        "--from",
        from,
        "--to",
        to,
    ]);
}

/// An access token for user `user` with `scope`.
pub fn user_token(db: &str, user: &str, scope: &str) -> String {
    ok(&[
        "token", "issue", "--db", db, "--user", user, "--scope", scope,
    ])
    .trim()
    .to_owned()
}

/// The control ids of every message logged in `db`, sorted; each must have been applied.
pub fn applied_control_ids(db: &str) -> Vec<String> {
    let logged = ok(&[
        "admin",
        "quarantine",
        "list",
        "--db",
        db,
        "--state",
        "applied,quarantined,conflict,dropped",
        "--limit",
        "100000",
    ]);
    let mut control_ids: Vec<String> = logged
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields[2], "applied", "{line}");
            fields[5].to_owned()
        })
        .collect();
    control_ids.sort_unstable();
    control_ids
}

/// Every current Patient of `db`, exported as NDJSON into `dir`.
pub fn exported_patients(db: &str, dir: &std::path::Path) -> Vec<serde_json::Value> {
    ok(&[
        "export",
        "ndjson",
        "--db",
        db,
        "--out",
        dir.to_str().unwrap(),
    ]);
    std::fs::read_to_string(dir.join("Patient.ndjson"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Waits (at most `seconds`) until `db`'s outbox holds nothing pending or dead.
pub fn wait_outbox_settled(db: &str, seconds: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let open = ok(&[
            "admin",
            "outbox",
            "list",
            "--db",
            db,
            "--state",
            "pending,dead",
        ]);
        if open.is_empty() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "still open: {open}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The control id of every delivered outbound message of `db`, one per row.
pub fn delivered_control_ids(db: &str) -> Vec<String> {
    ok(&[
        "admin",
        "outbox",
        "list",
        "--db",
        db,
        "--state",
        "delivered",
        "--limit",
        "1000",
    ])
    .lines()
    .map(|line| line.split('\t').nth(5).unwrap().to_owned())
    .collect()
}
