//! The `tsunagi` binary as operators use it: exact command names and flags, exit codes,
//! `--json` summaries, NDJSON export, clear errors naming what is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, process::Command};

use serde_json::Value;

mod support;

use support::{ok, tsunagi};

fn tree_digest(root: &Path) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
                });
                found.push((path.strip_prefix(root).unwrap().display().to_string(), hash));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn generate_ingest_reingest_export() {
    let dir = tempfile::tempdir().unwrap();
    let region = dir.path().join("region");
    let region_again = dir.path().join("again");
    let out = ok(&[
        "generate",
        "region",
        "--out",
        region.to_str().unwrap(),
        "--patients",
        "12",
        "--seed",
        "5",
    ]);
    assert!(out.contains("generated 12 people"), "{out}");
    ok(&[
        "generate",
        "region",
        "--out",
        region_again.to_str().unwrap(),
        "--patients",
        "12",
        "--seed",
        "5",
    ]);
    let first = tree_digest(&region);
    let mut second = tree_digest(&region_again);
    // region.json names its own folder; everything else must be byte-identical.
    second.retain(|(path, _)| path != "region.json");
    let mut first_files = first.clone();
    first_files.retain(|(path, _)| path != "region.json");
    assert_eq!(
        first_files, second,
        "the same seed must give the same region"
    );

    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let root = region.join("0610200018");
    let summary: Value = serde_json::from_str(
        ok(&[
            "ingest",
            "ssmix2",
            "--db",
            &db,
            "--facility",
            "0610200018",
            "--name",
            "日本海総合病院",
            "--json",
            root.to_str().unwrap(),
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(summary["facility"], "0610200018");
    assert_eq!(summary["name"], "日本海総合病院");
    assert!(summary["files_read"].as_u64().unwrap() > 10);
    assert_eq!(summary["rejected"].as_array().unwrap().len(), 0);
    let patients = summary["created"]["Patient"].as_u64().unwrap();
    assert!(patients >= 1);

    let again: Value = serde_json::from_str(
        ok(&[
            "ingest",
            "ssmix2",
            "--db",
            &db,
            "--facility",
            "0610200018",
            "--json",
            root.to_str().unwrap(),
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(again["files_read"], 0);
    assert_eq!(again["files_skipped_unchanged"], summary["files_seen"]);

    let text = ok(&[
        "ingest",
        "ssmix2",
        "--db",
        &db,
        "--facility",
        "0610200018",
        root.to_str().unwrap(),
    ]);
    assert!(text.contains("skipped as unchanged"), "{text}");

    let export = dir.path().join("export");
    ok(&[
        "export",
        "ndjson",
        "--db",
        &db,
        "--out",
        export.to_str().unwrap(),
    ]);
    let lines = std::fs::read_to_string(export.join("Patient.ndjson")).unwrap();
    assert_eq!(lines.lines().count() as u64, patients);
    for line in lines.lines() {
        let resource: Value = serde_json::from_str(line).unwrap();
        assert_eq!(resource["resourceType"], "Patient");
        // Updated ADT-00 records give version 2; every resource carries its version.
        assert!(
            resource["meta"]["versionId"]
                .as_str()
                .unwrap()
                .parse::<u32>()
                .unwrap()
                >= 1
        );
    }
    assert!(export.join("Observation.ndjson").exists());
}

#[test]
fn guideline_samples_exit_zero_with_their_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let samples = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/ssmix2-guideline-samples/sampleData");
    let output = tsunagi(&[
        "ingest",
        "ssmix2",
        "--db",
        &db,
        "--facility",
        "9999999999",
        "--json",
        samples.to_str().unwrap(),
    ]);
    assert!(output.status.success());
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        summary["rejected"].as_array().unwrap().len(),
        3,
        "{summary}"
    );
}

/// Every resource of an NDJSON export, by file, without `meta.lastUpdated` (the clock of the
/// ingest).
fn exported(dir: &Path) -> Vec<(String, Vec<Value>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let resources = std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|line| {
                    let mut resource: Value = serde_json::from_str(line).unwrap();
                    resource["meta"]
                        .as_object_mut()
                        .unwrap()
                        .remove("lastUpdated");
                    resource
                })
                .collect();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                resources,
            )
        })
        .collect()
}

/// The same storage ingested into SQLite and into a real PostgreSQL
/// (`TSUNAGI_TEST_POSTGRES`, default the CI machines' server) exports the same resources.
#[test]
fn postgres_and_sqlite_hold_the_same_records() {
    let schema = support::PostgresSchema::new("cli");
    let postgres = schema.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("t.db").display());
    let samples = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/ssmix2-guideline-samples/sampleData");
    let mut exports = Vec::new();
    for (name, db) in [("sqlite", &sqlite), ("postgres", &postgres)] {
        // Twice: the second ingest changes nothing.
        for _ in 0..2 {
            let output = tsunagi(&[
                "ingest",
                "ssmix2",
                "--db",
                db,
                "--facility",
                "9999999999",
                "--full",
                "--json",
                samples.to_str().unwrap(),
            ]);
            assert!(
                output.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let out = dir.path().join(name);
        ok(&[
            "export",
            "ndjson",
            "--db",
            db,
            "--out",
            out.to_str().unwrap(),
        ]);
        exports.push(exported(&out));
    }
    drop(schema);
    assert!(exports[0].len() >= 5, "{:?}", exports[0]);
    assert_eq!(exports[0], exports[1]);
}

#[test]
fn bad_input_gets_a_clear_error_and_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    for (args, expected) in [
        (
            vec![
                "ingest",
                "ssmix2",
                "--db",
                "postgres://postgres@127.0.0.1:1/test",
                "--facility",
                "0610100010",
                root,
            ],
            "cannot open postgres://postgres@127.0.0.1:1/test",
        ),
        (
            vec![
                "ingest",
                "ssmix2",
                "--db",
                "mysql://x",
                "--facility",
                "0610100010",
                root,
            ],
            "unsupported database url",
        ),
        (
            vec!["ingest", "ssmix2", "--db", &db, "--facility", "12345", root],
            "not a 10-digit",
        ),
        (
            vec![
                "ingest",
                "ssmix2",
                "--db",
                &db,
                "--facility",
                "0610100010",
                "/no/such/storage",
            ],
            "/no/such/storage",
        ),
    ] {
        let output = tsunagi(&args);
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn scheduled_pulls_run_once_from_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let region = dir.path().join("region");
    ok(&[
        "generate",
        "region",
        "--out",
        region.to_str().unwrap(),
        "--patients",
        "6",
        "--seed",
        "1",
    ]);
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[store]\nurl = \"sqlite://{}\"\n[[ssmix2]]\nfacility = \"0610100010\"\nname = \"荘内病院\"\nroots = [\"{}\"]\nschedule = \"0 */5 * * * *\"\n",
            dir.path().join("t.db").display(),
            region.join("0610100010").display()
        ),
    )
    .unwrap();
    let out = ok(&["run", "--config", config.to_str().unwrap(), "--once"]);
    assert!(
        out.contains("SS-MIX2 ingest of 0610100010 荘内病院"),
        "{out}"
    );
    std::fs::write(
        &config,
        "version = 1\n[store]\nurl = \"sqlite://x.db\"\nsurprise = 1\n",
    )
    .unwrap();
    let output = tsunagi(&["run", "--config", config.to_str().unwrap(), "--once"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("surprise"));
}

fn tls_fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tls")
        .join(name)
        .display()
        .to_string()
}

/// A rustls client trusting the test CA, presenting the client certificate `identity` if given.
fn tls_client(identity: Option<&str>) -> rustls::ClientConfig {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(tls_fixture("ca.pem")).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some(name) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(tls_fixture(&format!("{name}.pem")))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(tls_fixture(&format!("{name}.key"))).unwrap(),
            )
            .unwrap(),
    }
}

/// `GET path` over TLS with a blocking rustls client trusting the test CA, presenting the
/// client certificate `identity` when given; the status line, or the TLS error.
fn tls_get(addr: &str, path: &str, identity: Option<&str>) -> Result<String, String> {
    use std::io::{Read, Write};
    let config = tls_client(identity);
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let socket = std::net::TcpStream::connect(addr).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let read = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    match text.lines().next() {
        Some(line) if line.starts_with("HTTP/1.1") => Ok(line.to_owned()),
        _ => Err(format!("{read:?}")),
    }
}

#[test]
fn serve_speaks_tls_and_mutual_tls_when_given_certificates() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let (cert, key, ca) = (
        tls_fixture("server.pem"),
        tls_fixture("server.key"),
        tls_fixture("ca.pem"),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args([
            "serve",
            "--db",
            &db,
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--mtls-listen",
            "127.0.0.1:0",
            "--tls-client-ca",
            &ca,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut main = None;
    let mut mutual = None;
    while main.is_none() || mutual.is_none() {
        let line = lines.next().expect("serve prints its addresses").unwrap();
        if let Some(rest) = line.strip_prefix("FHIR base https://") {
            main = rest.strip_suffix("/fhir").map(str::to_owned);
        }
        if let Some(rest) = line.strip_prefix("mutual TLS for system clients on https://") {
            mutual = rest.strip_suffix("/fhir").map(str::to_owned);
        }
    }
    let (main, mutual) = (main.unwrap(), mutual.unwrap());
    let results = (
        tls_get(&main, "/fhir/metadata", None),
        tls_get(&main, "/fhir/Patient", None),
        tls_get(&mutual, "/fhir/metadata", Some("client-lab")),
        tls_get(&mutual, "/fhir/metadata", None),
    );
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(results.0.as_deref(), Ok("HTTP/1.1 200 OK"));
    assert_eq!(results.1.as_deref(), Ok("HTTP/1.1 401 Unauthorized"));
    assert_eq!(results.2.as_deref(), Ok("HTTP/1.1 200 OK"));
    assert!(results.3.is_err(), "no client certificate: {:?}", results.3);
}

#[test]
fn serve_refuses_incomplete_or_unreadable_tls_settings() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let cert = tls_fixture("server.pem");
    let missing = tls_fixture("absent.key");
    for (args, expected) in [
        (
            vec![
                "serve",
                "--db",
                &db,
                "--tls-cert",
                &cert,
                "--tls-key",
                &missing,
            ],
            "absent.key",
        ),
        (vec!["serve", "--db", &db, "--tls-cert", &cert], "--tls-key"),
        (
            vec!["serve", "--db", &db, "--mtls-listen", "127.0.0.1:0"],
            "--tls-client-ca",
        ),
        (
            vec![
                "serve",
                "--db",
                &db,
                "--mtls-listen",
                "127.0.0.1:0",
                "--tls-client-ca",
                &cert,
            ],
            "--tls-cert",
        ),
    ] {
        let output = tsunagi(&args);
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// One HL7 v2 message over MLLP in TLS, trusting the test CA and presenting `identity`; MSA-1
/// of the answer, or what failed.
fn mllp_tls_request(addr: &str, identity: Option<&str>, message: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let config = tls_client(identity);
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    let mut frame = vec![0x0b];
    frame.extend_from_slice(message.as_bytes());
    frame.extend_from_slice(&[0x1c, 0x0d]);
    tls.write_all(&frame).map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(&[0x1c, 0x0d]) {
        match tls.read(&mut byte) {
            Ok(1) => reply.push(byte[0]),
            Ok(_) => return Err("closed".to_owned()),
            Err(error) => return Err(error.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    let msa = text
        .split('\r')
        .find(|segment| segment.starts_with("MSA|"))
        .ok_or(text.clone())?;
    Ok(msa.split('|').nth(1).unwrap_or_default().to_owned())
}

#[test]
fn mllp_over_mutual_tls_names_the_sender_by_its_certificate() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[store]\nurl = \"{db}\"\n\n\
             [[hl7v2]]\nfacility = \"0610900001\"\nsending_facility = \"LABCO\"\nclients = [\"lab-company-1\"]\n\n\
             [mllp]\ntls = true\ntls_client_ca = \"{}\"\n",
            tls_fixture("ca.pem")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args([
            "serve",
            "--db",
            &db,
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--mllp-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &tls_fixture("server.pem"),
            "--tls-key",
            &tls_fixture("server.key"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("serve prints its addresses").unwrap();
        if let Some(rest) = line.strip_prefix("HL7 v2 over MLLP (mutual TLS) on ") {
            break rest.split(' ').next().unwrap().to_owned();
        }
    };
    let message = |facility: &str, control_id: &str| {
        format!(
            "MSH|^~\\&|LIS|{facility}|TSUNAGI|NET|20261124101500||ADT^A08^ADT_A01|{control_id}|P|2.5\r\
             EVN||20261124101500\rPID|||0000000042^^^^PI||Kensa^Taro^^^^^L||19600101|M\rPV1||O\r"
        )
    };
    let results = (
        mllp_tls_request(&address, Some("client-lab"), &message("LABCO", "T1")),
        mllp_tls_request(&address, Some("client-lab"), &message("OTHER", "T2")),
        mllp_tls_request(&address, None, &message("LABCO", "T3")),
        mllp_tls_request(&address, Some("client-rogue"), &message("LABCO", "T4")),
    );
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(results.0.as_deref(), Ok("AA"));
    // The certificate names the sender: a message claiming another facility is refused.
    assert_eq!(results.1.as_deref(), Ok("AR"));
    assert!(results.2.is_err(), "no client certificate: {:?}", results.2);
    assert!(
        results.3.is_err(),
        "a certificate of another CA: {:?}",
        results.3
    );
}

#[test]
fn extended_storage_is_ingested_with_the_same_summary_and_exit_rules() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let root = dir.path().join("extended");
    let folder =
        root.join("000/100/0001000052/20240502/L12345^入院診療録^99ZZZ^11506-3^経過記録^LN");
    let note = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cda/progress-note.xml"),
    )
    .unwrap();
    let good = folder.join("0001000052_20240502_L12345_K0001_20240502093000123_01_1");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::write(good.join("main_document.xml"), &note).unwrap();
    let bad = folder.join("0001000052_20240502_L12345_K0002_20240502093000123_01_1");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("main_document.xml"),
        b"<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>&e;</x>",
    )
    .unwrap();
    let args = [
        "ingest",
        "extended",
        "--db",
        &db,
        "--facility",
        "0610100010",
        "--json",
        root.to_str().unwrap(),
    ];
    let output = tsunagi(&args);
    assert!(output.status.success(), "{output:?}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["adapter"], "ssmix2-extended");
    assert_eq!(summary["created"]["DocumentReference"], 1, "{summary}");
    assert_eq!(summary["created"]["Binary"], 1, "{summary}");
    let rejected = summary["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{summary}");
    assert!(rejected[0]["reason"].as_str().unwrap().contains("DOCTYPE"));
    // Human summary; a second run reads nothing.
    let text = ok(&args[..args.len() - 2]
        .iter()
        .copied()
        .chain([root.to_str().unwrap()])
        .collect::<Vec<_>>());
    assert!(
        text.contains("SS-MIX2 extended-storage ingest of 0610100010"),
        "{text}"
    );
    assert!(text.contains("0 read"), "{text}");
    // A root that is not there fails the run, by name.
    let missing = tsunagi(&[
        "ingest",
        "extended",
        "--db",
        &db,
        "--facility",
        "0610100010",
        "/no/such/root",
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/root"));
    // The export carries the document's bytes, exactly, as the Binary's data.
    let out = dir.path().join("export");
    ok(&[
        "export",
        "ndjson",
        "--db",
        &db,
        "--out",
        out.to_str().unwrap(),
    ]);
    let binaries = std::fs::read_to_string(out.join("Binary.ndjson")).unwrap();
    let lines: Vec<Value> = binaries
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{binaries}");
    assert_eq!(
        tsunagi_core::base64::decode(lines[0]["data"].as_str().unwrap()),
        note
    );
}
