//! `tsunagi bench dicomweb`: a real Orthanc (started here, as the tests start it) holding
//! `studies` small studies over `studies / per_patient` patients the network knows; for each
//! discovery (`patients`, `all`) the first QIDO-RS sync and an unchanged re-sync timed, each
//! beside its floor measured in the same run — the same QIDO-RS requests made straight to the
//! PACS by the adapter's own query functions, nothing mapped or stored; then images through the
//! gateway ([`crate::bench_images`]). Use a release build.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use anyhow::Context;
use serde_json::json;
use tsunagi_adapter::{AdapterContext, NoProgress, PullAdapter};
use tsunagi_adapter_dicomweb::{
    DEFAULT_CONCURRENCY, DEFAULT_PAGE_SIZE, DEFAULT_TIMEOUT, DicomWebAdapter, DicomWebConfig,
    Discovery, Qido, queries,
};
use tsunagi_core::{FacilityId, clock::SystemClock, ids::logical_id};
use tsunagi_dicom::{
    part10::{self, Element},
    tags::{self, sop_class},
};
use tsunagi_store::{Batch, Operation, ResourceWrite};
use tsunagi_testkit::orthanc::Orthanc;

const TARGET_SYNC_SECONDS: f64 = 60.0;
const TARGET_RESYNC_SECONDS: f64 = 5.0;
/// The hospital whose PACS it is; the gateway half reads as its system client.
const FACILITY: &str = crate::bench_search::BENCH_FACILITY;

/// The Study Instance UID of study `study`.
fn study_uid(study: usize) -> String {
    format!("2.25.{}", 1_000_000 + study)
}

/// One small CT instance: its study, series and patient.
fn instance(patient: &str, study: usize) -> Vec<u8> {
    ct(patient, &study_uid(study), 1, 8)
}

/// The UID of the large study.
const LARGE_STUDY: &str = "2.25.999999999";
/// Rows and columns of its images (16 bits: 5 MB each).
const LARGE_SIDE: u16 = 1600;

/// Instance `number` (series 1) of a CT study `uid` of `side`×`side` 16-bit pixels.
fn ct(patient: &str, uid: &str, number: usize, side: u16) -> Vec<u8> {
    let pixels = usize::from(side) * usize::from(side) * 2;
    part10::file(vec![
        Element::text(tags::SPECIFIC_CHARACTER_SET, b"CS", "ISO_IR 192"),
        Element::text(tags::SOP_CLASS_UID, b"UI", sop_class::CT),
        Element::text(tags::SOP_INSTANCE_UID, b"UI", &format!("{uid}.1.{number}")),
        Element::text(tags::STUDY_DATE, b"DA", "20240501"),
        Element::text(tags::STUDY_TIME, b"TM", "101500"),
        Element::text(tags::ACCESSION_NUMBER, b"SH", &format!("B{uid}")),
        Element::text(tags::MODALITY, b"CS", "CT"),
        Element::bytes(tags::STUDY_DESCRIPTION, b"LO", "胸部CT".as_bytes().to_vec()),
        Element::text(tags::PATIENT_NAME, b"PN", "Bench^Patient"),
        Element::text(tags::PATIENT_ID, b"LO", patient),
        Element::text(tags::STUDY_INSTANCE_UID, b"UI", uid),
        Element::text(tags::SERIES_INSTANCE_UID, b"UI", &format!("{uid}.1")),
        Element::text(tags::SERIES_NUMBER, b"IS", "1"),
        Element::text(tags::INSTANCE_NUMBER, b"IS", &number.to_string()),
        Element::us(tags::SAMPLES_PER_PIXEL, 1),
        Element::text(tags::PHOTOMETRIC_INTERPRETATION, b"CS", "MONOCHROME2"),
        Element::us(tags::ROWS, side),
        Element::us(tags::COLUMNS, side),
        Element::us(tags::BITS_ALLOCATED, 16),
        Element::us(tags::BITS_STORED, 12),
        Element::us(tags::HIGH_BIT, 11),
        Element::us(tags::PIXEL_REPRESENTATION, 0),
        Element::bytes(
            tags::PIXEL_DATA,
            b"OW",
            (0..pixels).map(|i| (i % 251) as u8 & 0x0f).collect(),
        ),
    ])
}

fn patient_id(index: usize) -> String {
    format!("{:010}", 3_000_000_000u64 + index as u64)
}

/// The floor of a sync in `discovery`: the QIDO-RS requests the adapter makes, by the same
/// functions, straight to the PACS — each known patient's studies (or every study listed), then
/// the instances of all of them (`read`: the first sync) or none (an unchanged re-sync) —
/// nothing mapped or stored.
async fn floor(
    qido: &Qido,
    patients: &[String],
    discovery: Discovery,
    read: bool,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let page = DEFAULT_PAGE_SIZE;
    let uids_of = |studies: &[serde_json::Value]| -> Vec<String> {
        studies.iter().filter_map(queries::raw_uid).collect()
    };
    let counts_of = |studies: &[serde_json::Value]| -> Vec<(String, usize)> {
        studies
            .iter()
            .filter_map(|row| Some((queries::raw_uid(row)?, queries::instances_counted(row)?)))
            .collect()
    };
    let mut lists = true;
    match discovery {
        Discovery::Patients => {
            for chunk in patients.chunks(DEFAULT_CONCURRENCY) {
                let mut asked = tokio::task::JoinSet::new();
                for patient in chunk {
                    let qido = qido.clone();
                    let patient = patient.clone();
                    asked.spawn(
                        async move { queries::studies_of(&qido, &patient, None, page).await },
                    );
                }
                let (mut uids, mut expected) = (Vec::new(), BTreeMap::new());
                while let Some(joined) = asked.join_next().await {
                    let studies = joined?.map_err(|e| anyhow::anyhow!("{e}"))?;
                    uids.extend(uids_of(&studies));
                    expected.extend(counts_of(&studies));
                }
                if read {
                    queries::instances_of(qido, &uids, &expected, page, &mut lists)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
        }
        Discovery::All => {
            let known = patients.iter().cloned().collect();
            let listed = queries::all_studies(qido, &known, None, page)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if read {
                for chunk in patients.chunks(64) {
                    let studies: Vec<&Vec<serde_json::Value>> = chunk
                        .iter()
                        .filter_map(|patient| listed.get(patient))
                        .collect();
                    let uids: Vec<String> = studies.iter().flat_map(|s| uids_of(s)).collect();
                    let expected: BTreeMap<String, usize> =
                        studies.iter().flat_map(|s| counts_of(s)).collect();
                    queries::instances_of(qido, &uids, &expected, page, &mut lists)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// A fresh store knowing the patients (as the network would, from their SS-MIX2 records).
async fn store_with(
    dir: &std::path::Path,
    name: &str,
    patients: &[String],
) -> anyhow::Result<std::sync::Arc<dyn tsunagi_store::Backend>> {
    let url = format!("sqlite://{}", dir.join(name).display());
    let store = crate::open::open_store(&url).await?;
    let system = FacilityId::parse(FACILITY)?.patient_id_system();
    let mut resources = Vec::new();
    for patient in patients {
        let id = logical_id(&[FACILITY, patient]);
        let json = json!({"resourceType": "Patient", "id": id,
            "identifier": [{"system": system, "value": patient}]});
        resources.push(ResourceWrite::from_json("Patient", &id, &json)?);
    }
    store
        .apply(Batch {
            operations: vec![Operation::ReplaceSource {
                source_key: "bench:patients".to_owned(),
                facility: FACILITY.to_owned(),
                resources,
            }],
        })
        .await?;
    Ok(store)
}

/// The adapter of the bench's PACS in `discovery`.
fn adapter(url: &str, discovery: Discovery) -> anyhow::Result<DicomWebAdapter> {
    Ok(DicomWebAdapter::new(DicomWebConfig {
        facility: FacilityId::parse(FACILITY)?,
        name: None,
        url: url.to_owned(),
        authorization: None,
        page_size: DEFAULT_PAGE_SIZE,
        concurrency: DEFAULT_CONCURRENCY,
        timeout: DEFAULT_TIMEOUT,
        full: false,
        discovery,
        ca_file: None,
        issuer_of_patient_id: None,
        gateway_url: None,
    }))
}

/// One discovery's first sync and unchanged re-sync into a fresh store, each beside its floor:
/// printed, and the store returned.
async fn sync(
    pacs: &Orthanc,
    dir: &std::path::Path,
    patients: &[String],
    studies: usize,
    discovery: Discovery,
) -> anyhow::Result<std::sync::Arc<dyn tsunagi_store::Backend>> {
    let name = match discovery {
        Discovery::Patients => "patients",
        Discovery::All => "all",
    };
    let store = store_with(dir, &format!("{name}.db"), patients).await?;
    let qido = Qido::new(&pacs.dicomweb_url(), None, DEFAULT_TIMEOUT, None)
        .map_err(|error| anyhow::anyhow!(error))?;
    // Warm Orthanc's caches for both alike, then the floors.
    floor(&qido, patients, discovery, true).await?;
    let floor_sync = floor(&qido, patients, discovery, true).await?;
    let floor_resync = floor(&qido, patients, discovery, false).await?;
    let adapter = adapter(&pacs.dicomweb_url(), discovery)?;
    let context = AdapterContext {
        store: store.clone(),
        clock: Arc::new(SystemClock),
        progress: Arc::new(NoProgress),
    };
    let started = Instant::now();
    let first = adapter.pull(&context).await?;
    let sync = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let again = adapter.pull(&context).await?;
    let resync = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        first.files_read as usize == studies && again.files_read == 0,
        "the sync read {} of {studies} studies, the re-sync {}",
        first.files_read,
        again.files_read
    );
    println!(
        "  discovery = \"{name}\"  first sync    {sync:>8.2} s   {floor_sync:>8.2} s   {:>5.2}   ≤ {TARGET_SYNC_SECONDS:.0} s (×{:.2})   {:.0} studies/s",
        floor_sync / sync,
        sync / TARGET_SYNC_SECONDS,
        studies as f64 / sync
    );
    println!(
        "  discovery = \"{name}\"  re-sync       {resync:>8.2} s   {floor_resync:>8.2} s   {:>5.2}   ≤ {TARGET_RESYNC_SECONDS:.0} s (×{:.2})",
        floor_resync / resync,
        resync / TARGET_RESYNC_SECONDS
    );
    Ok(store)
}

/// Runs the benchmark.
pub(crate) async fn dicomweb(
    studies: usize,
    per_patient: usize,
    study_mb: usize,
) -> anyhow::Result<()> {
    let per_patient = per_patient.max(1);
    let patients: Vec<String> = (0..studies.div_ceil(per_patient)).map(patient_id).collect();
    println!(
        "starting Orthanc and storing {studies} studies of {} patients (one instance each)…",
        patients.len()
    );
    let pacs = Orthanc::start()
        .context("the benchmark needs Orthanc (apt-get install orthanc orthanc-dicomweb)")?;
    let stored = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let pacs = &pacs;
                let patients = &patients;
                scope.spawn(move || -> std::io::Result<()> {
                    for study in (worker..studies).step_by(4) {
                        pacs.store(&instance(&patients[study / per_patient], study))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a storing thread stopped"))??;
        }
        Ok(())
    })?;
    println!(
        "  stored in {:.1} s ({:.0} instances/s into Orthanc)",
        stored.elapsed().as_secs_f64(),
        studies as f64 / stored.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir()?;
    println!(
        "{studies} studies of {} patients from one PACS (Orthanc, loopback)",
        patients.len()
    );
    println!(
        "  measure                               this run   floor (same QIDO-RS requests, nothing stored)   ratio   target"
    );
    sync(&pacs, dir.path(), &patients, studies, Discovery::Patients).await?;
    let store = sync(&pacs, dir.path(), &patients, studies, Discovery::All).await?;
    let adapter = adapter(&pacs.dicomweb_url(), Discovery::All)?;
    let context = AdapterContext {
        store: store.clone(),
        clock: Arc::new(SystemClock),
        progress: Arc::new(NoProgress),
    };

    // The images: a large study beside the small ones, synced, then read through the gateway.
    let large = study_mb.div_ceil(5).max(1);
    println!("\nstoring a study of {large} images of 5 MB…");
    for number in 1..=large {
        pacs.store(&ct(&patients[0], LARGE_STUDY, number, LARGE_SIDE))?;
    }
    let synced = adapter.pull(&context).await?;
    anyhow::ensure!(synced.files_read == 1, "the large study was not synced");
    let object =
        |uid: &str, number: usize| format!("{uid}/series/{uid}.1/instances/{uid}.1.{number}");
    let objects = crate::bench_images::Objects {
        small: (0..studies.min(64))
            .map(|s| object(&study_uid(s), 1))
            .collect(),
        large: (1..=large).map(|n| object(LARGE_STUDY, n)).collect(),
        study: LARGE_STUDY.to_owned(),
    };
    let target =
        tsunagi_server::dicomweb::Pacs::new(FACILITY, &pacs.dicomweb_url(), None, DEFAULT_TIMEOUT)
            .map_err(|error| anyhow::anyhow!(error))?;
    crate::bench_images::through_the_gateway(store, patients.len(), target, pacs.addr(), &objects)
        .await
}
