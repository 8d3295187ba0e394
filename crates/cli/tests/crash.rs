//! Crash consistency (promise R4): `tsunagi serve` is killed with SIGKILL at random moments and
//! restarted while work streams through it.
//! - In: a sender streams HL7 v2 over MLLP and resends whatever it has no ACK for; afterwards
//!   every message is stored exactly once (one log row per control id, one resource version per
//!   message), so every ACK the sender saw stands for committed data.
//! - Out: notes are written through the API (retried on failure, safe by identifier) and
//!   delivered to the EHR stand-in; afterwards each note was queued once, is delivered, and the
//!   hospital accepted every queued control id — at least once, never under another MSH-10.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

const MESSAGES: usize = 400;

mod support;

use support::{Lcg, http, mllp_exchange as exchange, ok as tsunagi};

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
    support::adt_message("C", number, 100_000)
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
    let expected: Vec<String> = (0..MESSAGES).map(|n| format!("C{n:05}")).collect();
    assert_eq!(support::applied_control_ids(&db), expected);

    // One Patient per message, each at version 1: nothing applied twice.
    let versions = support::exported_patients(&db, &dir.path().join("export"));
    assert_eq!(versions.len(), MESSAGES);
    assert!(
        versions.iter().all(|p| p["meta"]["versionId"] == "1"),
        "a message was applied twice"
    );
}

/// POSTs a note; the status, or `None` when the connection failed.
fn post(address: &str, token: &str, body: &str) -> Option<u16> {
    http(
        address,
        "POST",
        "/fhir/Communication",
        token,
        Some("application/fhir+json"),
        body.as_bytes(),
    )
    .map(|(status, _)| status)
}

#[test]
fn every_note_reaches_the_hospital_at_least_once_across_sigkills() {
    const NOTES: usize = 100;
    const HOSPITAL: &str = "0610100010";
    const CLINIC: &str = "0610400014";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let standin = runtime
        .block_on(tsunagi_mllp::standin::StandIn::start("127.0.0.1:0"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("out.db").display());
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (mllp_port, http_port) = (free_port(), free_port());
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[store]\nurl = \"{db}\"\n\n\
             [[hl7v2]]\nfacility = \"{HOSPITAL}\"\nsending_facility = \"SEND\"\n\n\
             [[outbound]]\nfacility = \"{HOSPITAL}\"\nmllp = \"{}\"\n\n\
             [outbox]\nfirst_backoff_seconds = 1\nmax_backoff_seconds = 1\ntimeout_seconds = 2\n",
            standin.address()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    for (code, kind) in [(HOSPITAL, "hospital"), (CLINIC, "clinic")] {
        tsunagi(&[
            "admin", "facility", "add", "--db", &db, "--code", code, "--name", code, "--kind", kind,
        ]);
    }
    tsunagi(&[
        "admin",
        "user",
        "add",
        "--db",
        &db,
        "--id",
        "dr",
        "--name",
        "dr",
        "--facility",
        CLINIC,
        "--role",
        "doctor",
    ]);
    let start_at = move |db: &str, config: &str| {
        Command::new(env!("CARGO_BIN_EXE_tsunagi"))
            .args([
                "serve",
                "--db",
                db,
                "--config",
                config,
                "--listen",
                &format!("127.0.0.1:{http_port}"),
                "--mllp-listen",
                &format!("127.0.0.1:{mllp_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Register the patient (and invite the clinic) before the chaos starts.
    let mut child = start_at(&db, &config);
    let registered = (0..200).find_map(|_| {
        let mut stream = TcpStream::connect(("127.0.0.1", mllp_port))
            .ok()
            .or_else(|| {
                std::thread::sleep(Duration::from_millis(20));
                None
            })?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        exchange(&mut stream, &message(1))
    });
    assert_eq!(registered.as_deref(), Some("AA"));
    child.kill().unwrap();
    child.wait().unwrap();
    let patient = format!("{HOSPITAL}.{:010}", 100_001);
    tsunagi(&[
        "admin",
        "consent",
        "add",
        "--db",
        &db,
        "--patient",
        &patient,
        "--from",
        HOSPITAL,
        "--to",
        CLINIC,
    ]);
    let token = tsunagi(&[
        "token",
        "issue",
        "--db",
        &db,
        "--user",
        "dr",
        "--scope",
        "user/*.rs user/Communication.c",
    ]);
    let token = token.trim().to_owned();

    let server = Arc::new(Mutex::new(start_at(&db, &config)));
    let done = Arc::new(AtomicBool::new(false));
    let killer = {
        let (server, done, db, config) = (server.clone(), done.clone(), db.clone(), config.clone());
        std::thread::spawn(move || {
            let mut random = Lcg(7);
            let mut kills = 0;
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(15 + random.below(100)));
                let mut child = server.lock().unwrap();
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                *child = start_at(&db, &config);
            }
            kills
        })
    };
    // Notes are written (a failed POST is sent again: the identifier makes it safe) while the
    // server is killed and restarted; meanwhile it delivers what it queued.
    let address = format!("127.0.0.1:{http_port}");
    let started = Instant::now();
    for number in 0..NOTES {
        let body = format!(
            r#"{{"resourceType": "Communication", "identifier": [{{"system": "urn:clinic:notes", "value": "n{number}"}}], "status": "completed", "subject": {{"reference": "Patient/{patient}"}}, "recipient": [{{"reference": "Organization/{HOSPITAL}"}}], "payload": [{{"contentString": "経過報告 {number}"}}]}}"#
        );
        loop {
            assert!(started.elapsed() < Duration::from_secs(120), "no progress");
            match post(&address, &token, &body) {
                Some(201 | 200) => break,
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    // Let the chaos run on until every note was accepted once, then stop it.
    while standin.accepted().len() < NOTES {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "undelivered: {:?}",
            standin.accepted()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::SeqCst);
    let kills = killer.join().unwrap();
    // The last server finishes recording what it delivered.
    support::wait_outbox_settled(&db, 30);
    {
        let mut child = server.lock().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
    eprintln!(
        "{kills} kills; {} notes accepted more than once (sent again after a kill)",
        standin.accepted().values().filter(|&&n| n > 1).count()
    );
    assert!(kills >= 3, "the server was killed only {kills} times");
    // Every note queued once, delivered, and accepted by the hospital under one MSH-10.
    let delivered = support::delivered_control_ids(&db);
    assert_eq!(delivered.len(), NOTES, "{delivered:?}");
    let accepted = standin.accepted();
    assert_eq!(accepted.len(), NOTES, "{accepted:?}");
    let control_ids: std::collections::BTreeSet<&str> =
        delivered.iter().map(String::as_str).collect();
    assert_eq!(
        control_ids,
        accepted.keys().map(String::as_str).collect(),
        "the hospital saw exactly the queued control ids"
    );
    drop(runtime);
}
