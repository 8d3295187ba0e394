//! The live feeds as an operator runs them: `tsunagi serve --mllp-listen` with
//! `tsunagi admin quarantine list|show|retry|drop` (messages that cannot be applied are answered
//! AE and kept, listed and shown, applied once their cause is fixed or dropped with a reason), and
//! `[[destination]]` with `tsunagi admin outbox list|show|retry|drop` (a note written through the API
//! lands in the hospital's folder; one whose EHR cannot be reached becomes a dead letter the
//! operator replays or drops). Every operator act is in the audit trail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::BufRead,
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

mod support;

use support::{http, jp_core_package, mllp_exchange, ok, register_lab, tsunagi};

/// A guideline sample's bytes (ISO-2022-JP).
fn sample(relative: &str) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/ssmix2-guideline-samples/sampleData/999/901/9999013")
        .join(relative);
    let entry = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap();
    let mut bytes = std::fs::read(entry.path()).unwrap();
    while bytes.last().is_some_and(|&byte| byte == 0x1c) {
        bytes.pop();
    }
    bytes
}

fn a08(control_id: &str, patient: &str, message_type: &str) -> Vec<u8> {
    a08_from("SEND", control_id, patient, message_type)
}

fn a08_from(sender: &str, control_id: &str, patient: &str, message_type: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|HIS123|{sender}|TSUNAGI|NET|20261124101500||{message_type}|{control_id}|P|2.5\r\
         EVN||20261124101500\r\
         PID|||{patient}^^^^PI||Kensa^Taro^^^^^L||19600101|M\r\
         PV1||O\r"
    )
    .into_bytes()
}

/// `tsunagi serve` on free ports: the child, its MLLP address and its FHIR base.
fn start_serve(db: &str, config: &str) -> (std::process::Child, String, String) {
    let mut serve = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args([
            "serve",
            "--db",
            db,
            "--config",
            config,
            "--listen",
            "127.0.0.1:0",
            "--mllp-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(serve.stdout.take().unwrap()).lines();
    let mut base = String::new();
    let address = loop {
        let line = lines.next().expect("serve prints its addresses").unwrap();
        if let Some(rest) = line.strip_prefix("FHIR base ") {
            rest.clone_into(&mut base);
        }
        if let Some(rest) = line.strip_prefix("HL7 v2 over MLLP on ") {
            break rest.split(' ').next().unwrap().to_owned();
        }
    };
    // Keep reading stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (serve, address, base)
}

/// Sends one framed message and reads the framed answer; returns MSA-1.
fn request(stream: &mut TcpStream, message: &[u8]) -> String {
    mllp_exchange(stream, message).expect("an MLLP answer")
}

#[test]
fn quarantined_messages_are_listed_shown_retried_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("feed.db").display());
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[store]\nurl = \"{db}\"\n\n[[hl7v2]]\nfacility = \"0610100010\"\nsending_facility = \"SEND\"\nsending_application = \"HIS123\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let (mut serve, address, _) = start_serve(&db, config);
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A lab order for a patient not registered yet, and a message type nobody maps.
    let answers = [
        request(&mut stream, &sample("20111220/OML-11")),
        request(&mut stream, &a08("Z1", "0001000052", "ADT^Z99")),
        // Registered now (the OML's PID-3 is 0001000052).
        request(&mut stream, &a08("R1", "0001000052", "ADT^A08^ADT_A01")),
    ];
    drop(stream);
    serve.kill().unwrap();
    let _ = serve.wait();
    assert_eq!(answers, ["AE", "AE", "AA"].map(str::to_owned));

    let listed = ok(&["admin", "quarantine", "list", "--db", &db]);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|line| line.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(rows.iter().all(|row| row[2] == "quarantined"), "{listed}");
    let lab = rows
        .iter()
        .find(|row| row[6] == "OUL^R22")
        .unwrap_or_else(|| panic!("{listed}"))[0]
        .to_owned();
    let unknown = rows
        .iter()
        .find(|row| row[6] == "ADT^Z99")
        .unwrap_or_else(|| panic!("{listed}"))[0]
        .to_owned();

    let shown = ok(&["admin", "quarantine", "show", "--db", &db, &lab]);
    assert!(shown.contains("state      quarantined"), "{shown}");
    assert!(shown.contains("not registered"), "{shown}");
    assert!(shown.contains("MSA|AE|"), "{shown}");
    assert!(shown.contains("  PID|"), "{shown}");
    let missing = tsunagi(&["admin", "quarantine", "show", "--db", &db, "999"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no message 999"));

    let retried = ok(&[
        "admin",
        "quarantine",
        "retry",
        "--db",
        &db,
        "--config",
        config,
        "--all",
    ]);
    assert!(retried.contains(&format!("{lab}\tapplied")), "{retried}");
    assert!(
        retried.contains(&format!("{unknown}\tstill quarantined")),
        "{retried}"
    );
    assert!(
        retried.contains("1 applied, 1 still quarantined"),
        "{retried}"
    );

    let no_reason = tsunagi(&[
        "admin",
        "quarantine",
        "drop",
        "--db",
        &db,
        &unknown,
        "--reason",
        " ",
    ]);
    assert!(!no_reason.status.success());
    ok(&[
        "admin",
        "quarantine",
        "drop",
        "--db",
        &db,
        &unknown,
        "--reason",
        "test message from the EHR vendor",
    ]);
    // Applied messages are not dropped.
    let applied = tsunagi(&[
        "admin",
        "quarantine",
        "drop",
        "--db",
        &db,
        &lab,
        "--reason",
        "x",
    ]);
    assert!(!applied.status.success());
    assert!(String::from_utf8_lossy(&applied.stderr).contains("is applied"));

    assert_eq!(ok(&["admin", "quarantine", "list", "--db", &db]), "");
    let dropped = ok(&[
        "admin",
        "quarantine",
        "list",
        "--db",
        &db,
        "--state",
        "dropped",
    ]);
    assert!(
        dropped.contains("dropped by the operator: test message from the EHR vendor"),
        "{dropped}"
    );
    let applied = ok(&[
        "admin",
        "quarantine",
        "list",
        "--db",
        &db,
        "--state",
        "applied",
    ]);
    assert_eq!(applied.lines().count(), 2, "{applied}");

    let audit = ok(&["admin", "audit", "--db", &db]);
    assert!(audit.contains("\"quarantine-retry\""), "{audit}");
    assert!(audit.contains("\"quarantine-retry-failed\""), "{audit}");
    assert!(audit.contains("\"quarantine-drop\""), "{audit}");
}

/// The address of a FHIR base `http://host:port/fhir`.
fn address_of(base: &str) -> String {
    base.trim_start_matches("http://")
        .trim_end_matches("/fhir")
        .to_owned()
}

/// POSTs FHIR JSON to `<base>/<path>` (`<base>` itself when `path` is empty).
fn post_json(base: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let target = if path.is_empty() {
        "/fhir".to_owned()
    } else {
        format!("/fhir/{path}")
    };
    let address = address_of(base);
    http(
        &address,
        "POST",
        &target,
        token,
        Some("application/fhir+json"),
        body.as_bytes(),
    )
    .expect("an HTTP answer")
}

fn note(patient: &str, hospital: &str, identifier: &str) -> String {
    format!(
        r#"{{"resourceType": "Communication", "identifier": [{{"system": "urn:clinic:notes", "value": "{identifier}"}}], "status": "completed", "subject": {{"reference": "Patient/{patient}"}}, "recipient": [{{"reference": "Organization/{hospital}"}}], "payload": [{{"contentString": "退院後の内服について ①"}}]}}"#
    )
}

#[test]
fn notes_reach_the_hospitals_folder_and_dead_letters_are_replayed_or_dropped() {
    const SHONAI: &str = "0610100010";
    const NIHONKAI: &str = "0610100020";
    const CLINIC: &str = "0610400014";
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("out.db").display());
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let config = dir.path().join("tsunagi.toml");
    // 日本海's EHR listens nowhere (port 1): its note becomes a dead letter after one attempt.
    std::fs::write(
        &config,
        format!(
            "version = 2\n[store]\nurl = \"{db}\"\n\n\
             [[source]]\nkind = \"hl7v2\"\nfacility = \"{SHONAI}\"\nsending_facility = \"SEND\"\n\n\
             [[source]]\nkind = \"hl7v2\"\nfacility = \"{NIHONKAI}\"\nsending_facility = \"NIHONKAI\"\n\n\
             [[destination]]\nkind = \"folder\"\nfacility = \"{SHONAI}\"\nfolder = \"{}\"\n\n\
             [[destination]]\nkind = \"mllp\"\nfacility = \"{NIHONKAI}\"\naddress = \"127.0.0.1:1\"\n\n\
             [outbox]\nmax_attempts = 1\ntimeout_seconds = 2\n",
            inbox.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for (code, kind) in [
        (SHONAI, "hospital"),
        (NIHONKAI, "hospital"),
        (CLINIC, "clinic"),
    ] {
        ok(&[
            "admin", "facility", "add", "--db", &db, "--code", code, "--name", code, "--kind", kind,
        ]);
    }
    ok(&[
        "admin",
        "user",
        "add",
        "--db",
        &db,
        "--id",
        "dr",
        "--name",
        "佐藤",
        "--facility",
        CLINIC,
        "--role",
        "doctor",
    ]);

    let (mut serve, mllp, base) = start_serve(&db, config);
    let mut stream = TcpStream::connect(&mllp).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        request(
            &mut stream,
            &a08_from("SEND", "A1", "0000000001", "ADT^A08^ADT_A01")
        ),
        "AA"
    );
    assert_eq!(
        request(
            &mut stream,
            &a08_from("NIHONKAI", "B1", "0000000002", "ADT^A08^ADT_A01")
        ),
        "AA"
    );
    let shonai_patient = format!("{SHONAI}.0000000001");
    let nihonkai_patient = format!("{NIHONKAI}.0000000002");
    for (patient, from) in [(&shonai_patient, SHONAI), (&nihonkai_patient, NIHONKAI)] {
        ok(&[
            "admin",
            "consent",
            "add",
            "--db",
            &db,
            "--patient",
            patient,
            "--from",
            from,
            "--to",
            CLINIC,
        ]);
    }
    let token = ok(&[
        "token",
        "issue",
        "--db",
        &db,
        "--user",
        "dr",
        "--scope",
        "user/*.rs user/Communication.c",
    ]);
    let token = token.trim();
    let (status, answer) = post_json(
        &base,
        "Communication",
        token,
        &note(&shonai_patient, SHONAI, "n1"),
    );
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = post_json(
        &base,
        "Communication",
        token,
        &note(&nihonkai_patient, NIHONKAI, "n2"),
    );
    assert_eq!(status, 201, "{answer}");

    // The note for 荘内 lands in its folder; the one for 日本海 becomes a dead letter.
    let mut delivered = None;
    for _ in 0..200 {
        // A delivery in progress is a hidden `.partial` file until it is renamed into place.
        let files: Vec<_> = std::fs::read_dir(&inbox)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "hl7"))
            .collect();
        let dead = ok(&["admin", "outbox", "list", "--db", &db, "--state", "dead"]);
        if files.len() == 1 && !dead.is_empty() {
            delivered = Some((files, dead));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    serve.kill().unwrap();
    let _ = serve.wait();
    let (files, dead) = delivered.expect("one note delivered and one dead letter");
    let bytes = std::fs::read(&files[0]).unwrap();
    assert!(bytes.starts_with(b"MSH|^~\\&|TSUNAGI|"));
    assert!(bytes.iter().all(|&b| b < 0x80), "ISO-2022-JP is 7-bit");
    assert!(String::from_utf8_lossy(&bytes).contains("MDM^T02"));
    let row: Vec<&str> = dead.lines().next().unwrap().split('\t').collect();
    assert_eq!(row[3], NIHONKAI, "{dead}");
    assert!(row[8].contains("127.0.0.1:1"), "{dead}");
    let seq = row[0].to_owned();
    let delivered_rows = ok(&[
        "admin",
        "outbox",
        "list",
        "--db",
        &db,
        "--state",
        "delivered",
    ]);
    assert!(delivered_rows.contains("written to"), "{delivered_rows}");

    let shown = ok(&["admin", "outbox", "show", "--db", &db, &seq]);
    assert!(shown.contains("state        dead"), "{shown}");
    assert!(shown.contains("  TXA|1|note^"), "{shown}");
    assert!(shown.contains("(1)"), "① is sent as (1): {shown}");

    // Replay: pending again with fresh attempts; then the operator gives up on it.
    let retried = ok(&["admin", "outbox", "retry", "--db", &db, "--all"]);
    assert!(
        retried.contains(&format!("{seq}\tqueued again")),
        "{retried}"
    );
    let pending = ok(&["admin", "outbox", "list", "--db", &db, "--state", "pending"]);
    assert!(pending.starts_with(&format!("{seq}\t")), "{pending}");
    let refused = tsunagi(&["admin", "outbox", "drop", "--db", &db, &seq, "--reason", ""]);
    assert!(!refused.status.success());
    ok(&[
        "admin",
        "outbox",
        "drop",
        "--db",
        &db,
        &seq,
        "--reason",
        "the hospital has left the network",
    ]);
    assert_eq!(ok(&["admin", "outbox", "list", "--db", &db]), "");
    let again = tsunagi(&["admin", "outbox", "drop", "--db", &db, "1", "--reason", "x"]);
    assert!(
        !again.status.success(),
        "a delivered note cannot be dropped"
    );

    let audit = ok(&["admin", "audit", "--db", &db]);
    assert!(audit.contains("\"outbox-retry\""), "{audit}");
    assert!(audit.contains("\"outbox-drop\""), "{audit}");
}

/// POSTs an ER7 body to `/hl7v2` of the server at `base` (`http://host:port`).
fn post_er7(base: &str, token: &str, body: &[u8], content_type: &str) -> (u16, String) {
    let address = base.trim_start_matches("http://");
    http(address, "POST", "/hl7v2", token, Some(content_type), body).expect("an HTTP answer")
}

#[test]
fn a_lab_company_posts_hl7_v2_over_http_and_gets_its_ack() {
    const LAB: &str = "0610900001";
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("lab.db").display());
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[store]\nurl = \"{db}\"\n\n\
             [[hl7v2]]\nfacility = \"{LAB}\"\nsending_facility = \"LABCO\"\nclients = [\"client-lab\"]\n"
        ),
    )
    .unwrap();
    register_lab(&db, LAB);
    ok(&[
        "admin",
        "user",
        "add",
        "--db",
        &db,
        "--id",
        "dr",
        "--name",
        "佐藤",
        "--facility",
        LAB,
        "--role",
        "doctor",
    ]);

    // HTTP only: no MLLP listener.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args([
            "serve",
            "--db",
            &db,
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(serve.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("serve prints its addresses").unwrap();
        assert!(!line.starts_with("HL7 v2 over MLLP"), "{line}");
        if let Some(rest) = line.strip_prefix("HL7 v2 over HTTP: POST ") {
            break rest
                .split(' ')
                .next()
                .unwrap()
                .trim_end_matches("/hl7v2")
                .to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    // Tokens name the origin the server serves under, which `token issue` reads from the store.
    let system = ok(&[
        "token",
        "issue",
        "--db",
        &db,
        "--system",
        "client-lab",
        "--scope",
        "system/*.rs",
    ]);
    let user = ok(&[
        "token",
        "issue",
        "--db",
        &db,
        "--user",
        "dr",
        "--scope",
        "user/*.rs",
    ]);
    // With MLLP framing bytes and a trailing newline, as some lab systems send.
    let mut message = vec![0x0b];
    message.extend_from_slice(&a08_from("LABCO", "L1", "0000000009", "ADT^A08^ADT_A01"));
    message.extend_from_slice(&[0x1c, 0x0d, b'\n']);
    let first = post_er7(&base, system.trim(), &message, "x-application/hl7-v2+er7");
    let again = post_er7(&base, system.trim(), &message, "x-application/hl7-v2+er7");
    let unknown = post_er7(
        &base,
        system.trim(),
        &a08_from("NOBODY", "L2", "0000000009", "ADT^A08^ADT_A01"),
        "x-application/hl7-v2+er7",
    );
    let as_user = post_er7(&base, user.trim(), &message, "x-application/hl7-v2+er7");
    let as_json = post_er7(&base, system.trim(), &message, "application/json");
    serve.kill().unwrap();
    let _ = serve.wait();

    assert_eq!(first.0, 200, "{}", first.1);
    assert!(first.1.contains("x-application/hl7-v2+er7"), "{}", first.1);
    assert!(first.1.contains("MSA|AA|L1"), "{}", first.1);
    // A resend is answered with the same ACK, byte for byte.
    let body = |answer: &str| answer.split("\r\n\r\n").nth(1).unwrap().to_owned();
    assert_eq!(body(&first.1), body(&again.1));
    assert!(unknown.1.contains("MSA|AR|L2"), "{}", unknown.1);
    assert_eq!(as_user.0, 403, "{}", as_user.1);
    assert_eq!(as_json.0, 415, "{}", as_json.1);
    let logged = ok(&[
        "admin",
        "quarantine",
        "list",
        "--db",
        &db,
        "--state",
        "applied",
    ]);
    assert_eq!(logged.lines().count(), 1, "{logged}");
    assert!(logged.contains("\thttp\tHIS123|LABCO\tL1\t"), "{logged}");
}

fn get_json(base: &str, path: &str, token: &str) -> serde_json::Value {
    let (_, answer) = http(
        &address_of(base),
        "GET",
        &format!("/fhir/{path}"),
        token,
        None,
        b"",
    )
    .expect("an HTTP answer");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("{answer}"))
}

fn results_bundle(patient: &str) -> String {
    serde_json::json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:0b8a6c2e-0000-4000-8000-000000000001",
             "resource": {"resourceType": "Specimen", "identifier": [{"system": "urn:lab:specimen", "value": "S-1"}],
                          "subject": {"reference": format!("Patient/{patient}")}, "type": {"text": "血清"}},
             "request": {"method": "POST", "url": "Specimen", "ifNoneExist": "identifier=urn:lab:specimen|S-1"}},
            {"fullUrl": "urn:uuid:0b8a6c2e-0000-4000-8000-000000000002",
             "resource": {"resourceType": "Observation", "identifier": [{"system": "urn:lab:result", "value": "R-1"}],
                          "status": "final",
                          "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
                          "code": {"coding": [{"system": "urn:oid:1.2.392.200119.4.504", "code": "3A010000002327101"}], "text": "総蛋白"},
                          "subject": {"reference": format!("Patient/{patient}")},
                          "specimen": {"reference": "urn:uuid:0b8a6c2e-0000-4000-8000-000000000001"},
                          "effectiveDateTime": "2026-11-24T08:30:00+09:00",
                          "valueQuantity": {"value": 7.1, "unit": "g/dL"}},
             "request": {"method": "PUT", "url": "Observation?identifier=urn:lab:result|R-1"}},
            {"resource": {"resourceType": "DiagnosticReport", "identifier": [{"system": "urn:lab:report", "value": "D-1"}],
                          "status": "final",
                          "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
                          "code": {"text": "生化学検査"},
                          "subject": {"reference": format!("Patient/{patient}")},
                          "result": [{"reference": "urn:uuid:0b8a6c2e-0000-4000-8000-000000000002"}]},
             "request": {"method": "POST", "url": "DiagnosticReport"}}
        ]
    })
    .to_string()
}

#[test]
fn a_lab_company_posts_results_as_a_fhir_transaction_once() {
    const HOSPITAL: &str = "0610100010";
    const LAB: &str = "0610900001";
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("fhirlab.db").display());
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[store]\nurl = \"{db}\"\n\n\
             [[hl7v2]]\nfacility = \"{HOSPITAL}\"\nsending_facility = \"SEND\"\n\n\
             [[hl7v2]]\nfacility = \"{LAB}\"\nsending_facility = \"LABCO\"\nclients = [\"client-lab\"]\nreports_for = [\"{HOSPITAL}\"]\n\n\
             [server]\nprofile_packages = [\"{}\"]\n",
            jp_core_package().display()
        ),
    )
    .unwrap();
    ok(&[
        "admin",
        "facility",
        "add",
        "--db",
        &db,
        "--code",
        HOSPITAL,
        "--name",
        "荘内病院",
        "--kind",
        "hospital",
    ]);
    register_lab(&db, LAB);
    ok(&[
        "admin",
        "user",
        "add",
        "--db",
        &db,
        "--id",
        "dr",
        "--name",
        "荘内 医師",
        "--facility",
        HOSPITAL,
        "--role",
        "doctor",
    ]);

    let (mut serve, mllp, base) = start_serve(&db, config.to_str().unwrap());
    let lab = ok(&[
        "token",
        "issue",
        "--db",
        &db,
        "--system",
        "client-lab",
        "--scope",
        support::LAB_SCOPE,
    ]);
    let doctor = ok(&[
        "token",
        "issue",
        "--db",
        &db,
        "--user",
        "dr",
        "--scope",
        "user/*.rs",
    ]);
    let mut stream = TcpStream::connect(&mllp).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        request(
            &mut stream,
            &a08_from("SEND", "H1", "0000000005", "ADT^A08^ADT_A01")
        ),
        "AA"
    );
    let patient = format!("{HOSPITAL}.0000000005");
    let first = post_json(&base, "", lab.trim(), &results_bundle(&patient));
    let again = post_json(&base, "", lab.trim(), &results_bundle(&patient));
    // A resend asking for the resources (Prefer: return=representation) gets each in its entry.
    let represented = support::http_with(
        &address_of(&base),
        "POST",
        "/fhir/",
        lab.trim(),
        &[
            ("Content-Type", "application/fhir+json"),
            ("Prefer", "return=representation"),
        ],
        results_bundle(&patient).as_bytes(),
    )
    .expect("an HTTP answer");
    let stranger = post_json(&base, "", lab.trim(), &results_bundle("0610100099.1"));
    let as_doctor = post_json(&base, "", doctor.trim(), &results_bundle(&patient));
    let observations = get_json(
        &base,
        &format!("Observation?patient={patient}"),
        doctor.trim(),
    );
    // Bad Bundles are refused whole.
    let no_identifier = results_bundle(&patient).replace(
        r#""identifier":[{"system":"urn:lab:report","value":"D-1"}],"#,
        "",
    );
    let patient_entry = results_bundle(&patient).replace(
        r#""resourceType":"Specimen""#,
        r#""resourceType":"Patient""#,
    );
    let batch = results_bundle(&patient).replace(r#""type":"transaction""#, r#""type":"batch""#);
    // JP_Observation_LabResult needs a specimen; the loaded package says so.
    let no_specimen = results_bundle(&patient).replace(
        r#""specimen":{"reference":"urn:uuid:0b8a6c2e-0000-4000-8000-000000000001"},"#,
        "",
    );
    assert_ne!(no_specimen, results_bundle(&patient));
    let nonconformant = post_json(&base, "", lab.trim(), &no_specimen);
    let refusals = [
        post_json(&base, "", lab.trim(), &no_identifier),
        post_json(&base, "", lab.trim(), &patient_entry),
        post_json(&base, "", lab.trim(), &batch),
        nonconformant.clone(),
    ];
    let after = get_json(
        &base,
        &format!("Observation?patient={patient}"),
        doctor.trim(),
    );
    serve.kill().unwrap();
    let _ = serve.wait();

    let body = |answer: &str| -> serde_json::Value {
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    };
    assert_eq!(first.0, 200, "{}", first.1);
    let statuses = |bundle: &serde_json::Value| -> Vec<String> {
        bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["response"]["status"].as_str().unwrap().to_owned())
            .collect()
    };
    let created = body(&first.1);
    assert_eq!(created["type"], "transaction-response");
    assert_eq!(statuses(&created), ["201 Created"; 3]);
    // A resend writes nothing new: the same versions.
    let resent = body(&again.1);
    assert_eq!(statuses(&resent), ["200 OK"; 3]);
    assert!(resent["entry"][0].get("resource").is_none());
    let represented = body(&represented.1);
    assert_eq!(statuses(&represented), ["200 OK"; 3]);
    assert_eq!(
        represented["entry"][1]["resource"]["resourceType"],
        "Observation"
    );
    assert_eq!(
        represented["entry"][1]["resource"]["meta"]["versionId"],
        "1"
    );
    for (a, b) in created["entry"]
        .as_array()
        .unwrap()
        .iter()
        .zip(resent["entry"].as_array().unwrap())
    {
        assert_eq!(a["response"]["location"], b["response"]["location"]);
        assert!(
            a["response"]["location"]
                .as_str()
                .unwrap()
                .ends_with("/_history/1")
        );
    }
    assert_eq!(stranger.0, 422, "{}", stranger.1);
    assert_eq!(as_doctor.0, 403, "{}", as_doctor.1);
    // The hospital sees the result, its specimen reference rewritten to the id given.
    assert_eq!(observations["total"], 1, "{observations}");
    let observation = &observations["entry"][0]["resource"];
    let specimen = created["entry"][0]["response"]["location"]
        .as_str()
        .unwrap();
    assert_eq!(
        observation["specimen"]["reference"].as_str().unwrap(),
        specimen.split("/_history").next().unwrap()
    );
    assert!(
        observation["meta"]["source"]
            .as_str()
            .unwrap()
            .starts_with(&format!("urn:tsunagi:fhir:{LAB}#"))
    );
    let codes: Vec<u16> = refusals.iter().map(|(status, _)| *status).collect();
    assert_eq!(codes, [422, 422, 200, 422], "{refusals:?}");
    // As a batch, each entry stands alone: the specimen exists already; the others name
    // entries by urn:uuid, which a batch cannot resolve, and are refused one by one.
    let batched = body(&refusals[2].1);
    assert_eq!(batched["type"], "batch-response");
    assert_eq!(
        statuses(&batched),
        [
            "200 OK",
            "422 Unprocessable Entity",
            "422 Unprocessable Entity"
        ]
    );
    assert!(
        batched["entry"][1]["response"]["outcome"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("names no entry")
    );
    assert!(refusals[0].1.contains("identifier"), "{}", refusals[0].1);
    // The profile finding names the entry, the element and the profile.
    let outcome = body(&nonconformant.1);
    let issues = outcome["issue"].as_array().unwrap();
    assert!(
        issues.iter().any(|issue| issue["code"] == "required"
            && issue["expression"][0] == "Bundle.entry[1].resource.Observation.specimen"
            && issue["diagnostics"]
                .as_str()
                .unwrap()
                .contains("JP_Observation_LabResult")),
        "{outcome}"
    );
    // What was stored says which profiles it was checked against.
    assert_eq!(
        observation["meta"]["profile"],
        serde_json::json!([
            "http://jpfhir.jp/fhir/core/StructureDefinition/JP_Observation_LabResult"
        ])
    );
    assert_eq!(after["total"], 1);
}
