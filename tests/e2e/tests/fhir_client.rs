//! A standard FHIR client reads the region: fhir-sdk's REST client (strict about Bundles, next
//! links and headers) against `tsunagi serve` on a real loopback socket over a synthetic region
//! of three hospitals ingested from SS-MIX2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::HashSet, sync::Arc};

use tsunagi_core::clock::FixedClock;
use tsunagi_e2e::ingested_region;
use tsunagi_fhir_model::fhir_sdk::{
    TryStreamExt, Url,
    client::{Client, SearchParameters},
    r4b::resources::{Bundle, Observation, Patient},
    version::FhirR4B,
};

#[tokio::test]
async fn fhir_sdk_client_reads_searches_pages_and_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = ingested_region(dir.path(), 12, 5).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = tsunagi_server::AppState::new(
        store.clone(),
        Arc::new(FixedClock(1_764_000_000_000_000)),
        tsunagi_server::Settings::default(),
    );
    tokio::spawn(tsunagi_server::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let client: Client<FhirR4B> =
        Client::new(Url::parse(&format!("http://{addr}/fhir/")).unwrap()).unwrap();

    // The CapabilityStatement parses into the typed R4B model.
    let statement = client.capabilities().await.unwrap();
    assert_eq!(statement.fhir_version.to_string(), "4.3.0");
    let rest = statement.rest.first().unwrap().as_ref().unwrap();
    assert!(
        rest.resource
            .iter()
            .flatten()
            .any(|r| r.r#type.to_string() == "Patient")
    );

    // Search every patient, page by page (the client follows our next links).
    let patients: Vec<Patient> = client
        .search::<Patient>(SearchParameters::empty().and_raw("_count", "5"))
        .await
        .unwrap()
        .all_matches()
        .try_collect()
        .await
        .unwrap();
    let ids: HashSet<String> = patients.iter().map(|p| p.id.clone().unwrap()).collect();
    assert_eq!(ids.len(), patients.len(), "a page repeated a patient");
    assert!(patients.len() >= 12, "{}", patients.len());

    // Read one, and a missing one.
    let id = patients[0].id.clone().unwrap();
    let read = client.read::<Patient>(&id).await.unwrap().unwrap();
    assert_eq!(read.id.as_deref(), Some(id.as_str()));
    assert!(
        client
            .read::<Patient>("no-such-patient")
            .await
            .unwrap()
            .is_none()
    );

    // A patient's observations, paged three at a time, match the total the server announces.
    let first = client
        .search::<Observation>(
            SearchParameters::empty()
                .and_raw("patient", &id)
                .and_raw("_count", "3"),
        )
        .await
        .unwrap();
    let total = first.total().unwrap() as usize;
    assert!(total > 3, "{total}");
    let observations: Vec<Observation> = first.all_matches().try_collect().await.unwrap();
    assert_eq!(observations.len(), total);
    let distinct: HashSet<_> = observations.iter().map(|o| o.id.clone()).collect();
    assert_eq!(distinct.len(), total);

    // History and $everything parse as R4B Bundles.
    let history = client.history::<Patient>(Some(&id)).await.unwrap();
    assert!(history.entries().count() >= 1);
    let everything: Bundle = client.operation_patient_everything(&id).await.unwrap();
    assert!(
        everything.entry.len() > total,
        "{} entries",
        everything.entry.len()
    );
}
