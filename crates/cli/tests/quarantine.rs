//! `tsunagi serve --mllp-listen` and `tsunagi admin quarantine list|show|retry|drop` as an operator
//! uses them: messages that cannot be applied are answered AE and kept, listed and shown, applied
//! once their cause is fixed or dropped with a reason, and both acts are in the audit trail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::{BufRead, Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

fn tsunagi(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let output = tsunagi(args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

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
    format!(
        "MSH|^~\\&|HIS123|SEND|TSUNAGI|NET|20261124101500||{message_type}|{control_id}|P|2.5\r\
         EVN||20261124101500\r\
         PID|||{patient}^^^^PI||Kensa^Taro^^^^^L||19600101|M\r\
         PV1||O\r"
    )
    .into_bytes()
}

/// Sends one framed message and reads the framed answer; returns MSA-1.
fn request(stream: &mut TcpStream, message: &[u8]) -> String {
    let mut frame = vec![0x0b];
    frame.extend_from_slice(message);
    frame.extend_from_slice(&[0x1c, 0x0d]);
    stream.write_all(&frame).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(&[0x1c, 0x0d]) {
        stream.read_exact(&mut byte).unwrap();
        reply.push(byte[0]);
    }
    let text = String::from_utf8(reply).unwrap();
    let msa = text
        .split('\r')
        .find(|segment| segment.starts_with("MSA|"))
        .unwrap();
    msa.split('|').nth(1).unwrap().to_owned()
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

    let mut serve = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args([
            "serve",
            "--db",
            &db,
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
    let address = loop {
        let line = lines.next().expect("serve prints its addresses").unwrap();
        if let Some(rest) = line.strip_prefix("HL7 v2 over MLLP on ") {
            break rest.split(' ').next().unwrap().to_owned();
        }
    };
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
