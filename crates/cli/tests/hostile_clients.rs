//! Issue 17 against the `tsunagi` binary: `tsunagi serve` under a low open-file limit keeps
//! answering the API and MLLP, and importing its audit journal, while two thousand slow
//! connections press on it (finding 2); the operator's revocations and deactivations hold from
//! the next request (finding 7); registrations and `[[hl7v2]] addresses` are checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    io::BufRead,
    net::{IpAddr, SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::{add_facility, add_user, http, mllp_exchange, ok, register_lab, tsunagi};

const HOSPITAL: &str = "0610100010";
const LAB: &str = "0610900001";

/// A `tsunagi serve` child, killed when dropped (a failing test leaves no server behind).
struct Serving(Child);

impl Serving {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn stop(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tsunagi serve` with `config`, under an open-file limit of `nofile` when given: the child,
/// its FHIR address and its MLLP address; stderr goes to `log`.
fn start(
    db: &str,
    config: &std::path::Path,
    nofile: Option<u32>,
    log: &std::path::Path,
) -> (Serving, String, Option<String>) {
    let binary = env!("CARGO_BIN_EXE_tsunagi");
    let serve = format!(
        "exec {binary} serve --db '{db}' --config '{}' --listen 127.0.0.1:0",
        config.display()
    );
    let script = match nofile {
        Some(limit) => format!("ulimit -n {limit} && {serve}"),
        None => serve,
    };
    let mut child = Serving(
        Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut http = String::new();
    let mut mllp = None;
    loop {
        let line = lines.next().expect("serve prints its addresses").unwrap();
        if let Some(rest) = line.strip_prefix("FHIR base http://") {
            rest.trim_end_matches("/fhir").clone_into(&mut http);
        }
        if let Some(rest) = line.strip_prefix("HL7 v2 over MLLP on ") {
            mllp = Some(rest.split(' ').next().unwrap().to_owned());
        }
        // Printed last, whatever is configured.
        if line.starts_with("outbound delivery") || line.starts_with("delivering notes") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    // Serving begins once the signing keys are loaded: a token issued before could be signed
    // with a key the server never loaded.
    let ready = std::time::Instant::now();
    while support::http(&http, "GET", "/fhir/metadata", "", None, b"").map(|(status, _)| status)
        != Some(200)
    {
        assert!(
            ready.elapsed() < Duration::from_secs(20),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, http, mllp)
}

/// A connection to `address` from the loopback address `from` (bind before connect).
async fn connect_from(address: &str, from: [u8; 4]) -> Option<tokio::net::TcpStream> {
    let target: SocketAddr = address.parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(IpAddr::from(from), 0)).ok()?;
    tokio::time::timeout(Duration::from_secs(2), socket.connect(target))
        .await
        .ok()?
        .ok()
}

fn token(db: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "issue", "--db", db];
    all.extend_from_slice(args);
    ok(&all).trim().to_owned()
}

fn status(address: &str, target: &str, token: &str) -> u16 {
    http(address, "GET", target, token, None, b"")
        .map(|(status, _)| status)
        .unwrap_or(0)
}

fn a08(control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|HIS|SHONAI|TSUNAGI|NET|20261124101500||ADT^A08^ADT_A01|{control_id}|P|2.5\rEVN||20261124101500\rPID|||1000001^^^^PI||Yamada^Taro^^^^^L||19600101|M\rPV1||O\r"
    )
    .into_bytes()
}

/// Open descriptors of a process.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_answering_under_a_low_file_limit_with_two_thousand_slow_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("press.db").display());
    register_lab(&db, LAB);
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[store]\nurl = \"{db}\"\n\
             [server]\nheader_read_timeout_seconds = 4\nkeep_alive_timeout_seconds = 3\n\
             [mllp]\nlisten = \"127.0.0.1:0\"\nidle_timeout_seconds = 4\nframe_timeout_seconds = 4\n\
             [[hl7v2]]\nfacility = \"{LAB}\"\nsending_facility = \"SHONAI\"\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let (child, address, mllp) = start(&db, &config, Some(512), &log);
    // Issued once the server runs: the token names the origin it serves under.
    let system = token(&db, &["--system", "client-lab", "--scope", "system/*.rs"]);
    let mllp = mllp.expect("an MLLP listener");
    let pid = child.id();

    // The same requests unpressed, as the reference for the figures printed at the end.
    let mut unpressed = Duration::ZERO;
    for _ in 0..10 {
        let asked = Instant::now();
        assert_eq!(status(&address, "/fhir/metadata", &system), 200);
        assert_eq!(status(&address, "/fhir/Patient?_count=1", &system), 200);
        unpressed = unpressed.max(asked.elapsed());
    }
    // 1,700 connections to the API from 17 addresses (half silent, half with unfinished
    // headers) and 300 to MLLP (unfinished frames): far more than 512 descriptors.
    let started = Instant::now();
    let mut held = Vec::new();
    for number in 0..1700u32 {
        let from = [127, 0, 1, 2 + (number % 17) as u8];
        if let Some(mut stream) = connect_from(&address, from).await {
            if number % 2 == 0 {
                let _ = stream
                    .write_all(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n")
                    .await;
            }
            held.push(stream);
        }
    }
    for number in 0..300u32 {
        let from = [127, 0, 2, 2 + (number % 10) as u8];
        if let Some(mut stream) = connect_from(&mllp, from).await {
            let _ = stream.write_all(b"\x0bMSH|^~\\&|HIS|SHONAI|").await;
            held.push(stream);
        }
    }
    let pressed = started.elapsed();
    // The server stays within its limit, and answers the API and MLLP meanwhile.
    let held_descriptors = descriptors(pid);
    assert!(held_descriptors <= 512, "{held_descriptors} descriptors");
    let mut slowest = Duration::ZERO;
    for round in 0..10 {
        let asked = Instant::now();
        assert_eq!(
            status(&address, "/fhir/metadata", &system),
            200,
            "round {round}"
        );
        assert_eq!(
            status(&address, "/fhir/Patient?_count=1", &system),
            200,
            "round {round}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );
        slowest = slowest.max(asked.elapsed());
    }
    let mut sender = TcpStream::connect(&mllp).unwrap();
    sender
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        mllp_exchange(&mut sender, &a08("P1")).as_deref(),
        Some("AA")
    );
    drop(sender);
    // Every held connection is closed by the server within its timeouts.
    let mut kept = 0;
    for stream in &mut held {
        let mut sink = [0u8; 512];
        let closed = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if closed.is_err() {
            kept += 1;
        }
    }
    assert_eq!(kept, 0, "connections the server never closed");
    let reclaimed = started.elapsed();
    // The audit trail of the requests above was imported by the server itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.stop();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(!log.contains("audit journal import failed"), "{log}");
    let audit = ok(&["admin", "audit", "--db", &db, "--limit", "1000"]);
    let searches = audit
        .lines()
        .filter(|line| line.contains("GET /fhir/Patient?_count=1"))
        .count();
    assert_eq!(
        searches, 20,
        "one audit record per search answered: {audit}"
    );
    println!(
        "{} of 2,000 connections opened in {pressed:?}; server at {held_descriptors} descriptors (limit 512); slowest pair of API requests meanwhile {slowest:?} (unpressed {unpressed:?}); every held connection closed by the server after {reclaimed:?}",
        held.len()
    );
}

#[test]
fn revocations_and_deactivations_hold_from_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("revoke.db").display());
    register_lab(&db, LAB);
    add_facility(&db, HOSPITAL, "荘内病院", "hospital");
    add_user(&db, "dr", HOSPITAL, "doctor");
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(&config, format!("version = 1\n[store]\nurl = \"{db}\"\n")).unwrap();
    let log = dir.path().join("serve.log");
    let (child, address, _) = start(&db, &config, None, &log);
    let search = "/fhir/Patient?_count=1";

    let user = token(&db, &["--user", "dr", "--scope", "user/*.rs"]);
    let first = http(&address, "GET", search, &user, None, b"").unwrap();
    assert_eq!(first.0, 200, "{}", first.1);
    ok(&["admin", "token", "revoke", "--db", &db, "--subject", "dr"]);
    assert_eq!(status(&address, search, &user), 401);
    std::thread::sleep(Duration::from_millis(1100));
    let fresh = token(&db, &["--user", "dr", "--scope", "user/*.rs"]);
    assert_eq!(
        status(&address, search, &fresh),
        200,
        "issued after the revocation"
    );
    ok(&["admin", "user", "deactivate", "--db", &db, "--id", "dr"]);
    assert_eq!(status(&address, search, &fresh), 401);

    let system = token(&db, &["--system", "client-lab", "--scope", "system/*.rs"]);
    assert_eq!(status(&address, search, &system), 200);
    ok(&[
        "admin",
        "facility",
        "deactivate",
        "--db",
        &db,
        "--code",
        LAB,
    ]);
    let (refused, answer) = http(&address, "GET", search, &system, None, b"").unwrap();
    assert_eq!(refused, 401);
    assert!(answer.contains("not an active member"), "{answer}");
    let facilities = ok(&["admin", "facility", "list", "--db", &db]);
    assert!(
        facilities.contains(&format!("{LAB}\tlab-company\tinactive")),
        "{facilities}"
    );
    child.stop();

    // Registrations that would open more than they say are refused by name.
    let jwks = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/keys/portal-es384.jwks.json");
    let jwks = jwks.to_str().unwrap();
    let portal = |id: &str, serves: &str| {
        tsunagi(&[
            "admin",
            "client",
            "add",
            "--db",
            &db,
            "--id",
            id,
            "--facility",
            HOSPITAL,
            "--kind",
            "portal",
            "--jwks",
            jwks,
            "--scope",
            "user/*.rs",
            "--serves",
            serves,
        ])
    };
    let unknown = portal("portal-x", "0699999999");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("0699999999"));
    let reserved = portal("operator", HOSPITAL);
    assert!(!reserved.status.success());
    assert!(portal("portal-r", LAB).status.success());
    let clients = ok(&["admin", "client", "list", "--db", &db]);
    assert!(
        clients.contains(&format!(
            "portal-r\t{HOSPITAL}\tportal\tactive\tuser/*.rs\t{LAB}"
        )),
        "{clients}"
    );
    ok(&[
        "admin",
        "client",
        "deactivate",
        "--db",
        &db,
        "--id",
        "portal-r",
    ]);
    assert!(
        ok(&["admin", "client", "list", "--db", &db])
            .contains("portal-r\t0610100010\tportal\tinactive")
    );
    let neither = tsunagi(&["admin", "token", "revoke", "--db", &db]);
    assert!(!neither.status.success());
    let audit = ok(&["admin", "audit", "--db", &db, "--limit", "1000"]);
    for act in [
        "token-revoke",
        "user-deactivate",
        "facility-deactivate",
        "client-deactivate",
    ] {
        assert!(audit.contains(act), "{act} is not in the audit trail");
    }
}

#[test]
fn a_sender_address_that_is_not_an_address_stops_serve_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("bad.db").display());
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[store]\nurl = \"{db}\"\n[[hl7v2]]\nfacility = \"{HOSPITAL}\"\nsending_facility = \"SHONAI\"\naddresses = [\"10.1.2.0/33\"]\n"
        ),
    )
    .unwrap();
    let output = tsunagi(&["serve", "--db", &db, "--config", config.to_str().unwrap()]);
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("addresses") && said.contains("10.1.2.0/33"),
        "{said}"
    );
    // A timeout out of range (0, or one whose deadline cannot be computed) is refused by name.
    std::fs::write(
        &config,
        format!("version = 1\n[store]\nurl = \"{db}\"\n[server]\nkeep_alive_timeout_seconds = 9223372036854775807\n"),
    )
    .unwrap();
    let output = tsunagi(&["serve", "--db", &db, "--config", config.to_str().unwrap()]);
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("keep_alive_timeout_seconds") && said.contains("1 to 86400"),
        "{said}"
    );
}
