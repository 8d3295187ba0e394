//! A hospital's PACS over DICOMweb, pulled: the studies of the hospital's patients — those the
//! network knows (a Patient with the hospital's JP Core patient-id system) — found with QIDO-RS
//! `studies?PatientID=…`, each new or changed one read with its series and instances, and
//! written as the PACS's part of its ImagingStudy ([`tsunagi_mapping::dicom`]), which the store
//! folds with the OMG-11 notices' parts into one study ([`tsunagi_mapping::study`]).
//!
//! One pull:
//! 1. lists the hospital's patients in the store, and what was last seen
//!    (`dicomweb:<facility>:patients`: a digest of each patient's QIDO answer;
//!    `dicomweb:<facility>:studies`: each study's digest and patient);
//! 2. asks the PACS for each patient's studies, a few patients at a time; an unchanged answer
//!    is skipped whole;
//! 3. a new or changed study is read (`studies/{uid}/instances`, with its series' attributes) and
//!    its part replaced (source key `dicomweb:<facility>:<Study Instance UID>`); a study the
//!    PACS no longer lists is withdrawn (its ImagingStudy then holds only what the notices say,
//!    or is deleted, history kept);
//! 4. commits each patient's studies with its checkpoints in one batch.
//!
//! A study whose Patient ID is not exactly the patient asked for (a PACS matching wildcards or
//! fuzzily), or whose Issuer of Patient ID is not the one configured for the PACS, is ignored.
//! Names are never read: patients are matched by id. Study and instance lists are paged
//! (`limit`/`offset`).

mod client;
pub mod queries;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde_json::{Value, json};
use tsunagi_adapter::{
    AdapterContext, AdapterError, AdapterInfo, PullAdapter, PullReport, Rejection,
};
use tsunagi_core::{FacilityId, hash::Fnv64};
use tsunagi_dicom::json::Dataset;
use tsunagi_fhir::endpoint::{dicomweb_endpoint, dicomweb_endpoint_id};
use tsunagi_mapping::{
    PACS_SOURCE,
    dicom::{PacsStudy, pacs_part},
};
use tsunagi_store::{
    Access, Batch, Operation, ResourceWrite, SearchQuery, Store, StoreError, contributions,
};

pub use client::{Qido, QidoError};
pub use queries::INSTANCE_FIELDS;
use queries::{Read, all_studies, instances_of, raw_uid, series_of_instances, studies_of};

/// Pages of one answer read at most.
const MAX_PAGES: usize = 1000;

/// Patients asked about at once.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Rows per QIDO-RS page: large pages list a PACS much faster (Orthanc 1.10 lists 10,000
/// studies in 20 pages of 500 in 7.8 s, in 5 of 2,000 in 3.3 s); a PACS returning fewer rows
/// at once says so with `Warning: 299` (PS3.18), or is configured with a smaller `page_size`.
pub const DEFAULT_PAGE_SIZE: usize = 2000;
/// Time limit of one request to the PACS.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How a pull finds the studies of the hospital's known patients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Discovery {
    /// One query per patient (`studies?PatientID=`): for a PACS holding many more patients
    /// than the network shares.
    #[default]
    Patients,
    /// Every study of the PACS listed, page by page, and those of known patients kept: for a
    /// PACS whose per-patient queries are slow (Orthanc 1.10 scans for each) or that holds
    /// mostly shared patients.
    All,
}

/// Patients whose studies are read together in discovery `all`.
const STUDIES_PER_CHUNK: usize = 64;

/// Configuration of one PACS.
#[derive(Debug, Clone)]
pub struct DicomWebConfig {
    /// The hospital whose PACS it is.
    pub facility: FacilityId,
    /// Display name (for reports).
    pub name: Option<String>,
    /// The base URL of its QIDO-RS / WADO-RS services.
    pub url: String,
    /// The `Authorization` header value the PACS expects, if any.
    pub authorization: Option<String>,
    /// Studies per QIDO-RS page.
    pub page_size: usize,
    /// Patients asked about at once.
    pub concurrency: usize,
    /// Time limit of one request.
    pub timeout: Duration,
    /// Read every study again, ignoring checkpoints (writes stay idempotent).
    pub full: bool,
    /// How studies are found.
    pub discovery: Discovery,
    /// The CA certificates (PEM) an `https://` PACS's certificate must chain to.
    pub ca_file: Option<std::path::PathBuf>,
    /// The issuer of patient ids (0010,0021) the PACS files the hospital's patients under;
    /// a study it files under another issuer is not the patient's. `None`: any.
    pub issuer_of_patient_id: Option<String>,
    /// The gateway's own DICOMweb base (`https://gateway.example/dicomweb`), the address of the
    /// hospital's Endpoint; `None`: `/dicomweb`, on the origin that serves the FHIR API.
    pub gateway_url: Option<String>,
}

/// The Endpoint's address when the gateway's public URL is not configured.
pub const DEFAULT_GATEWAY_PATH: &str = "/dicomweb";

/// The adapter.
#[derive(Debug, Clone)]
pub struct DicomWebAdapter {
    config: DicomWebConfig,
}

impl DicomWebAdapter {
    /// Creates the adapter.
    pub fn new(config: DicomWebConfig) -> Self {
        Self { config }
    }
}

/// The QIDO-RS client of the PACS `config` names (its CA read when it is `https://`).
pub fn client(config: &DicomWebConfig) -> Result<Qido, String> {
    let tls = config
        .ca_file
        .as_deref()
        .map(tsunagi_net::client::tls_trusting)
        .transpose()?;
    Qido::new(
        &config.url,
        config.authorization.clone(),
        config.timeout,
        tls,
    )
}

fn patients_scope(facility: &str) -> String {
    format!("dicomweb:{facility}:patients")
}

fn studies_scope(facility: &str) -> String {
    format!("dicomweb:{facility}:studies")
}

fn source_key(facility: &str, uid: &str) -> String {
    format!("{PACS_SOURCE}{facility}:{uid}")
}

/// What the mapping makes of a study, as a digest's first field: a new one makes every study
/// read and written again once (2: the Endpoint, and `meta.source` without the PACS's URL).
const PART_GENERATION: &str = "2";

fn digest(value: &Value) -> String {
    let mut hasher = Fnv64::default();
    hasher.write_field(PART_GENERATION.as_bytes());
    hasher.write_field(value.to_string().as_bytes());
    format!("{:016x}", hasher.finish())
}

/// What a pull knew: by patient, each study's digest by UID.
type Known = BTreeMap<String, BTreeMap<String, String>>;

#[async_trait::async_trait]
impl PullAdapter for DicomWebAdapter {
    fn describe(&self) -> AdapterInfo {
        AdapterInfo {
            kind: "dicomweb",
            facility: self.config.facility.as_str().to_owned(),
        }
    }

    async fn pull(&self, context: &AdapterContext) -> Result<PullReport, AdapterError> {
        let facility = self.config.facility.as_str().to_owned();
        let qido = client(&self.config).map_err(AdapterError::Source)?;
        let store = context.store.clone();
        let mut report = PullReport {
            adapter: "dicomweb".to_owned(),
            facility: facility.clone(),
            ..PullReport::default()
        };
        // The hospital's Endpoint: where its studies' images are opened (the gateway).
        let address = self
            .config
            .gateway_url
            .as_deref()
            .unwrap_or(DEFAULT_GATEWAY_PATH)
            .trim_end_matches('/');
        let endpoint = dicomweb_endpoint(&facility, address);
        let endpoint =
            ResourceWrite::from_json("Endpoint", &dicomweb_endpoint_id(&facility), &endpoint)?;
        let stats = store
            .apply(Batch {
                operations: vec![Operation::ReplaceSource {
                    source_key: format!("{PACS_SOURCE}{facility}:endpoint"),
                    facility: facility.clone(),
                    resources: vec![endpoint],
                }],
            })
            .await?;
        report.add_stats(&stats);
        let patients = patients_of(store.as_ref(), &self.config.facility).await?;
        // With `full`, nothing is skipped, but what was known is still what a study gone is
        // withdrawn from.
        let (seen_patients, known) = {
            let seen: BTreeMap<String, String> = store
                .checkpoints(&patients_scope(&facility))
                .await?
                .into_iter()
                .filter(|(_, value)| !value.is_empty())
                .map(|(patient, value)| (patient, String::from_utf8_lossy(&value).into_owned()))
                .collect();
            let mut known = Known::new();
            for (uid, value) in store.checkpoints(&studies_scope(&facility)).await? {
                let Ok(parsed) = serde_json::from_slice::<Value>(&value) else {
                    continue;
                };
                if let (Some(digest), Some(patient)) =
                    (parsed["digest"].as_str(), parsed["patient"].as_str())
                {
                    known
                        .entry(patient.to_owned())
                        .or_default()
                        .insert(uid, digest.to_owned());
                }
            }
            if self.config.full {
                (BTreeMap::new(), known)
            } else {
                (seen, known)
            }
        };
        let concurrency = self.config.concurrency.max(1);
        let mut failures_in_a_row = 0usize;
        // Every UID some patient's answer listed in this pull (or left unasked): a study is
        // withdrawn only when no patient lists it any more, once every patient was asked — a
        // study moved to another patient is never lost in between.
        let mut listed_all: BTreeSet<String> = BTreeSet::new();
        let mut withdrawals: Vec<(String, String)> = Vec::new();
        let mut held_digests: BTreeMap<String, String> = BTreeMap::new();
        let page = self.config.page_size.max(1);
        let issuer = self.config.issuer_of_patient_id.clone();
        // Discovery `all`: every study of the PACS listed once, grouped by known patient.
        let listed = match self.config.discovery {
            Discovery::Patients => None,
            Discovery::All => {
                let known_patients: BTreeSet<String> = patients.iter().cloned().collect();
                match all_studies(&qido, &known_patients, issuer.as_deref(), page).await {
                    Ok(listed) => Some(listed),
                    Err(error) => {
                        return Err(AdapterError::Source(format!(
                            "the PACS of {facility} could not list its studies: {error}"
                        )));
                    }
                }
            }
        };
        // Whether the PACS matches UID lists (cleared at its first answer that shows it does
        // not).
        let mut lists = true;
        let chunk_size = if listed.is_some() {
            STUDIES_PER_CHUNK
        } else {
            concurrency
        };
        for chunk in patients.chunks(chunk_size) {
            let mut answers = match &listed {
                Some(listed) => chunk
                    .iter()
                    .map(|patient| {
                        let studies = listed.get(patient).cloned().unwrap_or_default();
                        (patient.clone(), Ok(studies))
                    })
                    .collect(),
                None => self.ask_patients(&qido, chunk).await?,
            };
            answers.sort_by(|a, b| a.0.cmp(&b.0));
            // A PACS that cannot be reached fails the pull before anything is read.
            if let Some((_, Err(QidoError::Unreachable(error)))) = answers
                .iter()
                .find(|(_, answer)| matches!(answer, Err(QidoError::Unreachable(_))))
            {
                return Err(AdapterError::Source(format!(
                    "the PACS of {facility} cannot be reached: {error}"
                )));
            }
            // The studies new or changed since the last pull (exactly those `patient_batch`
            // maps), read together, each with the instance count its row gives.
            let mut changed: Vec<String> = Vec::new();
            let mut expected: BTreeMap<String, usize> = BTreeMap::new();
            for (patient, answer) in &answers {
                let Ok(studies) = answer else { continue };
                if seen_patients.get(patient) == Some(&digest(&Value::Array(studies.clone()))) {
                    continue;
                }
                let before = known.get(patient);
                for row in studies {
                    if let Some(uid) = raw_uid(row)
                        && (self.config.full
                            || before.and_then(|b| b.get(&uid)) != Some(&digest(row)))
                        && !changed.contains(&uid)
                    {
                        if let Some(count) = queries::instances_counted(row) {
                            expected.insert(uid.clone(), count);
                        }
                        changed.push(uid);
                    }
                }
            }
            let read = instances_of(&qido, &changed, &expected, page, &mut lists)
                .await
                .map_err(|error| {
                    AdapterError::Source(format!(
                        "the PACS of {facility} cannot be reached: {error}"
                    ))
                })?;
            for (patient, answer) in answers {
                let studies = match answer {
                    Ok(studies) => {
                        failures_in_a_row = 0;
                        studies
                    }
                    Err(QidoError::Unreachable(error)) => {
                        return Err(AdapterError::Source(format!(
                            "the PACS of {facility} cannot be reached: {error}"
                        )));
                    }
                    Err(QidoError::Answer(error)) => {
                        failures_in_a_row += 1;
                        // Not asked: what it had stays.
                        listed_all.extend(
                            known
                                .get(&patient)
                                .into_iter()
                                .flatten()
                                .map(|(uid, _)| uid.clone()),
                        );
                        report.rejected.push(Rejection {
                            source: format!("{}/studies?PatientID={patient}", qido.base()),
                            reason: error,
                        });
                        if failures_in_a_row >= 10 {
                            return Err(AdapterError::Source(format!(
                                "the PACS of {facility} refused 10 queries in a row; the last: {}",
                                report.rejected.last().map_or("", |r| r.reason.as_str())
                            )));
                        }
                        continue;
                    }
                };
                let answer_digest = digest(&Value::Array(studies.clone()));
                report.files_seen += studies.len() as u64;
                let uids: BTreeSet<String> = studies.iter().filter_map(raw_uid).collect();
                listed_all.extend(uids.iter().cloned());
                if seen_patients.get(&patient) == Some(&answer_digest) {
                    report.files_skipped_unchanged += studies.len() as u64;
                    continue;
                }
                let before = known.get(&patient).cloned().unwrap_or_default();
                let gone: Vec<String> = before
                    .keys()
                    .filter(|uid| !uids.contains(*uid))
                    .cloned()
                    .collect();
                let batch = self.patient_batch(
                    (&qido, &read),
                    &patient,
                    &studies,
                    &before,
                    (&answer_digest, gone.is_empty()),
                    &mut report,
                )?;
                if !gone.is_empty() {
                    // Its answer is remembered with the withdrawals, at the end.
                    held_digests.insert(patient.clone(), answer_digest.clone());
                    withdrawals.extend(gone.into_iter().map(|uid| (patient.clone(), uid)));
                }
                if batch.operations.is_empty() {
                    continue;
                }
                let batch =
                    contributions::settle(store.as_ref(), batch, &tsunagi_mapping::Folds).await?;
                let stats = store.apply(batch).await?;
                report.add_stats(&stats);
                context
                    .progress
                    .advance(studies.len() as u64, stats.created.values().sum());
            }
        }
        // Studies no patient lists any more: withdrawn (their ImagingStudy then holds what the
        // notices say, or is deleted, history kept).
        let mut operations = Vec::new();
        let known_patients: BTreeSet<&String> = patients.iter().collect();
        for (_, uid) in withdrawals {
            if listed_all.contains(&uid) {
                continue;
            }
            // Asked once more by its UID: a study a list missed (a page shifted by a change
            // during the listing) is not withdrawn while the PACS files it under a known
            // patient.
            let still = qido
                .get(&format!(
                    "studies?StudyInstanceUID={}&includefield=00100020",
                    tsunagi_core::url::percent_encode(&uid)
                ))
                .await
                .map_err(|error| {
                    AdapterError::Source(format!(
                        "the PACS of {facility} could not confirm a study gone: {error}"
                    ))
                })?;
            let filed = still.as_array().into_iter().flatten().any(|row| {
                raw_uid(row).as_deref() == Some(uid.as_str())
                    && row["00100020"]["Value"][0]
                        .as_str()
                        .is_some_and(|patient| known_patients.contains(&patient.trim().to_owned()))
            });
            if filed {
                continue;
            }
            operations.push(Operation::DeleteSource {
                source_key: source_key(&facility, &uid),
            });
            operations.push(Operation::PutCheckpoint {
                scope: studies_scope(&facility),
                key: uid,
                value: Vec::new(),
            });
            report.records_deleted += 1;
        }
        for (patient, answer_digest) in held_digests {
            operations.push(Operation::PutCheckpoint {
                scope: patients_scope(&facility),
                key: patient,
                value: answer_digest.into_bytes(),
            });
        }
        if !operations.is_empty() {
            let batch = contributions::settle(
                store.as_ref(),
                Batch { operations },
                &tsunagi_mapping::Folds,
            )
            .await?;
            let stats = store.apply(batch).await?;
            report.add_stats(&stats);
        }
        Ok(report)
    }
}

/// Each patient's studies as the PACS answered, or why it did not.
type Answers = Vec<(String, Result<Vec<Value>, QidoError>)>;

impl DicomWebAdapter {
    /// The studies of each of `patients`, asked at once (one query each).
    async fn ask_patients(
        &self,
        qido: &Qido,
        patients: &[String],
    ) -> Result<Answers, AdapterError> {
        let mut asked = tokio::task::JoinSet::new();
        for patient in patients {
            let qido = qido.clone();
            let patient = patient.clone();
            let page = self.config.page_size.max(1);
            let issuer = self.config.issuer_of_patient_id.clone();
            asked.spawn(async move {
                let answer = studies_of(&qido, &patient, issuer.as_deref(), page).await;
                (patient, answer)
            });
        }
        let mut answers = Vec::new();
        while let Some(joined) = asked.join_next().await {
            answers.push(
                joined
                    .map_err(|error| AdapterError::Source(format!("a query stopped: {error}")))?,
            );
        }
        Ok(answers)
    }

    /// One patient's studies as one batch: each new or changed study read and its part
    /// replaced, each study gone withdrawn, the checkpoints.
    fn patient_batch(
        &self,
        (qido, read): (&Qido, &Read),
        patient: &str,
        studies: &[Value],
        before: &BTreeMap<String, String>,
        (answer_digest, remember): (&str, bool),
        report: &mut PullReport,
    ) -> Result<Batch, AdapterError> {
        let facility = self.config.facility.as_str();
        let mut operations = Vec::new();
        let mut complete = true;
        for value in studies {
            let study = match Dataset::new(value) {
                Ok(study) => study,
                Err(error) => {
                    report.rejected.push(Rejection {
                        source: format!("{}/studies?PatientID={patient}", qido.base()),
                        reason: error.to_string(),
                    });
                    complete = false;
                    continue;
                }
            };
            // The same reading of the UID as the one that chose what to read.
            let Some(uid) = raw_uid(value) else {
                continue;
            };
            let study_digest = digest(value);
            if !self.config.full
                && before.get(&uid).map(String::as_str) == Some(study_digest.as_str())
            {
                report.files_skipped_unchanged += 1;
                continue;
            }
            let (series, instances) = match read.get(&uid) {
                Some(Ok(rows)) => {
                    let instances = Value::Array(rows.clone());
                    (series_of_instances(&instances), instances)
                }
                Some(Err(error)) => {
                    report.rejected.push(Rejection {
                        source: format!("{}/studies/{uid}", qido.base()),
                        reason: error.clone(),
                    });
                    complete = false;
                    continue;
                }
                None => {
                    report.rejected.push(Rejection {
                        source: format!("{}/studies/{uid}", qido.base()),
                        reason: "its instances were not read".to_owned(),
                    });
                    complete = false;
                    continue;
                }
            };
            let (Ok(series), Ok(instances)) = (Dataset::all(&series), Dataset::all(&instances))
            else {
                report.rejected.push(Rejection {
                    source: format!("{}/studies/{uid}", qido.base()),
                    reason: "its series or instances are not DICOM JSON data sets".to_owned(),
                });
                complete = false;
                continue;
            };
            let mapped = pacs_part(&PacsStudy {
                facility,
                study: &study,
                series: &series,
                instances: &instances,
                source: &format!("urn:tsunagi:dicomweb:{facility}:{uid}"),
            });
            let part = match mapped {
                Ok(part) => part,
                Err(error) => {
                    report.rejected.push(Rejection {
                        source: format!("{}/studies/{uid}", qido.base()),
                        reason: error.to_string(),
                    });
                    continue;
                }
            };
            report.files_read += 1;
            let key = source_key(facility, &uid);
            operations.push(Operation::ReplaceSource {
                source_key: key.clone(),
                facility: facility.to_owned(),
                resources: Vec::new(),
            });
            operations.extend(contributions::declare(
                &key,
                &[contributions::Part {
                    resource_type: part.resource_type.to_owned(),
                    id: part.id,
                    facility: facility.to_owned(),
                    part: part.part,
                }],
            ));
            operations.push(Operation::PutCheckpoint {
                scope: studies_scope(facility),
                key: uid,
                value: json!({"digest": study_digest, "patient": patient})
                    .to_string()
                    .into_bytes(),
            });
        }
        // A study left unread is read again next pull: the patient's answer is not remembered.
        if complete && remember {
            operations.push(Operation::PutCheckpoint {
                scope: patients_scope(facility),
                key: patient.to_owned(),
                value: answer_digest.as_bytes().to_vec(),
            });
        }
        Ok(Batch { operations })
    }
}

/// The hospital's patients the network knows: the values of its JP Core patient-id system on
/// current Patients.
async fn patients_of(store: &dyn Store, facility: &FacilityId) -> Result<Vec<String>, StoreError> {
    let system = facility.patient_id_system();
    let query = SearchQuery::parse(
        "Patient",
        &[("identifier".to_owned(), format!("{system}|"))],
        0,
        true,
    )
    .map_err(|error| StoreError::Invalid(error.to_string()))?;
    let keys = store.search(&Access::Unrestricted, &query).await?;
    let mut patients = BTreeSet::new();
    for chunk in keys.chunks(500) {
        for patient in store.fetch(&Access::Unrestricted, chunk).await? {
            let Some(json) = patient.to_json()? else {
                continue;
            };
            for identifier in json["identifier"].as_array().into_iter().flatten() {
                if identifier["system"] == system.as_str()
                    && let Some(value) = identifier["value"].as_str()
                {
                    patients.insert(value.to_owned());
                }
            }
        }
    }
    Ok(patients.into_iter().collect())
}
