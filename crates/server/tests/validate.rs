//! `POST /fhir/{type}/$validate` over a real socket, with the JP Core package from `../shared`
//! loaded as `[server] profile_packages` would load it: JP Core's own lab example conforms, a
//! broken copy answers one issue per finding with its location, `Parameters` and `?profile=`
//! choose the profile, and a server without profiles says it checked nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{io::Read, path::Path, sync::Arc};

use serde_json::{Value, json};
use support::{fresh_store, request, serve};
use tsunagi_fhir::validate::Profiles;
use tsunagi_server::Settings;

const LAB: &str = "http://jpfhir.jp/fhir/core/StructureDefinition/JP_Observation_LabResult";

/// The package's StructureDefinitions and its lab-result Observation example.
fn jp_core() -> (Profiles, Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/jp-core.r4-1.1.1-snap.tgz");
    let file = std::fs::File::open(&path).unwrap_or_else(|_| panic!("{}", path.display()));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut profiles = Profiles::new();
    let mut example = Value::Null;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        if !name.ends_with(".json") || entry.read_to_string(&mut text).is_err() {
            continue;
        }
        if name.contains("StructureDefinition-") {
            profiles.add(&serde_json::from_str(&text).unwrap()).unwrap();
        } else if name.ends_with("Observation-jp-observation-labresult-example-1.json") {
            example = serde_json::from_str(&text).unwrap();
        }
    }
    assert!(example.is_object());
    (profiles, example)
}

async fn validate(addr: std::net::SocketAddr, target: &str, body: &Value) -> (u16, Value) {
    let reply = request(
        addr,
        "POST",
        target,
        &[("content-type", "application/fhir+json")],
        &body.to_string(),
    )
    .await;
    (reply.status, reply.json())
}

fn diagnostics(outcome: &Value) -> Vec<(String, String, String)> {
    outcome["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|issue| {
            (
                issue["severity"].as_str().unwrap().to_owned(),
                issue["expression"][0].as_str().unwrap_or("").to_owned(),
                issue["diagnostics"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn validate_checks_against_the_loaded_profiles() {
    let (profiles, example) = jp_core();
    let (store, _dir) = fresh_store().await;
    let settings = Settings {
        profiles: Arc::new(profiles),
        ..Settings::default()
    };
    let addr = serve(store, settings).await;

    // JP Core's own example, which claims JP_Observation_LabResult.
    let (status, outcome) = validate(addr, "/fhir/Observation/$validate", &example).await;
    assert_eq!(status, 200, "{outcome}");
    let found = diagnostics(&outcome);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "information");
    assert!(found[0].2.contains(LAB), "{found:?}");

    // A broken copy: one error issue per finding, each with its location.
    let mut broken = example.clone();
    broken.as_object_mut().unwrap().remove("specimen");
    broken["effectiveDateTime"] = json!("2021-10-19 10:00");
    broken["valueQuantiy"] = json!({"value": 1});
    let (status, outcome) = validate(addr, "/fhir/Observation/$validate", &broken).await;
    assert_eq!(status, 200);
    let found = diagnostics(&outcome);
    let locations: Vec<&str> = found.iter().map(|(_, at, _)| at.as_str()).collect();
    assert!(
        found.iter().all(|(severity, _, _)| severity == "error"),
        "{found:?}"
    );
    assert!(locations.contains(&"Observation.specimen"), "{found:?}");
    assert!(
        locations.contains(&"Observation.effectiveDateTime"),
        "{found:?}"
    );
    assert!(locations.contains(&"Observation.valueQuantiy"), "{found:?}");
    let codes: Vec<&str> = outcome["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|issue| issue["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"required") && codes.contains(&"value") && codes.contains(&"structure")
    );

    // The profile named by Parameters, or by ?profile=, instead of the claim.
    let mut unclaimed = broken.clone();
    unclaimed.as_object_mut().unwrap().remove("meta");
    let common = "http://jpfhir.jp/fhir/core/StructureDefinition/JP_Observation_Common";
    let parameters = json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": unclaimed},
        {"name": "profile", "valueUri": LAB}
    ]});
    let (_, outcome) = validate(addr, "/fhir/Observation/$validate", &parameters).await;
    assert!(
        diagnostics(&outcome)
            .iter()
            .any(|(_, at, _)| at == "Observation.specimen"),
        "{outcome}"
    );
    // JP_Observation_Common does not require a specimen; the other findings remain.
    let (_, outcome) = validate(
        addr,
        &format!("/fhir/Observation/$validate?profile={common}"),
        &unclaimed,
    )
    .await;
    let found = diagnostics(&outcome);
    assert!(
        !found.iter().any(|(_, at, _)| at == "Observation.specimen"),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(_, at, _)| at == "Observation.valueQuantiy"),
        "{found:?}"
    );
    // With no claim and no profile asked, the type's JP Core base profile (JP_Observation_Common).
    let (_, outcome) = validate(addr, "/fhir/Observation/$validate", &unclaimed).await;
    assert_eq!(diagnostics(&outcome), found);

    // A profile not loaded, a body of another type, a body that is not JSON.
    let (status, outcome) = validate(
        addr,
        "/fhir/Observation/$validate?profile=http://example.org/Nope",
        &example,
    )
    .await;
    assert_eq!(status, 400, "{outcome}");
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("not loaded")
    );
    let (status, _) = validate(addr, "/fhir/Patient/$validate", &example).await;
    assert_eq!(status, 400);
    let reply = request(
        addr,
        "POST",
        "/fhir/Observation/$validate",
        &[("content-type", "application/fhir+json")],
        "{",
    )
    .await;
    assert_eq!(reply.status, 400);
}

#[tokio::test]
async fn without_profiles_validate_says_it_checked_nothing() {
    let (_, example) = jp_core();
    let (store, _dir) = fresh_store().await;
    let addr = serve(store, Settings::default()).await;
    let (status, outcome) = validate(addr, "/fhir/Observation/$validate", &example).await;
    assert_eq!(status, 200);
    let found = diagnostics(&outcome);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "information");
    assert!(found[0].2.contains("nothing was checked"), "{found:?}");
}
