//! A standard FHIR client reads the region: fhir-sdk's REST client (strict about Bundles, next
//! links and headers) against `tsunagi serve` on a real loopback socket over a synthetic region
//! of three hospitals ingested from SS-MIX2. The client authenticates as SMART Backend Services
//! do: on the first 401 it signs an RS384 client assertion and trades it at `/auth/token`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::HashSet, sync::Arc};

use tsunagi_core::clock::{Clock, SystemClock};
use tsunagi_e2e::ingested_region;
use tsunagi_fhir_model::fhir_sdk::{
    HeaderValue, HttpClient, TryStreamExt, Url,
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
    // A lab company's backend registered for hospital A with its RS384 public key.
    use tsunagi_store::{
        Store,
        governance::{Client as Registered, Facility, Governance},
    };
    store
        .put_facility(&Facility {
            code: "0610100010".into(),
            name: "荘内病院".into(),
            kind: "hospital".into(),
            active: true,
        })
        .await
        .unwrap();
    let keys = tsunagi_e2e::workspace().join("tests/fixtures/keys");
    store
        .put_client(&Registered {
            id: "lab-backend".into(),
            facility: "0610100010".into(),
            kind: "system".into(),
            jwks: std::fs::read_to_string(keys.join("lab-rs384.jwks.json")).unwrap(),
            scope: "system/*.rs".into(),
            active: true,
            serves: Vec::new(),
        })
        .await
        .unwrap();
    let origin = format!("http://{addr}");
    let settings = tsunagi_server::Settings {
        tokens: tsunagi_server::security::TokenSettings::for_base(&origin),
        ..Default::default()
    };
    let token_url = settings.tokens.token_url.clone();
    let signing = tsunagi_server::security::signing_keys(store.as_ref(), SystemClock.now_micros())
        .await
        .unwrap();
    let state = tsunagi_server::AppState::new(
        store.clone(),
        store.clone(),
        Arc::new(SystemClock),
        settings,
        signing,
    );
    tokio::spawn(tsunagi_server::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let pem = std::fs::read(keys.join("lab-rs384.pem")).unwrap();
    let logins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = logins.clone();
    let login = move |http: HttpClient| {
        let token_url = token_url.clone();
        let pem = pem.clone();
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let now = SystemClock.now_micros() / 1_000_000;
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS384);
            header.kid = Some("lab-1".into());
            let claims = serde_json::json!({
                "iss": "lab-backend", "sub": "lab-backend", "aud": token_url,
                "exp": now + 120, "jti": format!("jti-{now}-{}", std::process::id())
            });
            let assertion = jsonwebtoken::encode(
                &header,
                &claims,
                &jsonwebtoken::EncodingKey::from_rsa_pem(&pem)?,
            )?;
            let body = format!(
                "grant_type=client_credentials&scope=system%2F*.rs&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
            );
            let reply: serde_json::Value = http
                .post(&token_url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await?
                .json()
                .await?;
            let token = reply["access_token"].as_str().ok_or("no access_token")?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(HeaderValue::from_str(&format!(
                "Bearer {token}"
            ))?)
        }
    };
    let client: Client<FhirR4B> = Client::builder()
        .base_url(Url::parse(&format!("{origin}/fhir/")).unwrap())
        .auth_callback(login)
        .build()
        .unwrap();

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
    // The lab's backend acts for hospital A: it sees exactly hospital A's patients.
    let mut own = 0;
    store
        .for_each_current(&mut |resource| {
            own += usize::from(
                resource.resource_type == "Patient" && resource.id.starts_with("0610100010."),
            );
            Ok(())
        })
        .await
        .unwrap();
    assert!(own >= 3, "{own}");
    assert_eq!(patients.len(), own);
    assert!(
        ids.iter().all(|id| id.starts_with("0610100010.")),
        "{ids:?}"
    );
    assert_eq!(
        logins.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one login, then the token is reused"
    );

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
