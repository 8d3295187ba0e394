//! `tsunagi ingest dicomweb` against a real Orthanc holding a synthetic hospital's images, after
//! its standardized storage: the summary, the second run reading nothing, the PACS over TLS
//! trusted by the CA named and refused under another, and clear refusals of a URL it cannot use,
//! a CA file that is not there and an authorization variable that is not set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use support::{ok, tsunagi};

const NIHONKAI: &str = "0610200018";

#[test]
fn a_pacs_is_ingested_with_the_same_summary_and_exit_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (db, pacs) = support::nihonkai_with_pacs(dir.path());
    let url = pacs.dicomweb_url();
    let args = [
        "ingest",
        "dicomweb",
        "--db",
        &db,
        "--facility",
        NIHONKAI,
        "--url",
        &url,
        "--json",
    ];
    let summary: Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(summary["adapter"], "dicomweb");
    assert!(summary["files_read"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(
        summary["rejected"].as_array().unwrap().len(),
        0,
        "{summary}"
    );
    let again = ok(&args[..args.len() - 1]);
    assert!(
        again.contains("DICOMweb PACS ingest of 0610200018"),
        "{again}"
    );
    assert!(again.contains(" 0 read"), "{again}");

    // Over TLS (a terminator in front of Orthanc, with the test CA's localhost certificate):
    // trusted with the CA named, refused with another.
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tls");
    let front = tsunagi_testkit::tls_front::TlsFront::start(
        pacs.addr(),
        std::path::Path::new(&format!("{fixtures}/server.pem")),
        std::path::Path::new(&format!("{fixtures}/server.key")),
    )
    .unwrap();
    let https = format!("https://127.0.0.1:{}/dicom-web", front.addr().port());
    let ca = format!("{fixtures}/ca.pem");
    let over_tls: Value = serde_json::from_str(&ok(&[
        "ingest",
        "dicomweb",
        "--db",
        &db,
        "--facility",
        NIHONKAI,
        "--url",
        &https,
        "--ca-file",
        &ca,
        "--full",
        "--json",
    ]))
    .unwrap();
    assert!(over_tls["files_read"].as_u64().unwrap() > 0, "{over_tls}");
    let rogue = format!("{fixtures}/rogue-ca.pem");
    let refused = tsunagi(&[
        "ingest",
        "dicomweb",
        "--db",
        &db,
        "--facility",
        NIHONKAI,
        "--url",
        &https,
        "--ca-file",
        &rogue,
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("cannot be reached") && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );

    // What cannot be used is refused before anything is read, naming it.
    for (extra, says) in [
        (
            vec!["--url", "https://pacs.example.jp/dicom-web"],
            "needs the CA certificates",
        ),
        (
            vec![
                "--url",
                "https://pacs.example.jp/dicom-web",
                "--ca-file",
                "/no/such/ca.pem",
            ],
            "/no/such/ca.pem",
        ),
        (vec!["--url", "ftp://pacs/"], "must be http://… or https://"),
        (
            vec![
                "--url",
                url.as_str(),
                "--authorization-env",
                "TSUNAGI_NO_SUCH_VARIABLE",
            ],
            "TSUNAGI_NO_SUCH_VARIABLE",
        ),
    ] {
        let mut refused = vec!["ingest", "dicomweb", "--db", &db, "--facility", NIHONKAI];
        refused.extend(extra);
        let output = tsunagi(&refused);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }
}
