//! Images through the gateway (issue 21), against the `tsunagi` binary and a real Orthanc: a
//! hospital's PACS synced, then `tsunagi serve` configured with it answering `/dicomweb`.
//! - QIDO-RS from the store: a consented patient's studies, nothing of a patient not consented;
//! - WADO-RS forwarded: metadata (the PACS's bulk-data URLs turned into the gateway's), an
//!   instance, a rendered frame and image, bulk data;
//! - a hidden patient's study, series, instance, frame and rendered image each 404, audited with
//!   the study's UID; scopes hold; a withdrawn consent stops the next request;
//! - the Python `dicomweb-client` package, unmodified but for its auth header, works through it;
//! - a PACS reached over TLS (trusting the CA configured for it) serves the same;
//! - a PACS that is down, silent, garbled or stalls mid-answer gives a clear 502/504, and the
//!   gateway stays healthy; a study the PACS has since filed under another patient is 404.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    io::{BufRead, Read, Write},
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{add_facility, add_user, ok};
use tsunagi_testkit::{
    http::{Reply, get},
    orthanc::Orthanc,
};

const NIHONKAI: &str = "0610200018";
const CLINIC: &str = "0610400014";

/// A `tsunagi serve` child, killed when dropped.
struct Serving(Child, SocketAddr);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tsunagi serve` with a config whose `[[source]] kind = "dicomweb"` is Nihonkai's PACS at
/// `pacs_url`, answering within `timeout_seconds`.
fn serve(dir: &std::path::Path, db: &str, pacs_url: &str, timeout_seconds: u64) -> Serving {
    serve_with(dir, db, pacs_url, timeout_seconds, "")
}

/// [`serve`] with `more` keys in the PACS's section.
fn serve_with(
    dir: &std::path::Path,
    db: &str,
    pacs_url: &str,
    timeout_seconds: u64,
    more: &str,
) -> Serving {
    static SERVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let number = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let config = dir.join(format!("tsunagi-{number}.toml"));
    std::fs::write(
        &config,
        format!(
            "version = 2\n[store]\nurl = \"{db}\"\n\n[[source]]\nkind = \"dicomweb\"\n\
             facility = \"{NIHONKAI}\"\nurl = \"{pacs_url}\"\nschedule = \"0 0 3 * * *\"\n\
             timeout_seconds = {timeout_seconds}\n{more}"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args(["serve", "--db", db, "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("serve prints its base").unwrap();
        if let Some(rest) = line.strip_prefix("FHIR base http://") {
            break rest
                .trim_end_matches("/fhir")
                .parse::<SocketAddr>()
                .unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let started = Instant::now();
    while get(address, "/fhir/metadata", &[]).map(|r| r.status).ok() != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Serving(child, address)
}

fn token(db: &str, scope: &str) -> String {
    ok(&[
        "token", "issue", "--db", db, "--user", "dr", "--scope", scope,
    ])
    .trim()
    .to_owned()
}

fn ask(serving: &Serving, target: &str, token: &str, accept: Option<&str>) -> Reply {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("Authorization", bearer.as_str())];
    if let Some(accept) = accept {
        headers.push(("Accept", accept));
    }
    get(serving.1, target, &headers).unwrap()
}

fn first(set: &Value, tag: &str) -> String {
    set[tag]["Value"][0].as_str().unwrap_or_default().to_owned()
}

/// The studies of each patient in the PACS: (Patient ID, Study Instance UID).
fn pacs_studies(pacs: &Orthanc) -> Vec<(String, String)> {
    let answer = get(pacs.addr(), "/dicom-web/studies", &[])
        .unwrap()
        .json()
        .unwrap();
    let mut studies: Vec<(String, String)> = answer
        .as_array()
        .unwrap()
        .iter()
        .map(|set| (first(set, "00100020"), first(set, "0020000D")))
        .collect();
    studies.sort();
    studies
}

#[test]
fn images_are_opened_through_the_gateway_under_consent() {
    let dir = tempfile::tempdir().unwrap();
    let (db, pacs) = support::nihonkai_with_pacs(dir.path());
    let url = pacs.dicomweb_url();
    ok(&[
        "ingest",
        "dicomweb",
        "--db",
        &db,
        "--facility",
        NIHONKAI,
        "--url",
        &url,
        "--json",
    ]);
    add_facility(&db, CLINIC, "Clinic", "clinic");
    add_user(&db, "dr", CLINIC, "doctor");

    // Two patients with studies: one consents to the clinic, the other does not.
    let studies = pacs_studies(&pacs);
    let mut patients: Vec<&str> = studies.iter().map(|(p, _)| p.as_str()).collect();
    patients.dedup();
    assert!(patients.len() >= 2, "{studies:?}");
    let (shown, hidden) = (patients[0].to_owned(), patients[1].to_owned());
    let of = |patient: &str| -> Vec<String> {
        studies
            .iter()
            .filter(|(p, _)| p == patient)
            .map(|(_, s)| s.clone())
            .collect()
    };
    let consented = format!("{NIHONKAI}.{shown}");
    let add_consent = |id: &str| {
        ok(&[
            "admin",
            "consent",
            "add",
            "--db",
            &db,
            "--id",
            id,
            "--patient",
            &consented,
            "--from",
            NIHONKAI,
            "--to",
            CLINIC,
        ])
    };
    add_consent("c-images");
    let serving = serve(dir.path(), &db, &url, 10);
    let reader = token(&db, "user/*.rs");

    // QIDO-RS from the store: the consented patient's studies, each retrievable at the gateway.
    let found = ask(
        &serving,
        &format!("/dicomweb/studies?PatientID={shown}"),
        &reader,
        None,
    );
    assert_eq!(
        found.status,
        200,
        "{}",
        String::from_utf8_lossy(&found.body)
    );
    assert_eq!(found.header("content-type"), Some("application/dicom+json"));
    let found = found.json().unwrap();
    let mut uids: Vec<String> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|s| first(s, "0020000D"))
        .collect();
    uids.sort();
    assert_eq!(uids, of(&shown));
    let study = &found[0];
    assert_eq!(first(study, "00100020"), shown);
    assert!(
        study["00100010"]["Value"][0]["Ideographic"].is_string(),
        "{study}"
    );
    let uid = first(study, "0020000D");
    assert_eq!(
        first(study, "00081190"),
        format!("http://{}/dicomweb/studies/{uid}", serving.1)
    );
    for target in [
        format!("/dicomweb/studies?PatientID={hidden}"),
        format!("/dicomweb/studies?StudyInstanceUID={}", of(&hidden)[0]),
    ] {
        let none = ask(&serving, &target, &reader, None);
        assert_eq!(
            (none.status, none.json().unwrap()),
            (200, Value::Array(Vec::new())),
            "{target}"
        );
    }
    let everything = ask(
        &serving,
        "/dicomweb/studies?PatientName=*&limit=1000",
        &reader,
        None,
    );
    assert_eq!(
        everything.json().unwrap().as_array().unwrap().len(),
        of(&shown).len()
    );
    assert!(
        everything
            .header("warning")
            .unwrap()
            .contains("PatientName")
    );

    // The ImagingStudy names the hospital's Endpoint: the gateway's proxy, never the PACS.
    let imaging = ask(
        &serving,
        &format!("/fhir/ImagingStudy?identifier=urn:dicom:uid|urn:oid:{uid}"),
        &reader,
        None,
    );
    let imaging = imaging.json().unwrap();
    let endpoint = imaging["entry"][0]["resource"]["endpoint"][0]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let endpoint = ask(&serving, &format!("/fhir/{endpoint}"), &reader, None)
        .json()
        .unwrap();
    assert_eq!(endpoint["connectionType"]["code"], "dicom-wado-rs");
    assert_eq!(endpoint["address"], "/dicomweb");
    assert!(
        !imaging.to_string().contains(&pacs.addr().to_string()),
        "the PACS's address leaked"
    );

    // WADO-RS forwarded: series and instances from the store, metadata from the PACS with its
    // URLs turned into the gateway's.
    let series = ask(
        &serving,
        &format!("/dicomweb/studies/{uid}/series"),
        &reader,
        None,
    )
    .json()
    .unwrap();
    let series_uid = first(&series[0], "0020000E");
    let instances = ask(
        &serving,
        &format!("/dicomweb/studies/{uid}/series/{series_uid}/instances"),
        &reader,
        None,
    )
    .json()
    .unwrap();
    let sop = first(&instances[0], "00080018");
    let metadata = ask(
        &serving,
        &format!("/dicomweb/studies/{uid}/metadata"),
        &reader,
        None,
    );
    assert_eq!(metadata.status, 200);
    let text = String::from_utf8(metadata.body.clone()).unwrap();
    assert!(
        !text.contains(&pacs.addr().to_string()),
        "the PACS's address leaked"
    );
    let metadata: Value = serde_json::from_str(&text).unwrap();
    let bulk = metadata
        .as_array()
        .unwrap()
        .iter()
        .find_map(|set| set["7FE00010"]["BulkDataURI"].as_str())
        .unwrap()
        .to_owned();
    let prefix = format!("http://{}/dicomweb/studies/{uid}/", serving.1);
    assert!(bulk.starts_with(&prefix), "{bulk}");
    let bulk = ask(
        &serving,
        bulk.trim_start_matches(&format!("http://{}", serving.1)),
        &reader,
        None,
    );
    assert_eq!(bulk.status, 200);
    assert!(
        bulk.header("content-type")
            .unwrap()
            .starts_with("multipart/related")
    );

    let instance_path = format!("/dicomweb/studies/{uid}/series/{series_uid}/instances/{sop}");
    let instance = ask(
        &serving,
        &instance_path,
        &reader,
        Some("multipart/related; type=\"application/dicom\""),
    );
    assert_eq!(instance.status, 200);
    assert!(
        instance
            .header("content-type")
            .unwrap()
            .starts_with("multipart/related")
    );
    assert!(instance.body.windows(4).any(|w| w == b"DICM"));
    assert!(
        instance
            .body
            .windows(sop.len())
            .any(|w| w == sop.as_bytes())
    );
    let direct = get(
        pacs.addr(),
        &format!("/dicom-web/studies/{uid}/series/{series_uid}/instances/{sop}"),
        &[],
    )
    .unwrap();
    assert_eq!(
        instance.body.len(),
        direct.body.len(),
        "the PACS's answer, relayed whole"
    );
    assert_eq!(instance.header("content-encoding"), None);
    for rendered in [
        format!("{instance_path}/frames/1/rendered"),
        format!("{instance_path}/rendered"),
    ] {
        let image = ask(&serving, &rendered, &reader, Some("image/jpeg"));
        assert_eq!(image.status, 200, "{rendered}");
        assert_eq!(image.header("content-type"), Some("image/jpeg"));
        assert_eq!(&image.body[..2], b"\xff\xd8");
    }
    // A series the gateway does not know in this study is not asked for.
    let stray = ask(
        &serving,
        &format!("/dicomweb/studies/{uid}/series/1.2.3/metadata"),
        &reader,
        None,
    );
    assert_eq!(stray.status, 404);

    // The hidden patient's study: every kind of request is 404, as absent, and audited.
    let hidden_uid = of(&hidden)[0].clone();
    let hidden_direct = get(
        pacs.addr(),
        &format!("/dicom-web/studies/{hidden_uid}/instances"),
        &[],
    )
    .unwrap()
    .json()
    .unwrap();
    let (hidden_series, hidden_sop) = (
        first(&hidden_direct[0], "0020000E"),
        first(&hidden_direct[0], "00080018"),
    );
    let hidden_instance =
        format!("/dicomweb/studies/{hidden_uid}/series/{hidden_series}/instances/{hidden_sop}");
    for target in [
        format!("/dicomweb/studies/{hidden_uid}"),
        format!("/dicomweb/studies/{hidden_uid}/metadata"),
        format!("/dicomweb/studies/{hidden_uid}/series"),
        format!("/dicomweb/studies/{hidden_uid}/series/{hidden_series}"),
        hidden_instance.clone(),
        format!("{hidden_instance}/frames/1"),
        format!("{hidden_instance}/frames/1/rendered"),
        format!("{hidden_instance}/rendered"),
    ] {
        let refused = ask(&serving, &target, &reader, None);
        assert_eq!(refused.status, 404, "{target}");
        assert_eq!(refused.json().unwrap()["resourceType"], "OperationOutcome");
    }
    // Scopes hold: no ImagingStudy scope, no images.
    let patients_only = token(&db, "user/Patient.rs");
    assert_eq!(
        ask(
            &serving,
            &format!("/dicomweb/studies/{uid}/metadata"),
            &patients_only,
            None
        )
        .status,
        403
    );
    assert_eq!(
        ask(&serving, "/dicomweb/studies", &patients_only, None).status,
        403
    );

    // A stock client, unmodified but for its auth header.
    let python = tsunagi_testkit::python::dicomweb_client().unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/dicomweb_client_check.py"
    );
    let output = Command::new(python)
        .args([
            script,
            &format!("http://{}/dicomweb", serving.1),
            &reader,
            &shown,
            &hidden_uid,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checked: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(checked["hidden"], 404, "{checked}");
    assert!(checked["instances"].as_u64().unwrap() > 0, "{checked}");
    assert!(checked["rendered_bytes"].as_u64().unwrap() > 2, "{checked}");

    // The trail: the shown patient's retrievals name the patient and the study; the hidden
    // study's refusals name its UID and no patient.
    let trail = ok(&["admin", "audit", "--db", &db, "--limit", "1000"]);
    let events: Vec<Value> = trail
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let names_study = |event: &Value, uid: &str| {
        event["entity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entity| entity["what"]["identifier"]["value"] == format!("urn:oid:{uid}"))
    };
    let patient_id = format!("Patient/{NIHONKAI}.{shown}");
    assert!(events.iter().any(|e| {
        names_study(e, &uid)
            && e["outcome"] == "0"
            && e["entity"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["what"]["reference"] == patient_id.as_str())
    }));
    let refusals = events
        .iter()
        .filter(|e| names_study(e, &hidden_uid) && e["outcomeDesc"] == "HTTP 404")
        .count();
    assert!(refusals >= 8, "{refusals} refusals audited");

    // The same PACS over TLS (a terminator in front of it, the test CA's certificate): images
    // are opened through the gateway as before.
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tls");
    let front = tsunagi_testkit::tls_front::TlsFront::start(
        pacs.addr(),
        std::path::Path::new(&format!("{fixtures}/server.pem")),
        std::path::Path::new(&format!("{fixtures}/server.key")),
    )
    .unwrap();
    {
        let over_tls = serve_with(
            dir.path(),
            &db,
            &format!("https://127.0.0.1:{}/dicom-web", front.addr().port()),
            10,
            &format!("ca_file = \"{fixtures}/ca.pem\"\n"),
        );
        let reader = token(&db, "user/*.rs");
        let relayed = ask(&over_tls, &instance_path, &reader, None);
        assert_eq!(
            relayed.status,
            200,
            "{}",
            String::from_utf8_lossy(&relayed.body)
        );
        assert_eq!(relayed.body.len(), direct.body.len());
    }
    drop(front);

    // The PACS down: a clear 502, and the gateway stays healthy.
    drop(pacs);
    let down = ask(
        &serving,
        &format!("/dicomweb/studies/{uid}/metadata"),
        &reader,
        None,
    );
    assert_eq!(down.status, 502);
    assert!(String::from_utf8_lossy(&down.body).contains("cannot be reached"));
    assert_eq!(get(serving.1, "/healthz", &[]).unwrap().status, 200);

    // A withdrawn consent stops the next request.
    ok(&[
        "admin", "consent", "withdraw", "--db", &db, "--id", "c-images",
    ]);
    assert_eq!(
        ask(
            &serving,
            &format!("/dicomweb/studies/{uid}/metadata"),
            &reader,
            None
        )
        .status,
        404
    );
    assert_eq!(
        ask(
            &serving,
            &format!("/dicomweb/studies?PatientID={shown}"),
            &reader,
            None
        )
        .json()
        .unwrap(),
        Value::Array(Vec::new())
    );
    drop(serving);

    // A PACS that is silent, garbled or stalls mid-answer.
    add_consent("c-images-2");
    let (fake, mode) = fake_pacs(&uid, &shown);
    let serving = serve(dir.path(), &db, &format!("http://{fake}/dicom-web"), 2);
    // Tokens name the origin that serves them: this server's.
    let reader = token(&db, "user/*.rs");
    let metadata = format!("/dicomweb/studies/{uid}/metadata");
    // The PACS now files the study under another patient: not served as this one's.
    *mode.lock().unwrap() = Mode::Moved;
    let moved = ask(&serving, &metadata, &reader, None);
    assert_eq!(
        moved.status,
        404,
        "{}",
        String::from_utf8_lossy(&moved.body)
    );
    for (behaviour, status, says) in [
        (Mode::Silent, 504, "did not answer within 2 s"),
        (Mode::Garbage, 502, "cannot be reached"),
        (Mode::Html, 502, "answered text/html"),
        (Mode::Refuses, 502, "answered 500"),
    ] {
        *mode.lock().unwrap() = behaviour;
        let started = Instant::now();
        let answer = ask(&serving, &metadata, &reader, None);
        assert_eq!(answer.status, status, "{behaviour:?}");
        assert!(
            String::from_utf8_lossy(&answer.body).contains(says),
            "{behaviour:?}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert!(started.elapsed() < Duration::from_secs(8), "{behaviour:?}");
        assert_eq!(get(serving.1, "/healthz", &[]).unwrap().status, 200);
    }
    // Stalling within the answer: metadata (read whole) is a 502; an instance, already begun,
    // is cut, never passed as whole.
    *mode.lock().unwrap() = Mode::Stalls;
    let stalled = ask(&serving, &metadata, &reader, None);
    assert_eq!(stalled.status, 502);
    assert!(String::from_utf8_lossy(&stalled.body).contains("paused too long"));
    let bearer = format!("Bearer {reader}");
    match get(
        serving.1,
        &instance_path,
        &[("Authorization", bearer.as_str())],
    ) {
        // The answer ends short of its length: the client knows it is incomplete.
        Err(_) => {}
        Ok(cut) => panic!("a stalled answer was passed as whole: {}", cut.status),
    }
    assert_eq!(get(serving.1, "/healthz", &[]).unwrap().status, 200);
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Moved,
    Silent,
    Garbage,
    Html,
    Refuses,
    Stalls,
}

/// A PACS stand-in that misbehaves as told: its address and the switch. Asked whose study
/// `uid` is (the gateway asks before it forwards), it says patient `patient` — another one in
/// mode `Moved`.
fn fake_pacs(uid: &str, patient: &str) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Mode>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let mode = std::sync::Arc::new(std::sync::Mutex::new(Mode::Silent));
    let shared = mode.clone();
    let (uid, patient) = (uid.to_owned(), patient.to_owned());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mode = *shared.lock().unwrap();
            let (uid, patient) = (uid.clone(), patient.clone());
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let read = stream.read(&mut request).unwrap_or(0);
                let line = String::from_utf8_lossy(&request[..read]).into_owned();
                if line.contains("/studies?StudyInstanceUID=") {
                    let filed = if matches!(mode, Mode::Moved) {
                        "0000000000"
                    } else {
                        patient.as_str()
                    };
                    let body = format!(
                        r#"[{{"0020000D":{{"vr":"UI","Value":["{uid}"]}},"00100020":{{"vr":"LO","Value":["{filed}"]}}}}]"#
                    );
                    let _ = stream.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                    return;
                }
                let _ = match mode {
                    Mode::Silent => {
                        std::thread::sleep(Duration::from_secs(6));
                        Ok(())
                    }
                    Mode::Garbage => stream.write_all(b"\x00\x01garbage\r\n\r\n"),
                    Mode::Html | Mode::Moved => stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 6\r\n\r\n<html>"),
                    Mode::Refuses => stream.write_all(b"HTTP/1.1 500 Internal Error\r\nContent-Length: 0\r\n\r\n"),
                    Mode::Stalls => {
                        let head: &[u8] = if line.contains("/metadata") {
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: 100000\r\n\r\n[{\"00080005\":"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Type: multipart/related; type=\"application/dicom\"; boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\nContent-Type: application/dicom\r\n\r\nDICM"
                        };
                        let _ = stream.write_all(head);
                        std::thread::sleep(Duration::from_secs(6));
                        Ok(())
                    }
                };
            });
        }
    });
    (address, mode)
}
