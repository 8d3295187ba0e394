//! Two `tsunagi serve` nodes on one PostgreSQL (issue 22), as behind a load balancer:
//! - In: a sender streams HL7 v2 over MLLP to both nodes while one is SIGKILLed and restarted;
//!   what a dead node leaves unacknowledged is sent to the other. Every message is stored once.
//! - Paging: a client pages through a search alternating nodes (while new records arrive) and
//!   gets every match once.
//! - Out: notes written through both nodes are delivered to the EHR stand-in once each, never
//!   two attempts of one MSH-10 at once; after a node is SIGKILLed mid-delivery, every note
//!   still arrives (at least once; a resend under the same MSH-10 only for what the dead node
//!   held).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use support::{
    Lcg, PostgresSchema, add_consent, add_facility, add_user, adt_message, applied_control_ids,
    exported_patients, free_port, http, mllp_exchange, ok, user_token,
};
use tsunagi_mllp::standin::{Behaviour, StandIn};

const HOSPITAL: &str = "0610100010";
const CLINIC: &str = "0610400014";
const MESSAGES: usize = 240;

/// One node: its name, ports and process.
struct Node {
    name: &'static str,
    http: u16,
    mllp: u16,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, db: &str, config: &Path, log: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log.join(format!("{}.log", self.name)))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
            .env("TSUNAGI_NODE", self.name)
            .args([
                "serve",
                "--db",
                db,
                "--config",
                config.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{}", self.http),
                "--mllp-listen",
                &format!("127.0.0.1:{}", self.mllp),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.http)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while http(&self.address(), "GET", "/health/ready", "", None, b"").map(|(s, _)| s)
            != Some(200)
        {
            assert!(Instant::now() < deadline, "node {} never ready", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn message(number: usize) -> Vec<u8> {
    adt_message("N", number, 200_000)
}

/// Sends `number` to `nodes[first]`; on a broken exchange, to the other node, and so on until
/// one acknowledges it. Returns MSA-1.
fn send(
    streams: &mut [Option<TcpStream>; 2],
    ports: [u16; 2],
    first: usize,
    number: usize,
    interrupted: &mut usize,
) -> String {
    let started = Instant::now();
    let mut target = first;
    loop {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        if streams[target].is_none() {
            match TcpStream::connect(("127.0.0.1", ports[target])) {
                Ok(connection) => {
                    connection
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    streams[target] = Some(connection);
                }
                Err(_) => {
                    target = 1 - target;
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            }
        }
        let Some(stream) = streams[target].as_mut() else {
            continue;
        };
        match mllp_exchange(stream, &message(number)) {
            Some(code) => return code,
            None => {
                *interrupted += 1;
                streams[target] = None;
                target = 1 - target;
            }
        }
    }
}

/// The `next` link of a searchset, as a path and query.
fn next_link(bundle: &serde_json::Value) -> Option<String> {
    let url = bundle["link"]
        .as_array()?
        .iter()
        .find(|link| link["relation"] == "next")?["url"]
        .as_str()?;
    let start = url.find("/fhir/")?;
    Some(url[start..].to_owned())
}

fn body_of(answer: &str) -> serde_json::Value {
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}

#[test]
fn two_nodes_on_one_postgres_share_intake_paging_and_the_outbox() {
    let postgres = PostgresSchema::new("nodes");
    let db = postgres.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let standin = runtime.block_on(StandIn::start("127.0.0.1:0")).unwrap();
    standin.set_default(Behaviour::Slow(Duration::from_millis(30)));
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[store]\nurl = \"{db}\"\n\n\
             [server]\nbase_url = \"http://tsunagi.test/fhir\"\n\n\
             [[hl7v2]]\nfacility = \"{HOSPITAL}\"\nsending_facility = \"SEND\"\n\n\
             [[outbound]]\nfacility = \"{HOSPITAL}\"\nmllp = \"{}\"\n\n\
             [outbox]\nfirst_backoff_seconds = 1\nmax_backoff_seconds = 1\ntimeout_seconds = 2\n",
            standin.address()
        ),
    )
    .unwrap();
    // The nodes are behind one load balancer: one public base URL (the tokens' issuer).
    // The schema is made by the first command; the directory before the nodes start.
    add_facility(&db, HOSPITAL, "荘内病院", "hospital");
    add_facility(&db, CLINIC, "本町クリニック", "clinic");
    add_user(&db, "hdr", HOSPITAL, "doctor");
    add_user(&db, "dr", CLINIC, "doctor");
    let mut nodes = [
        Node {
            name: "a",
            http: free_port(),
            mllp: free_port(),
            child: None,
        },
        Node {
            name: "b",
            http: free_port(),
            mllp: free_port(),
            child: None,
        },
    ];
    for node in &mut nodes {
        node.start(&db, &config, dir.path());
    }
    for node in &nodes {
        node.wait_ready();
    }
    let ports = [nodes[0].mllp, nodes[1].mllp];
    let nodes = Arc::new(Mutex::new(nodes));

    // 1. Intake: messages alternate between the nodes while node b is killed and restarted.
    let done = Arc::new(AtomicBool::new(false));
    let killer = {
        let (nodes, done, db, config, log) = (
            nodes.clone(),
            done.clone(),
            db.clone(),
            config.clone(),
            dir.path().to_owned(),
        );
        std::thread::spawn(move || {
            let mut random = Lcg(22);
            let mut kills = 0;
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(80 + random.below(220)));
                let mut nodes = nodes.lock().unwrap();
                nodes[1].kill();
                kills += 1;
                nodes[1].start(&db, &config, &log);
            }
            kills
        })
    };
    let mut streams: [Option<TcpStream>; 2] = [None, None];
    let mut interrupted = 0;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for number in 0..MESSAGES {
        let code = send(&mut streams, ports, number % 2, number, &mut interrupted);
        *codes.entry(code).or_default() += 1;
    }
    done.store(true, Ordering::SeqCst);
    let kills = killer.join().unwrap();
    eprintln!("intake: {kills} kills of node b, {interrupted} exchanges sent again");
    assert!(kills >= 3, "node b was killed only {kills} times");
    assert_eq!(codes, BTreeMap::from([("AA".to_owned(), MESSAGES)]));
    // One log row per control id, every one applied; one Patient version per message.
    let expected: Vec<String> = (0..MESSAGES).map(|n| format!("N{n:05}")).collect();
    assert_eq!(applied_control_ids(&db), expected);
    let patients = exported_patients(&db, &dir.path().join("export"));
    assert_eq!(patients.len(), MESSAGES);
    assert!(
        patients.iter().all(|p| p["meta"]["versionId"] == "1"),
        "a message was applied twice"
    );
    nodes.lock().unwrap()[1].wait_ready();
    let addresses = {
        let nodes = nodes.lock().unwrap();
        [nodes[0].address(), nodes[1].address()]
    };

    // 2. Paging, alternating nodes, while more records arrive: every match once.
    let hospital = ok(&[
        "token",
        "issue",
        "--db",
        &db,
        "--user",
        "hdr",
        "--scope",
        "user/*.rs",
    ]);
    let hospital = hospital.trim();
    let (status, answer) = http(
        &addresses[0],
        "GET",
        "/fhir/Patient?_count=7",
        hospital,
        None,
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let mut bundle = body_of(&answer);
    assert_eq!(bundle["total"], MESSAGES);
    // Records that arrive after the search began are not in its pages.
    for number in MESSAGES..MESSAGES + 5 {
        send(&mut streams, ports, number % 2, number, &mut interrupted);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut pages = 0;
    loop {
        for entry in bundle["entry"].as_array().into_iter().flatten() {
            seen.push(entry["resource"]["id"].as_str().unwrap().to_owned());
        }
        pages += 1;
        let Some(next) = next_link(&bundle) else {
            break;
        };
        let (status, answer) =
            http(&addresses[pages % 2], "GET", &next, hospital, None, b"").unwrap();
        assert_eq!(
            status,
            200,
            "page {pages} from node {}: {answer}",
            pages % 2
        );
        bundle = body_of(&answer);
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), MESSAGES, "a page repeated or skipped");
    assert_eq!(unique.len(), MESSAGES, "a resource came twice");
    assert_eq!(pages, MESSAGES.div_ceil(7));

    // 3. Out: notes written through both nodes, delivered once each.
    let patient = format!("{HOSPITAL}.{:010}", 200_000);
    add_consent(&db, &patient, HOSPITAL, CLINIC);
    let clinic = user_token(&db, "dr", "user/*.rs user/Communication.c");
    let clinic = clinic.as_str();
    let note = |number: usize| {
        format!(
            r#"{{"resourceType": "Communication", "identifier": [{{"system": "urn:clinic:notes", "value": "n{number}"}}], "status": "completed", "subject": {{"reference": "Patient/{patient}"}}, "recipient": [{{"reference": "Organization/{HOSPITAL}"}}], "payload": [{{"contentString": "経過報告 {number}"}}]}}"#
        )
    };
    let post = |number: usize| {
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < Duration::from_secs(60), "no progress");
            let answer = http(
                &addresses[number % 2],
                "POST",
                "/fhir/Communication",
                clinic,
                Some("application/fhir+json"),
                note(number).as_bytes(),
            );
            match answer {
                Some((201 | 200, _)) => return,
                Some((status, answer)) if status < 500 => panic!("{status}: {answer}"),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    };
    let wait_accepted = |count: usize| {
        let started = Instant::now();
        while standin.accepted().len() < count {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "undelivered: {} of {count}",
                standin.accepted().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    const NOTES: usize = 40;
    for number in 0..NOTES {
        post(number);
    }
    wait_accepted(NOTES);
    let accepted = standin.accepted();
    assert!(
        accepted.values().all(|&count| count == 1),
        "two nodes delivered one note: {accepted:?}"
    );
    assert_eq!(standin.overlapped(), 0, "one MSH-10 was in flight twice");

    // A node dies mid-delivery: what it held is sent again when it is back, nothing is lost.
    standin.set_default(Behaviour::Slow(Duration::from_millis(300)));
    let before = standin.received();
    for number in NOTES..NOTES + 20 {
        post(number);
    }
    let started = Instant::now();
    while standin.received() < before + 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no delivery began"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    {
        let mut nodes = nodes.lock().unwrap();
        nodes[0].kill();
        nodes[0].start(&db, &config, dir.path());
    }
    wait_accepted(NOTES + 20);
    support::wait_outbox_settled(&db, 60);
    let delivered = support::delivered_control_ids(&db);
    let queued: BTreeSet<&str> = delivered.iter().map(String::as_str).collect();
    let accepted = standin.accepted();
    assert_eq!(queued.len(), NOTES + 20, "{delivered:?}");
    assert_eq!(
        queued,
        accepted.keys().map(String::as_str).collect(),
        "the hospital saw exactly the queued control ids"
    );
    let resent = accepted.values().filter(|&&count| count > 1).count();
    eprintln!("outbox: {resent} notes sent again after node a was killed mid-delivery");
    assert!(resent <= 20, "{accepted:?}");
    drop(runtime);
}
