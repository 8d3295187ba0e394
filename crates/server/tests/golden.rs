//! Snapshot tests of whole responses: fixture data in (a fixed clock, fixed ids, `Host:
//! tsunagi.test`), expected FHIR out, compared with the files in `tests/golden/`. Random
//! snapshot and Bundle ids are the only thing normalised (to `SNAPSHOT`). After an intended
//! change, rewrite the files with `TSUNAGI_BLESS=1 cargo nextest run -p tsunagi-server golden`
//! and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;

use serde_json::Value;
use support::{request, start};

const CASES: &[(&str, &str)] = &[
    (
        "search-include",
        "/fhir/Observation?patient=p1&_count=3&_sort=-date&_include=Observation:patient",
    ),
    (
        "search-last-page",
        "/fhir/Observation?patient=Patient/p1&date=ge2024-05-24&_sort=date&_elements=valueQuantity",
    ),
    (
        "search-summary-count",
        "/fhir/Observation?subject=p1&code=3A010000002327101&_summary=count",
    ),
    (
        "search-unknown-parameter",
        "/fhir/Patient?colour=blue&gender=male",
    ),
    (
        "everything-first-page",
        "/fhir/Patient/p1/$everything?_count=4",
    ),
    ("lastn", "/fhir/Observation/$lastn?patient=p1&max=2"),
    (
        "search-summary-true",
        "/fhir/Observation?patient=p1&_count=1&_summary=true",
    ),
    ("read-elements", "/fhir/Patient/p1?_elements=name"),
    ("history-deleted", "/fhir/Patient/p9/_history"),
    ("read-missing", "/fhir/Patient/nobody"),
    ("read-deleted", "/fhir/Patient/p9"),
    ("bad-date", "/fhir/Observation?date=2024-13-45"),
];

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Replaces the response's random snapshot/Bundle id everywhere it occurs.
fn normalise(body: &[u8]) -> String {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    let mut pretty = tsunagi_fhir::json::to_pretty_resource(&value).unwrap();
    if value["resourceType"] == "Bundle"
        && let Some(id) = value["id"].as_str()
    {
        pretty = pretty.replace(id, "SNAPSHOT");
    }
    pretty + "\n"
}

#[tokio::test]
async fn responses_match_their_golden_files() {
    let (addr, _store, _dir) = start().await;
    let bless = std::env::var_os("TSUNAGI_BLESS").is_some();
    let mut failures = Vec::new();
    for (name, target) in CASES {
        let reply = request(addr, "GET", target, &[("Host", "tsunagi.test")], "").await;
        let actual = format!(
            "// GET {target} -> {}\n{}",
            reply.status,
            normalise(&reply.body)
        );
        let path = golden_dir().join(format!("{name}.json"));
        if bless {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: differs\n--- expected\n{expected}\n--- actual\n{actual}"
            )),
            Err(_) => failures.push(format!(
                "{name}: no golden file {} (TSUNAGI_BLESS=1 writes it)",
                path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn xml_bundle_matches_its_golden_file() {
    let (addr, _store, _dir) = start().await;
    let target = "/fhir/Observation?patient=p1&_count=2&_sort=date&_format=xml&_pretty=true";
    let reply = request(addr, "GET", target, &[("Host", "tsunagi.test")], "").await;
    assert_eq!(reply.status, 200);
    let json = tsunagi_fhir_xml::from_xml(&reply.body).unwrap();
    let id = json["id"].as_str().unwrap().to_owned();
    let actual = String::from_utf8(reply.body)
        .unwrap()
        .replace(&id, "SNAPSHOT");
    let path = golden_dir().join("search-page.xml");
    if std::env::var_os("TSUNAGI_BLESS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no golden file {} (TSUNAGI_BLESS=1 writes it)",
            path.display()
        )
    });
    assert_eq!(actual, expected);
}
