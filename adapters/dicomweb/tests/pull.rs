//! A real PACS (Orthanc) holding the synthetic region's images for one hospital, pulled after
//! the hospital's standardized storage: every study becomes one ImagingStudy — the OMG-11
//! notice's and the PACS's parts folded together where both exist — with its series and
//! instances; an unchanged PACS is skipped; a study deleted in the PACS leaves what its notice
//! says, or nothing; a PACS that is down fails the pull, naming it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use serde_json::Value;
use tsunagi_adapter::{AdapterContext, NoProgress, PullAdapter, PullReport};
use tsunagi_adapter_dicomweb::{DicomWebAdapter, DicomWebConfig};
use tsunagi_core::{FacilityId, clock::FixedClock};
use tsunagi_mapping::imaging::study_id;
use tsunagi_store::{Access, Store};
use tsunagi_testkit::{http, orthanc::Orthanc};

const NIHONKAI: &str = "0610200018";

async fn pull(store: Arc<dyn Store>, url: &str) -> Result<PullReport, String> {
    let adapter = DicomWebAdapter::new(DicomWebConfig {
        facility: FacilityId::parse(NIHONKAI).unwrap(),
        name: None,
        url: url.to_owned(),
        authorization: None,
        page_size: 2,
        concurrency: 4,
        timeout: Duration::from_secs(10),
        full: false,
        discovery: tsunagi_adapter_dicomweb::Discovery::Patients,
        ca_file: None,
        gateway_url: None,
        issuer_of_patient_id: None,
    });
    let context = AdapterContext {
        store,
        clock: Arc::new(FixedClock(1_764_000_000_000_000)),
        progress: Arc::new(NoProgress),
    };
    adapter
        .pull(&context)
        .await
        .map_err(|error| error.to_string())
}

async fn study(store: &dyn Store, patient: &str, uid: &str) -> Option<Value> {
    let stored = store
        .read(
            &Access::Unrestricted,
            "ImagingStudy",
            &study_id(NIHONKAI, patient, uid),
        )
        .await
        .unwrap()?;
    stored.to_json().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pacs_studies_are_merged_with_the_notices_and_followed() {
    let dir = tempfile::tempdir().unwrap();
    let region = dir.path().join("region");
    tsunagi_synth::generate_region(&region, 16, 5).unwrap();
    let images = tsunagi_synth::generate_images(&region, 16, 5).unwrap();
    let store = tsunagi_e2e::store(dir.path()).await;
    tsunagi_e2e::pull(store.clone(), NIHONKAI, vec![region.join(NIHONKAI)]).await;
    let pacs = Orthanc::start().unwrap();
    pacs.store_folder(&region.join("pacs").join(NIHONKAI))
        .unwrap();
    let studies = &images
        .facilities
        .iter()
        .find(|(code, _)| code == NIHONKAI)
        .unwrap()
        .1;
    assert!(studies.iter().any(|s| s.order.is_some()) && studies.iter().any(|s| s.order.is_none()));

    let store: Arc<dyn Store> = store;
    let first = pull(store.clone(), &pacs.dicomweb_url()).await.unwrap();
    assert!(first.rejected.is_empty(), "{:#?}", first.rejected);
    assert_eq!(first.files_read as usize, studies.len(), "{first:?}");
    assert!(studies.len() >= 4, "{} studies", studies.len());
    for expected in studies {
        let found = study(store.as_ref(), &expected.patient_id, &expected.uid)
            .await
            .unwrap_or_else(|| panic!("no ImagingStudy for {}", expected.uid));
        assert_eq!(found["numberOfInstances"], expected.instances());
        assert_eq!(
            found["series"].as_array().unwrap().len(),
            expected.series.len()
        );
        let instances: BTreeSet<&str> = found["series"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|series| series["instance"].as_array().unwrap())
            .map(|instance| instance["uid"].as_str().unwrap())
            .collect();
        let generated: BTreeSet<&str> = expected
            .series
            .iter()
            .flat_map(|series| series.instances.iter().map(String::as_str))
            .collect();
        assert_eq!(instances, generated);
        // A study the notice also names: one resource with what each knows.
        if expected.order.is_some() {
            assert!(found["procedureCode"].is_array(), "{found}");
        }
    }
    // One ImagingStudy per study, not one per source.
    let all = store
        .search(
            &Access::Unrestricted,
            &tsunagi_store::SearchQuery::parse("ImagingStudy", &[], 0, true).unwrap(),
        )
        .await
        .unwrap();
    let ordered_only = {
        // Notices whose study has no images in the PACS keep their own ImagingStudy.
        let mut uids = BTreeSet::new();
        for stored in store.fetch(&Access::Unrestricted, &all).await.unwrap() {
            let json = stored.to_json().unwrap().unwrap();
            uids.insert(json["id"].as_str().unwrap().to_owned());
        }
        uids.len()
    };
    assert_eq!(ordered_only, all.len(), "ids are unique");
    assert!(all.len() >= studies.len());

    // Unchanged: nothing read.
    let again = pull(store.clone(), &pacs.dicomweb_url()).await.unwrap();
    assert_eq!(again.files_read, 0, "{again:?}");
    assert_eq!(again.files_skipped_unchanged as usize, studies.len());

    // Deleted in the PACS: an unordered study disappears; an ordered one keeps its notice's part.
    let unordered = studies.iter().find(|s| s.order.is_none()).unwrap();
    let ordered = studies.iter().find(|s| s.order.is_some()).unwrap();
    for gone in [unordered, ordered] {
        let lookup = http::request(
            pacs.addr(),
            "POST",
            "/tools/lookup",
            &[],
            gone.uid.as_bytes(),
        )
        .unwrap()
        .json()
        .unwrap();
        let id = lookup[0]["ID"].as_str().unwrap().to_owned();
        let deleted =
            http::request(pacs.addr(), "DELETE", &format!("/studies/{id}"), &[], b"").unwrap();
        assert_eq!(deleted.status, 200);
    }
    let after = pull(store.clone(), &pacs.dicomweb_url()).await.unwrap();
    assert_eq!(after.records_deleted, 2, "{after:?}");
    assert!(
        study(store.as_ref(), &unordered.patient_id, &unordered.uid)
            .await
            .is_none()
    );
    let kept = study(store.as_ref(), &ordered.patient_id, &ordered.uid)
        .await
        .unwrap();
    assert!(kept.get("series").is_none(), "{kept}");
    assert!(kept["procedureCode"].is_array());

    // A study moved to another patient (the PACS's ids corrected): found under that patient,
    // gone from the first, whichever of the two is asked first.
    let moving = studies
        .iter()
        .find(|s| s.order.is_none() && s.uid != unordered.uid)
        .or_else(|| {
            studies
                .iter()
                .find(|s| s.uid != unordered.uid && s.uid != ordered.uid)
        })
        .unwrap();
    {
        let target = studies
            .iter()
            .map(|s| s.patient_id.clone())
            .filter(|p| *p != moving.patient_id)
            .min()
            .unwrap();
        let lookup = http::request(
            pacs.addr(),
            "POST",
            "/tools/lookup",
            &[],
            moving.uid.as_bytes(),
        )
        .unwrap()
        .json()
        .unwrap();
        let id = lookup[0]["ID"].as_str().unwrap().to_owned();
        // The same files with the other Patient ID (same length), stored again.
        assert_eq!(target.len(), moving.patient_id.len());
        http::request(pacs.addr(), "DELETE", &format!("/studies/{id}"), &[], b"").unwrap();
        let folder = region
            .join("pacs")
            .join(NIHONKAI)
            .join(&moving.patient_id)
            .join(&moving.uid);
        for file in std::fs::read_dir(folder).unwrap() {
            let mut bytes = std::fs::read(file.unwrap().path()).unwrap();
            let from = moving.patient_id.as_bytes();
            let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
            bytes[at..at + from.len()].copy_from_slice(target.as_bytes());
            pacs.store(&bytes).unwrap();
        }
        let moved = pull(store.clone(), &pacs.dicomweb_url()).await.unwrap();
        assert!(moved.rejected.is_empty(), "{:#?}", moved.rejected);
        let there = study(store.as_ref(), &target, &moving.uid).await;
        assert!(there.is_some(), "found under {target}: {moved:?}");
        assert_eq!(there.unwrap()["numberOfInstances"], moving.instances());
        if moving.order.is_none() {
            assert!(
                study(store.as_ref(), &moving.patient_id, &moving.uid)
                    .await
                    .is_none()
            );
        }
    }

    // The PACS down: the pull fails, naming it, and nothing is lost.
    let url = pacs.dicomweb_url();
    drop(pacs);
    let down = pull(store.clone(), &url).await.unwrap_err();
    assert!(
        down.contains("cannot be reached") && down.contains(NIHONKAI),
        "{down}"
    );
    assert!(
        study(store.as_ref(), &ordered.patient_id, &ordered.uid)
            .await
            .is_some()
    );
}
