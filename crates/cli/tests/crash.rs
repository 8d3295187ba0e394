//! Crash consistency (promise R4): a sender streams HL7 v2 messages over MLLP while `tsunagi
//! serve` is killed with SIGKILL at random moments and restarted; the sender resends whatever it
//! has no ACK for. Afterwards every message is stored exactly once — one log row per control id,
//! one resource version per message — and every ACK the sender saw stands for committed data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

const MESSAGES: usize = 400;

fn tsunagi(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn start(db: &str, config: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args([
            "serve",
            "--db",
            db,
            "--config",
            config,
            "--listen",
            "127.0.0.1:0",
            "--mllp-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn message(number: usize) -> Vec<u8> {
    format!(
        "MSH|^~\\&|HIS|SEND|TSUNAGI|NET|20261124101500||ADT^A08^ADT_A01|C{number:05}|P|2.5\r\
         EVN||20261124101500\r\
         PID|||{:010}^^^^PI||Kensa^Taro{number}^^^^^L||19600101|M\r\
         PV1||O\r",
        100_000 + number
    )
    .into_bytes()
}

/// Sends one message and reads its ACK; `None` when the connection failed on the way.
fn exchange(stream: &mut TcpStream, message: &[u8]) -> Option<String> {
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

/// A small deterministic generator for the kill times.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn every_acknowledged_message_is_stored_exactly_once_across_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[store]\nurl = \"{db}\"\n\n[[hl7v2]]\nfacility = \"0610100010\"\nsending_facility = \"SEND\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Arc::new(Mutex::new(start(&db, &config, port)));
    let done = Arc::new(AtomicBool::new(false));

    // The killer: SIGKILL at random moments (20–250 ms apart), then a restart.
    let killer = {
        let (server, done, db, config) = (server.clone(), done.clone(), db.clone(), config.clone());
        std::thread::spawn(move || {
            let mut random = Lcg(2026);
            let mut kills = 0;
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20 + random.below(230)));
                let mut child = server.lock().unwrap();
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                *child = start(&db, &config, port);
            }
            kills
        })
    };

    // The sender: at least once, in order; what it has no ACK for is sent again.
    let mut acknowledged: BTreeMap<usize, String> = BTreeMap::new();
    let started = Instant::now();
    let mut stream: Option<TcpStream> = None;
    let mut number = 0;
    let mut interrupted = 0;
    while number < MESSAGES {
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        let connection = match stream.as_mut() {
            Some(connection) => connection,
            None => match TcpStream::connect(("127.0.0.1", port)) {
                Ok(connection) => {
                    connection
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    stream.insert(connection)
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        match exchange(connection, &message(number)) {
            Some(code) => {
                acknowledged.insert(number, code);
                number += 1;
            }
            None => {
                interrupted += 1;
                stream = None;
            }
        }
    }
    done.store(true, Ordering::SeqCst);
    let kills = killer.join().unwrap();
    {
        let mut child = server.lock().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
    eprintln!("{kills} kills, {interrupted} exchanges interrupted and resent");
    assert!(kills >= 3, "the server was killed only {kills} times");
    assert!(interrupted >= 1, "no message was in flight at a kill");
    assert!(
        acknowledged.values().all(|code| code == "AA"),
        "{acknowledged:?}"
    );

    // One log row per control id, every one applied.
    let logged = tsunagi(&[
        "admin",
        "quarantine",
        "list",
        "--db",
        &db,
        "--state",
        "applied,quarantined,conflict,dropped",
        "--limit",
        "100000",
    ]);
    let mut control_ids: Vec<&str> = logged
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields[2], "applied", "{line}");
            fields[5]
        })
        .collect();
    control_ids.sort_unstable();
    let expected: Vec<String> = (0..MESSAGES).map(|n| format!("C{n:05}")).collect();
    assert_eq!(control_ids, expected);

    // One Patient per message, each at version 1: nothing applied twice.
    let export = dir.path().join("export");
    tsunagi(&[
        "export",
        "ndjson",
        "--db",
        &db,
        "--out",
        export.to_str().unwrap(),
    ]);
    let patients = std::fs::read_to_string(export.join("Patient.ndjson")).unwrap();
    let versions: Vec<serde_json::Value> = patients
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .collect();
    assert_eq!(versions.len(), MESSAGES);
    assert!(
        versions.iter().all(|p| p["meta"]["versionId"] == "1"),
        "a message was applied twice"
    );
}
