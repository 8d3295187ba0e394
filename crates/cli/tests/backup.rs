//! `tsunagi admin backup` while the server answers, an EHR sends HL7 v2 and a pull writes,
//! then `tsunagi admin restore` into a new place: every resource, every acknowledged HL7 v2
//! message and every audit record committed before the backup began is there; a damaged
//! backup, an occupied target and PostgreSQL are refused with what to do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    io::BufRead,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use serde_json::Value;
use support::{add_facility, add_user, http_with, ok, tsunagi};

const SHONAI: &str = "0610100010";
const HOMMA: &str = "0610300016";

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_backup_under_load_restores_everything_committed_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let region = dir.path().join("region");
    let db = format!("sqlite://{}", dir.path().join("live.db").display());
    ok(&[
        "generate",
        "region",
        "--out",
        region.to_str().unwrap(),
        "--patients",
        "40",
        "--seed",
        "5",
    ]);
    ok(&[
        "ingest",
        "ssmix2",
        "--db",
        &db,
        "--facility",
        SHONAI,
        "--json",
        region.join(SHONAI).to_str().unwrap(),
    ]);
    add_facility(&db, SHONAI, "Shonai", "hospital");
    add_user(&db, "dr", SHONAI, "doctor");
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[store]\nurl = \"{db}\"\n\n[[hl7v2]]\nfacility = \"{SHONAI}\"\nsending_facility = \"SEND\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args([
            "serve",
            "--db",
            &db,
            "--listen",
            "127.0.0.1:0",
            "--mllp-listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut address, mut mllp) = (String::new(), String::new());
    while address.is_empty() || mllp.is_empty() {
        let line = lines.next().expect("serve prints its addresses").unwrap();
        if let Some(rest) = line.strip_prefix("FHIR base http://") {
            rest.trim_end_matches("/fhir").clone_into(&mut address);
        }
        if let Some(rest) = line.strip_prefix("HL7 v2 over MLLP on ") {
            rest.split(' ').next().unwrap().clone_into(&mut mllp);
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let serving = Serving(child);
    let token = ok(&[
        "token",
        "issue",
        "--db",
        &db,
        "--user",
        "dr",
        "--scope",
        "user/*.rs",
    ])
    .trim()
    .to_owned();

    // Readers keep the server answering (each answer audited); the ids of what was answered
    // before the backup began are kept.
    let backup_began = Arc::new(AtomicBool::new(false));
    let answered_before: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|reader| {
            let (address, token) = (address.clone(), token.clone());
            let (began, before, stop) =
                (backup_began.clone(), answered_before.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let id = format!("backup-{reader}-{n}");
                    let headers = [("X-Request-Id", id.as_str())];
                    let answer = http_with(
                        &address,
                        "GET",
                        "/fhir/Patient?_count=5",
                        &token,
                        &headers,
                        b"",
                    );
                    // Answered before the backup began: its audit record was durable then.
                    let late = began.load(Ordering::SeqCst);
                    if answer.is_some_and(|(status, _)| status == 200) && !late {
                        before.lock().unwrap().push(id);
                    }
                }
            })
        })
        .collect();
    // An EHR sends HL7 v2 meanwhile; the MSH-10s acknowledged before the backup began are kept.
    let acked_before: Arc<Mutex<Vec<String>>> = Arc::default();
    let sender = {
        let (began, acked, stop) = (backup_began.clone(), acked_before.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(&mllp).unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let control = format!("BK{n:06}");
                let message = format!(
                    "MSH|^~\\&|HIS|SEND|TSUNAGI|NET|20261124101500||ADT^A08^ADT_A01|{control}|P|2.5\rEVN||20261124101500\rPID|||{:07}^^^^PI||Kensa^Taro^^^^^L||19600101|M\rPV1||O\r",
                    2_000_000 + n % 50
                );
                let answer = support::mllp_exchange(&mut stream, message.as_bytes());
                let late = began.load(Ordering::SeqCst);
                if answer.as_deref() == Some("AA") && !late {
                    acked.lock().unwrap().push(control);
                }
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));

    // A pull writes meanwhile.
    let writer = {
        let (db, root) = (db.clone(), region.join(HOMMA));
        std::thread::spawn(move || {
            tsunagi(&[
                "ingest",
                "ssmix2",
                "--db",
                &db,
                "--facility",
                HOMMA,
                root.to_str().unwrap(),
            ])
        })
    };
    let resources_before: u64 = count(&db);
    backup_began.store(true, Ordering::SeqCst);
    let out = dir.path().join("backup");
    let said = ok(&[
        "admin",
        "backup",
        "--db",
        &db,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(said.contains("sha256"), "{said}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.join().unwrap();
    }
    sender.join().unwrap();
    assert!(writer.join().unwrap().status.success());
    drop(serving);

    // Restored elsewhere: every resource and audit record committed before the backup began.
    let restored = format!(
        "sqlite://{}",
        dir.path().join("restored/tsunagi.db").display()
    );
    let said = ok(&[
        "admin",
        "restore",
        "--from",
        out.to_str().unwrap(),
        "--db",
        &restored,
    ]);
    assert!(said.contains("resources"), "{said}");
    assert!(count(&restored) >= resources_before);
    let trail = ok(&["admin", "audit", "--db", &restored, "--limit", "1000000"]);
    let recorded: std::collections::HashSet<String> = trail
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .flat_map(|event| {
            event["entity"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|entity| {
                    entity["what"]["identifier"]["value"]
                        .as_str()
                        .map(str::to_owned)
                })
        })
        .collect();
    let before = answered_before.lock().unwrap().clone();
    assert!(!before.is_empty());
    let missing: Vec<&String> = before.iter().filter(|id| !recorded.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered accesses missing: {missing:?}",
        missing.len(),
        before.len()
    );

    let log = ok(&[
        "admin",
        "quarantine",
        "list",
        "--db",
        &restored,
        "--state",
        "applied",
        "--limit",
        "1000000",
    ]);
    let logged: std::collections::HashSet<&str> = log
        .lines()
        .filter_map(|line| line.split('\t').nth(5))
        .collect();
    let acked = acked_before.lock().unwrap().clone();
    assert!(!acked.is_empty());
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !logged.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages missing: {lost:?}",
        lost.len(),
        acked.len()
    );

    // Refusals that say what to do.
    let again = tsunagi(&[
        "admin",
        "restore",
        "--from",
        out.to_str().unwrap(),
        "--db",
        &restored,
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    let file = out.join("tsunagi.db");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let elsewhere = format!("sqlite://{}", dir.path().join("other.db").display());
    let damaged = tsunagi(&[
        "admin",
        "restore",
        "--from",
        out.to_str().unwrap(),
        "--db",
        &elsewhere,
    ]);
    assert!(String::from_utf8_lossy(&damaged.stderr).contains("damaged"));
    assert!(!dir.path().join("other.db").exists());
    // A target with an old -wal beside it, and a database that is not there.
    let beside = dir.path().join("beside.db");
    std::fs::write(dir.path().join("beside.db-wal"), b"old").unwrap();
    let leftover = tsunagi(&[
        "admin",
        "restore",
        "--from",
        out.to_str().unwrap(),
        "--db",
        &format!("sqlite://{}", beside.display()),
    ]);
    assert!(String::from_utf8_lossy(&leftover.stderr).contains("beside"));
    assert!(!beside.exists());
    let nowhere = tsunagi(&[
        "admin",
        "backup",
        "--db",
        &format!("sqlite://{}", dir.path().join("typo.db").display()),
        "--out",
        dir.path().join("b2").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("no such database"));
    assert!(
        !dir.path().join("typo.db").exists(),
        "a backup created the database it was to copy"
    );
    let postgres = tsunagi(&[
        "admin",
        "backup",
        "--db",
        "postgres://postgres@127.0.0.1:5432/test",
        "--out",
        "/tmp/x",
    ]);
    assert!(String::from_utf8_lossy(&postgres.stderr).contains("pg_dump"));
}

/// Current resources in a store (as `export ndjson` counts them).
fn count(db: &str) -> u64 {
    let folder = format!("{}.export", db.trim_start_matches("sqlite://"));
    let _ = std::fs::remove_dir_all(&folder);
    let out = ok(&["export", "ndjson", "--db", db, "--out", &folder]);
    out.lines()
        .find_map(|line| line.strip_prefix("exported "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}
