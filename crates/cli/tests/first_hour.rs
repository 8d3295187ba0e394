//! A newcomer's first hour with the binary: `serve` on a port of its own without `--base-url`
//! names that origin in discovery and as the issuer, `token issue` defaults to it, and the audit
//! trail an operator's act leaves is valid FHIR (no empty values) even when `$USER` is empty.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    io::BufRead,
    process::{Child, Command, Stdio},
};

use serde_json::Value;
use support::{add_facility, add_user, http, ok, register_lab};

const HOSPITAL: &str = "0610100010";
const LAB: &str = "0610900001";

/// Kills the server when the test ends, however it ends.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tsunagi serve --db db --listen 127.0.0.1:0` (no --base-url): the child and its address.
fn serve(db: &str) -> (Serving, String) {
    serve_with(db, &[])
}

/// `serve` with further arguments (a `--config`, say).
fn serve_with(db: &str, extra: &[&str]) -> (Serving, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args(["serve", "--db", db, "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("serve prints its base").unwrap();
        if let Some(rest) = line.strip_prefix("FHIR base ") {
            break rest.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let address = base
        .trim_start_matches("http://")
        .trim_end_matches("/fhir")
        .to_owned();
    (Serving(child), address)
}

/// `tsunagi token issue` for the lab's client `client-lab` with `scope` (and further flags).
fn lab_token(db: &str, scope: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "token",
        "issue",
        "--db",
        db,
        "--system",
        "client-lab",
        "--scope",
        scope,
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

fn json_of(answer: &str) -> Value {
    serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

#[test]
fn serve_without_base_url_names_the_origin_it_listens_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("first.db").display());
    add_facility(&db, HOSPITAL, "荘内病院", "hospital");
    register_lab(&db, LAB);
    let (_serving, address) = serve(&db);
    assert!(!address.ends_with(":8080"), "{address}");
    let origin = format!("http://{address}");

    let (status, answer) = http(
        &address,
        "GET",
        "/fhir/.well-known/smart-configuration",
        "",
        None,
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let discovery = json_of(&answer);
    assert_eq!(discovery["issuer"], origin.as_str());
    assert_eq!(
        discovery["token_endpoint"],
        format!("{origin}/auth/token").as_str()
    );
    let (_, answer) = http(&address, "GET", "/fhir/metadata", "", None, b"").unwrap();
    let statement = json_of(&answer);
    assert_eq!(
        statement["rest"][0]["security"]["extension"][0]["extension"][0]["valueUri"],
        format!("{origin}/auth/token").as_str()
    );

    // `token issue` without --origin names the origin `serve` recorded in the store.
    let token = lab_token(&db, "system/*.rs", &[]);
    let (status, answer) = http(
        &address,
        "GET",
        "/fhir/Patient?_count=1",
        token.trim(),
        None,
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    // A token for another origin is refused, and says why.
    let elsewhere = lab_token(&db, "system/*.rs", &["--origin", "http://127.0.0.1:8080"]);
    let (status, answer) = http(
        &address,
        "GET",
        "/fhir/Patient?_count=1",
        elsewhere.trim(),
        None,
        b"",
    )
    .unwrap();
    assert_eq!(status, 401, "{answer}");
}

#[test]
fn an_operators_audit_events_hold_no_empty_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("audit.db").display());
    add_facility(&db, "0610999991", "診療所", "clinic");
    add_user(&db, "dr", "0610999991", "doctor");
    // An operator whose login name is empty, as under some service managers.
    let added = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args(["admin", "user", "deactivate", "--db", &db, "--id", "dr"])
        .env("USER", "")
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let listed = ok(&["admin", "audit", "--db", &db, "--limit", "100"]);
    let events: Vec<Value> = listed
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(!events.is_empty());
    for event in &events {
        assert_eq!(event["resourceType"], "AuditEvent");
        let found = tsunagi_fhir::json::empty_values(event, "AuditEvent");
        assert!(found.is_empty(), "{found:?} in {event}");
        assert!(event["agent"].as_array().is_some_and(|a| !a.is_empty()));
    }
    let deactivated = events
        .iter()
        .find(|event| event["subtype"][0]["code"] == "user-deactivate")
        .expect("the operator's act is audited");
    assert!(deactivated["agent"][0].get("altId").is_none());
}

/// A minimal SS-MIX2 storage holding patient 1234567's ADT-00 record (ASCII is ISO-2022-JP).
fn storage_with_patient(root: &std::path::Path) {
    let folder = root.join("123/456/1234567/-/ADT-00");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("1234567_-_ADT-00_999999999999999_20240401101010123_-_1"),
        format!(
            "MSH|^~\\&|EHR|{HOSPITAL}|GW|TSUNAGI|20240401101010||ADT^A08^ADT_A01|P0|P|2.5\rPID|0001||1234567||Yamada^Hanako^^^^^L||19600101|F\r"
        ),
    )
    .unwrap();
}

#[test]
fn a_lab_that_only_posts_fhir_needs_no_hl7v2_section() {
    lab_reports_from_the_directory(false);
}

#[test]
fn a_lab_with_an_hl7v2_section_reads_the_directory_per_request_too() {
    lab_reports_from_the_directory(true);
}

/// The directory says which facilities the lab reports for, and `POST /fhir` reads it per
/// request: listed, a result is taken; no longer listed, refused — with or without an
/// `[[hl7v2]]` section for the lab (its own `reports_for` left empty).
fn lab_reports_from_the_directory(with_hl7v2_section: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("lab.db").display());
    add_facility(&db, HOSPITAL, "荘内病院", "hospital");
    register_lab(&db, LAB);
    // Which facilities the lab reports for is the directory's record.
    let said = ok(&[
        "admin",
        "facility",
        "reports-for",
        "--db",
        &db,
        "--code",
        LAB,
        "--facilities",
        HOSPITAL,
    ]);
    assert!(said.contains(HOSPITAL), "{said}");
    // Only a lab reports for others.
    let hospital = support::tsunagi(&[
        "admin",
        "facility",
        "reports-for",
        "--db",
        &db,
        "--code",
        HOSPITAL,
        "--facilities",
        LAB,
    ]);
    assert!(!hospital.status.success());
    assert!(String::from_utf8_lossy(&hospital.stderr).contains("lab-company"));
    let root = dir.path().join("storage");
    storage_with_patient(&root);
    ok(&[
        "ingest",
        "ssmix2",
        "--db",
        &db,
        "--facility",
        HOSPITAL,
        root.to_str().unwrap(),
    ]);
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[store]\nurl = \"{db}\"\n[[hl7v2]]\nfacility = \"{LAB}\"\nsending_facility = \"LAB\"\nclients = [\"client-lab\"]\n"
        ),
    )
    .unwrap();
    let config_flag = ["--config", config.to_str().unwrap()];
    let (_serving, address) = if with_hl7v2_section {
        serve_with(&db, &config_flag)
    } else {
        // No --config, so no [[hl7v2]] section at all.
        serve(&db)
    };
    // Reading alone does not write results: the token must carry the create scopes.
    let reader = lab_token(&db, "system/*.rs", &[]);
    let token = lab_token(&db, support::LAB_SCOPE, &[]);
    let bundle = |value: &str| {
        serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "identifier": [{"system": "urn:lab:result", "value": value}],
                          "status": "final",
                          "code": {"coding": [{"system": "urn:oid:1.2.392.200119.4.504", "code": "3A010000002327101"}], "text": "総蛋白"},
                          "subject": {"reference": format!("Patient/{HOSPITAL}.1234567")},
                          "valueQuantity": {"value": 7.1, "unit": "g/dL"}},
             "request": {"method": "POST", "url": "Observation", "ifNoneExist": format!("identifier=urn:lab:result|{value}")}}
        ]})
        .to_string()
    };
    let (status, answer) = http(
        &address,
        "POST",
        "/fhir",
        token.trim(),
        Some("application/fhir+json"),
        bundle("R-1").as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        json_of(&answer)["entry"][0]["response"]["status"],
        "201 Created"
    );
    let (status, answer) = http(
        &address,
        "POST",
        "/fhir",
        reader.trim(),
        Some("application/fhir+json"),
        bundle("R-3").as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 403, "{answer}");
    // The directory no longer lists the hospital: the next result is refused.
    ok(&[
        "admin",
        "facility",
        "reports-for",
        "--db",
        &db,
        "--code",
        LAB,
    ]);
    let (status, answer) = http(
        &address,
        "POST",
        "/fhir",
        token.trim(),
        Some("application/fhir+json"),
        bundle("R-2").as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 403, "{answer}");
}

#[test]
fn the_ehr_standin_answers_as_told_and_keeps_what_it_received() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("received");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args([
            "standin",
            "--listen",
            "127.0.0.1:0",
            "--answer",
            "AE",
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let address = first
        .split_whitespace()
        .find(|word| word.starts_with("127.0.0.1:"))
        .expect("the stand-in prints its address")
        .to_owned();
    let _serving = Serving(child);
    let message = format!(
        "MSH|^~\\&|TSUNAGI|NET|EHR|{HOSPITAL}|20261124101500||MDM^T02^MDM_T02|N1|P|2.5\rPID|||1234567^^^^PI\r"
    );
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        support::mllp_exchange(&mut stream, message.as_bytes()).as_deref(),
        Some("AE")
    );
    // One line per message, saying what it was and how it was answered.
    let line = loop {
        let line = lines.next().unwrap().unwrap();
        if line.starts_with("1:") {
            break line;
        }
    };
    assert!(line.contains("MDM^T02^MDM_T02 control id N1"), "{line}");
    assert!(line.contains("1234567") && line.ends_with("AE"), "{line}");
    assert_eq!(
        std::fs::read(out.join("000001.hl7")).unwrap(),
        message.as_bytes()
    );
}

#[test]
fn many_identical_warnings_are_reported_once_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    let region = dir.path().join("region");
    ok(&[
        "generate",
        "region",
        "--out",
        region.to_str().unwrap(),
        "--patients",
        "30",
        "--seed",
        "3",
    ]);
    // Homma's EHR writes PID-3 without the folder's leading zeros: a warning in every file.
    let db = format!("sqlite://{}", dir.path().join("homma.db").display());
    let homma = region.join("0610300016");
    let json = ok(&[
        "ingest",
        "ssmix2",
        "--db",
        &db,
        "--facility",
        "0610300016",
        "--json",
        homma.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
    let kinds = report["warning_kinds"].as_array().unwrap();
    let pid = kinds
        .iter()
        .find(|kind| {
            kind["kind"]
                .as_str()
                .unwrap()
                .starts_with("PID-3 … differs from the folder's patient id …")
        })
        .unwrap_or_else(|| panic!("{kinds:#?}"));
    let count = pid["count"].as_u64().unwrap();
    assert!(count > 10, "{pid}");
    assert_eq!(pid["first"].as_array().unwrap().len(), 3);
    let total: u64 = kinds.iter().map(|k| k["count"].as_u64().unwrap()).sum();
    assert_eq!(total, report["warning_count"].as_u64().unwrap());
    // On the terminal: one line per kind with its count, then the first files.
    let fresh = format!("sqlite://{}", dir.path().join("again.db").display());
    let text = ok(&[
        "ingest",
        "ssmix2",
        "--db",
        &fresh,
        "--facility",
        "0610300016",
        homma.to_str().unwrap(),
    ]);
    let line = text
        .lines()
        .find(|line| line.contains("PID-3 … differs"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.trim_start().starts_with(&format!("{count} × ")),
        "{line}"
    );
    assert_eq!(text.matches("PID-3 … differs").count(), 1, "{text}");
    assert!(
        text.contains(&format!("… and {} more", count - 3)),
        "{text}"
    );
}

/// `tsunagi demo` names a referral letter and a progress note of its patient; the clinic doctor
/// it prints a token for reads each, and the original CDA behind it, through the API.
#[test]
fn the_demos_documents_are_read_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&[
        "demo",
        "--dir",
        dir.path().to_str().unwrap(),
        "--patients",
        "8",
        "--no-serve",
    ]);
    let urls: Vec<&str> = out
        .lines()
        .filter_map(|line| line.split("http://127.0.0.1:8080").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|path| path.contains("/DocumentReference/") || path.contains("/Binary/"))
        .collect();
    assert_eq!(urls.len(), 4, "{out}");
    let db = format!("sqlite://{}", dir.path().join("tsunagi.db").display());
    let (_server, address) = serve(&db);
    let token = ok(&[
        "token",
        "issue",
        "--db",
        &db,
        "--user",
        "dr-demo",
        "--scope",
        "user/*.rs",
    ]);
    let token = token.trim();
    for url in &urls {
        let (status, answer) = http(&address, "GET", url, token, None, b"").unwrap();
        assert_eq!(status, 200, "{url}: {answer}");
        if url.contains("/Binary/") {
            assert!(answer.contains("<ClinicalDocument"), "{url}: {answer}");
        } else {
            let json = json_of(&answer);
            assert_eq!(json["resourceType"], "DocumentReference");
            assert!(json["text"]["div"].as_str().unwrap().contains("<h2>"));
        }
    }
    let referral = json_of(&http(&address, "GET", urls[0], token, None, b"").unwrap().1);
    assert_eq!(referral["type"]["coding"][0]["code"], "MD0020730");

    // Its words are found in the patient's record (two kanji: a scan of the record).
    let patient = referral["subject"]["reference"].as_str().unwrap();
    let patient = patient.trim_start_matches("Patient/");
    let found = json_of(
        &http(
            &address,
            "GET",
            &format!("/fhir/DocumentReference?patient={patient}&_content=%E7%B2%BE%E6%9F%BB"),
            token,
            None,
            b"",
        )
        .unwrap()
        .1,
    );
    let ids: Vec<&str> = found["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["resource"]["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&referral["id"].as_str().unwrap()), "{found}");

    // Imaging reports are DiagnosticReports, each linked to the ImagingStudy its OMG-11 notice
    // made from the standardized storage (one study: same UID), and named by its document.
    let reports = json_of(
        &http(
            &address,
            "GET",
            "/fhir/DiagnosticReport?category=RAD&_count=200&_include=DiagnosticReport:imaging-study",
            token,
            None,
            b"",
        )
        .unwrap()
        .1,
    );
    let entries = reports["entry"].as_array().cloned().unwrap_or_default();
    // The studies come along with `_include`.
    assert!(
        entries
            .iter()
            .any(|entry| entry["resource"]["resourceType"] == "ImagingStudy"
                && entry["search"]["mode"] == "include"),
        "{reports}"
    );
    let reports: Vec<serde_json::Value> = entries
        .into_iter()
        .filter(|entry| entry["resource"]["resourceType"] == "DiagnosticReport")
        .collect();
    assert!(!reports.is_empty(), "the demo's region has imaging reports");
    for entry in &reports {
        let report = &entry["resource"];
        assert_eq!(report["category"][0]["coding"][0]["code"], "RAD");
        assert!(report["conclusion"].as_str().is_some_and(|c| !c.is_empty()));
        let study = report["imagingStudy"][0]["reference"].as_str().unwrap();
        let (status, answer) =
            http(&address, "GET", &format!("/fhir/{study}"), token, None, b"").unwrap();
        assert_eq!(status, 200, "{study}: {answer}");
        let study = json_of(&answer);
        let uids: Vec<&str> = study["identifier"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|id| id["system"] == "urn:dicom:uid")
            .filter_map(|id| id["value"].as_str())
            .collect();
        assert_eq!(uids.len(), 1, "{study}");
        let form = report["presentedForm"][0]["url"].as_str().unwrap();
        let (status, _) =
            http(&address, "GET", &format!("/fhir/{form}"), token, None, b"").unwrap();
        assert_eq!(status, 200, "{form}");
    }
}

/// An orchestrator's SIGTERM: `/health/ready` says ready while serving, then the server stops
/// accepting, drains and exits cleanly within its deadline.
#[test]
fn sigterm_drains_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let (mut server, address) = serve(&db);
    for path in ["/health/live", "/health/ready"] {
        let (status, answer) = http(&address, "GET", path, "", None, b"").unwrap();
        assert_eq!(status, 200, "{path}: {answer}");
    }
    // What a container's health check runs.
    let url = format!("http://{address}/health/ready");
    assert_eq!(ok(&["health", "--url", &url]).trim(), "ready");
    let nobody = support::tsunagi(&[
        "health",
        "--url",
        "http://127.0.0.1:9/health/ready",
        "--timeout-seconds",
        "1",
    ]);
    assert!(!nobody.status.success());
    let pid = server.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "serve did not stop after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
