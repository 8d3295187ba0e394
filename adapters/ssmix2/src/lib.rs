//! The SS-MIX2 adapter: a hospital whose EHR writes standardized storage to a share that
//! Tsunagi pulls.
//!
//! One pull:
//! 1. loads every patient's checkpoint digest (see [`checkpoint`]);
//! 2. walks the roots ([`walk`]) patient by patient; a patient whose file list (names, sizes,
//!    times) is unchanged is skipped without opening a file;
//! 3. for a changed patient, worker threads read only new content (a `_1` → `_2` rename is not
//!    new content), decode, parse and map it, and apply the condition-flag lifecycle per record:
//!    - a record with a `_1` file: its newest `_1` is the current version (unseen older `_2`
//!      versions are written first, so history keeps them);
//!    - a record with only `_0` files: deleted (history kept);
//!    - a record with only `_2` files: the newest stays current (a rename caught half-way);
//!    - PPR-01 is one record per patient: each snapshot replaces the whole problem list;
//! 4. one writer task commits patients in batches, each batch carrying the checkpoints of the
//!    patients it completes, so a crash loses nothing and a re-run resumes.
//!
//! A file that cannot be decoded, parsed or mapped is rejected with its reason and changes
//! nothing; the rest of the patient's records are unaffected.

pub mod checkpoint;
pub mod name;
pub mod walk;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
};

use tokio::runtime::Handle;
use tsunagi_adapter::{
    AdapterContext, AdapterError, AdapterInfo, PullAdapter, PullReport, Rejection,
};
use tsunagi_core::FacilityId;
use tsunagi_hl7v2::{Message, charset};
use tsunagi_mapping::{CodeTables, Origin, SourceContext, SourceRecord, check_message_type};
use tsunagi_store::{Batch, Operation, ResourceWrite, Store};

use crate::{
    checkpoint::{FileList, Remembered, Status, digest, digest_scope, files_scope},
    name::{FileName, Flag, RecordKey},
    walk::FoundFile,
};

/// The generation of what the mapping makes of a file. Raise it when the same file maps to
/// different resources (2: one Encounter per visit, issue 18; 3: an ImagingStudy keyed by its
/// study, not by the record naming it, issue 20; 4: an ImagingStudy folded from the notices
/// naming it and the PACS, issue 21), and every storage pulled under an older
/// generation is read again in full on its next pull.
pub const MAPPING_GENERATION: &str = "4";

/// Configuration of one SS-MIX2 source.
#[derive(Debug, Clone)]
pub struct Ssmix2Config {
    /// The hospital's 10-digit code.
    pub facility: FacilityId,
    /// Display name (for reports).
    pub name: Option<String>,
    /// One or more storage roots.
    pub roots: Vec<PathBuf>,
    /// Code tables of this facility.
    pub tables: Arc<CodeTables>,
    /// Resources per store transaction.
    pub batch_resources: usize,
    /// Worker threads (0 = one per core).
    pub workers: usize,
    /// Ignore checkpoints and read every file again (writes stay idempotent).
    pub full: bool,
}

/// The adapter.
#[derive(Debug, Clone)]
pub struct Ssmix2Adapter {
    config: Ssmix2Config,
}

impl Ssmix2Adapter {
    /// Creates the adapter.
    pub fn new(config: Ssmix2Config) -> Self {
        Self { config }
    }
}

/// What one patient produced.
#[derive(Debug, Default)]
struct PatientOutcome {
    operations: Vec<Operation>,
    resources: usize,
    files_seen: u64,
    files_read: u64,
    messages: u64,
    records_deleted: u64,
    files_skipped: u64,
    rejected: Vec<Rejection>,
    /// (file, warning text).
    warnings: Vec<(String, String)>,
    /// The patient's new checkpoint file list.
    file_list: Option<FileList>,
}

struct Worker {
    facility: FacilityId,
    tables: Arc<CodeTables>,
    store: Arc<dyn Store>,
    handle: Handle,
    full: bool,
}

/// The result of reading one file.
enum Read {
    /// Mapped resources, and the record's parts of resources it makes with other records.
    Mapped(Vec<ResourceWrite>, Vec<tsunagi_store::contributions::Part>),
    /// A valid deletion file (structure checked, nothing to map).
    Valid,
}

impl Worker {
    fn process(
        &self,
        patient_id: &str,
        files: Vec<FoundFile>,
        mut rejected: Vec<Rejection>,
        known: bool,
    ) -> PatientOutcome {
        let facility = self.facility.as_str();
        let mut outcome = PatientOutcome {
            files_seen: files.len() as u64,
            ..PatientOutcome::default()
        };
        let stored = if self.full || !known {
            FileList::default()
        } else {
            match self
                .handle
                .block_on(self.store.checkpoint(&files_scope(facility), patient_id))
            {
                Ok(Some(bytes)) => FileList::decode(&bytes),
                Ok(None) => FileList::default(),
                Err(error) => {
                    outcome.rejected.push(Rejection {
                        source: patient_id.to_owned(),
                        reason: format!(
                            "cannot read the checkpoint, patient left for the next run: {error}"
                        ),
                    });
                    return outcome;
                }
            }
        };
        let mut remembered = FileList::default();
        let mut records: BTreeMap<RecordKey, Vec<(FileName, FoundFile)>> = BTreeMap::new();
        for file in files {
            let parsed = FileName::parse(&file.name).and_then(|name| {
                if name.patient_id != patient_id || name.care_date != file.date_folder || name.data_type.code() != file.type_folder {
                    Err(format!(
                        "file name says patient {}, date {}, type {} but it is stored under {}/{}/{}",
                        name.patient_id, name.care_date, name.data_type, patient_id, file.date_folder, file.type_folder
                    ))
                } else {
                    Ok(name)
                }
            });
            match parsed {
                Ok(name) => records
                    .entry(name.record_key())
                    .or_default()
                    .push((name, file)),
                Err(reason) => {
                    let stem = file
                        .name
                        .rsplit_once('_')
                        .map(|(stem, _)| stem)
                        .unwrap_or(&file.name)
                        .to_owned();
                    let flag = file.name.chars().last().unwrap_or('?');
                    let already = stored.known(&stem, file.size, file.modified).is_some();
                    remembered.remember(
                        &stem,
                        flag,
                        Remembered {
                            size: file.size,
                            modified: file.modified,
                            status: Status::Rejected,
                        },
                    );
                    if !already {
                        outcome.rejected.push(Rejection {
                            source: file.path.display().to_string(),
                            reason,
                        });
                    }
                }
            }
        }
        for (key, mut versions) in records {
            versions.sort_by(|a, b| {
                a.0.occurred_sortable()
                    .cmp(&b.0.occurred_sortable())
                    .then(a.0.flag.cmp(&b.0.flag))
            });
            self.process_record(&key, &versions, &stored, &mut remembered, &mut outcome);
        }
        outcome.rejected.append(&mut rejected);
        outcome.file_list = Some(remembered);
        outcome
    }

    fn process_record(
        &self,
        key: &RecordKey,
        versions: &[(FileName, FoundFile)],
        stored: &FileList,
        remembered: &mut FileList,
        outcome: &mut PatientOutcome,
    ) {
        let facility = self.facility.as_str();
        let flag_char = |flag: Flag| match flag {
            Flag::Deleted => '0',
            Flag::Current => '1',
            Flag::Superseded => '2',
        };
        // Which files are new content, and did anything about this record change?
        let mut changed = false;
        let mut status: Vec<Option<Status>> = Vec::with_capacity(versions.len());
        for (name, file) in versions {
            let known = stored
                .known(name.stem(), file.size, file.modified)
                .map(|r| r.status);
            if known.is_none() || !stored.flags(name.stem()).contains(&flag_char(name.flag)) {
                changed = true;
            }
            status.push(known);
        }
        let remember_all = |remembered: &mut FileList, status: &[Option<Status>]| {
            for ((name, file), state) in versions.iter().zip(status) {
                remembered.remember(
                    name.stem(),
                    flag_char(name.flag),
                    Remembered {
                        size: file.size,
                        modified: file.modified,
                        status: state.unwrap_or(Status::Ok),
                    },
                );
            }
        };
        outcome.files_skipped += status.iter().filter(|state| state.is_some()).count() as u64;
        if !changed {
            remember_all(remembered, &status);
            return;
        }
        let source_key = key.source_key(facility);
        let current_index = versions
            .iter()
            .rposition(|(name, _)| name.flag == Flag::Current)
            .or_else(|| {
                let has_deleted = versions.iter().any(|(name, _)| name.flag == Flag::Deleted);
                if has_deleted {
                    None
                } else {
                    versions
                        .iter()
                        .rposition(|(name, _)| name.flag == Flag::Superseded)
                }
            });
        match current_index {
            Some(current) => {
                // Unseen versions up to and including the current one, oldest first.
                for index in 0..=current {
                    let (name, _) = &versions[index];
                    if status[index].is_some() || name.flag == Flag::Deleted {
                        continue;
                    }
                    match self.read(&versions[index], true, outcome) {
                        Ok(Read::Mapped(resources, parts)) => {
                            outcome.resources += resources.len() + parts.len();
                            outcome.operations.push(Operation::ReplaceSource {
                                source_key: source_key.clone(),
                                facility: facility.to_owned(),
                                resources,
                            });
                            outcome
                                .operations
                                .extend(tsunagi_store::contributions::declare(&source_key, &parts));
                            status[index] = Some(Status::Ok);
                        }
                        Ok(Read::Valid) => status[index] = Some(Status::Ok),
                        Err(reason) => {
                            outcome.rejected.push(Rejection {
                                source: versions[index].1.path.display().to_string(),
                                reason,
                            });
                            status[index] = Some(Status::Rejected);
                        }
                    }
                }
                // Newer files after the current one (deletion markers superseded by a re-creation)
                // are only validated.
                for index in current + 1..versions.len() {
                    if status[index].is_none() {
                        status[index] = Some(self.validate(&versions[index], outcome));
                    }
                }
            }
            None => {
                let mut valid_delete = false;
                for index in 0..versions.len() {
                    if versions[index].0.flag != Flag::Deleted {
                        continue;
                    }
                    let state = match status[index] {
                        Some(state) => state,
                        None => self.validate(&versions[index], outcome),
                    };
                    status[index] = Some(state);
                    valid_delete |= state == Status::Ok;
                }
                if valid_delete {
                    outcome.records_deleted += 1;
                    outcome
                        .operations
                        .push(Operation::DeleteSource { source_key });
                }
            }
        }
        remember_all(remembered, &status);
    }

    /// Decodes and parses a file (structure only), for deletion markers.
    fn validate(&self, version: &(FileName, FoundFile), outcome: &mut PatientOutcome) -> Status {
        match self.read(version, false, outcome) {
            Ok(_) => Status::Ok,
            Err(reason) => {
                outcome.rejected.push(Rejection {
                    source: version.1.path.display().to_string(),
                    reason,
                });
                Status::Rejected
            }
        }
    }

    fn read(
        &self,
        version: &(FileName, FoundFile),
        map: bool,
        outcome: &mut PatientOutcome,
    ) -> Result<Read, String> {
        let (name, file) = version;
        outcome.files_read += 1;
        let bytes = std::fs::read(&file.path).map_err(|error| format!("cannot read: {error}"))?;
        let (text, _) =
            charset::decode(&bytes).map_err(|error| format!("not decodable: {error}"))?;
        let message = Message::parse(&text)
            .map_err(|error| format!("not a valid HL7 v2 message: {error}"))?;
        if !map {
            // Deletion markers are not mapped; their message type is still checked.
            check_message_type(name.data_type, &message).map_err(|error| error.to_string())?;
            return Ok(Read::Valid);
        }
        let context = SourceContext {
            facility: &self.facility,
            patient_id: &name.patient_id,
            care_date: &name.care_date,
            data_type: name.data_type,
            order_number: &name.order_number,
            origin: Origin::File(&name.name),
            tables: &self.tables,
        };
        let mapped = tsunagi_mapping::map(SourceRecord::Hl7v2 {
            context,
            message: &message,
        })
        .map_err(|error| error.to_string())?;
        outcome.messages += 1;
        let parts = tsunagi_mapping::parts_of(&mapped, self.facility.as_str());
        for warning in mapped.warnings {
            outcome
                .warnings
                .push((file.path.display().to_string(), warning));
        }
        let mut writes = Vec::with_capacity(mapped.resources.len());
        for resource in &mapped.resources {
            let write =
                ResourceWrite::from_json(resource.resource_type, &resource.id, &resource.json)
                    .map_err(|error| error.to_string())?;
            writes.push(write);
        }
        Ok(Read::Mapped(writes, parts))
    }
}

#[async_trait::async_trait]
impl PullAdapter for Ssmix2Adapter {
    fn describe(&self) -> AdapterInfo {
        AdapterInfo {
            kind: "ssmix2",
            facility: self.config.facility.to_string(),
        }
    }

    async fn pull(&self, context: &AdapterContext) -> Result<PullReport, AdapterError> {
        let config = &self.config;
        let facility = config.facility.as_str().to_owned();
        for root in &config.roots {
            if !root.is_dir() {
                return Err(AdapterError::Source(format!(
                    "storage root {} is not a readable folder",
                    root.display()
                )));
            }
        }
        let mut report = PullReport {
            adapter: "ssmix2".to_owned(),
            facility: facility.clone(),
            ..PullReport::default()
        };
        // A storage pulled under another mapping generation is read again in full, once, so
        // that what the mapping now makes of unchanged files replaces what it made before.
        let generation_scope = format!("ssmix2:{facility}:mapping");
        let stored_generation = context
            .store
            .checkpoint(&generation_scope, "generation")
            .await?;
        let pulled_before = !context
            .store
            .checkpoints(&digest_scope(&facility))
            .await?
            .is_empty();
        let remap =
            pulled_before && stored_generation.as_deref() != Some(MAPPING_GENERATION.as_bytes());
        if remap && !config.full {
            report.warn(
                &facility,
                &format!(
                    "the mapping changed since this storage was last pulled (generation \"{MAPPING_GENERATION}\"): every file is read again, once"
                ),
            );
        }
        let full = config.full || remap;

        let digests = tsunagi_adapter::storage::patient_digests(
            context.store.as_ref(),
            &digest_scope(&facility),
            full,
        )
        .await?;

        let workers = if config.workers == 0 {
            // One core stays free for the writer (the store's transaction is a serial path).
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2)
                .saturating_sub(1)
                .max(1)
        } else {
            config.workers
        };
        let (work_sender, work_receiver) =
            mpsc::sync_channel::<(String, Vec<FoundFile>, Vec<Rejection>, u64, bool)>(workers * 4);
        let work_receiver = Arc::new(Mutex::new(work_receiver));
        let (result_sender, mut result_receiver) =
            tokio::sync::mpsc::channel::<(PatientOutcome, String, u64)>(workers * 4);
        let skipped = Arc::new(AtomicU64::new(0));

        // Walker: lists patients and their files, skips unchanged ones.
        let roots = config.roots.clone();
        let walker_skipped = skipped.clone();
        let progress = context.progress.clone();
        let walker = tokio::task::spawn_blocking(move || -> Result<Vec<Rejection>, String> {
            let mut stray = Vec::new();
            let patients = walk::patient_folders(&roots, &mut stray)
                .map_err(|error| format!("cannot walk the storage: {error}"))?;
            for (patient_id, folders) in patients {
                let mut rejected = Vec::new();
                let files = walk::patient_files(&folders, &mut rejected);
                let patient_digest = digest(&files);
                if rejected.is_empty() && digests.get(&patient_id) == Some(&patient_digest) {
                    walker_skipped.fetch_add(files.len() as u64, Ordering::Relaxed);
                    progress.advance(files.len() as u64, 0);
                    continue;
                }
                let known = digests.contains_key(&patient_id);
                if work_sender
                    .send((patient_id, files, rejected, patient_digest, known))
                    .is_err()
                {
                    break;
                }
            }
            Ok(stray)
        });

        // Workers: read, map, index.
        let mut worker_handles = Vec::new();
        for _ in 0..workers {
            let receiver = work_receiver.clone();
            let sender = result_sender.clone();
            let worker = Worker {
                facility: config.facility.clone(),
                tables: config.tables.clone(),
                store: context.store.clone(),
                handle: Handle::current(),
                full,
            };
            worker_handles.push(tokio::task::spawn_blocking(move || {
                loop {
                    let next = match receiver.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    let Ok((patient_id, files, rejected, patient_digest, known)) = next else {
                        return;
                    };
                    let outcome = worker.process(&patient_id, files, rejected, known);
                    if sender
                        .blocking_send((outcome, patient_id, patient_digest))
                        .is_err()
                    {
                        return;
                    }
                }
            }));
        }
        drop(result_sender);

        // Applier: commits batches while the next one is being assembled, so mapping and
        // writing overlap. At most two batches wait, which bounds memory.
        let (batch_sender, mut batch_receiver) = tokio::sync::mpsc::channel::<Batch>(1);
        let applier_store = context.store.clone();
        let applier = tokio::spawn(async move {
            let mut stats = tsunagi_store::ApplyStats::default();
            while let Some(batch) = batch_receiver.recv().await {
                // Resources several records make together (a stay's Encounter) are folded in
                // the same batch as their records.
                let batch = tsunagi_store::contributions::settle(
                    applier_store.as_ref(),
                    batch,
                    &tsunagi_mapping::Folds,
                )
                .await?;
                stats.merge(&applier_store.apply(batch).await?);
            }
            Ok::<_, tsunagi_store::StoreError>(stats)
        });

        // Assembler: groups patients into batches, each carrying its patients' checkpoints.
        let digest_scope_name = digest_scope(&facility);
        let files_scope_name = files_scope(&facility);
        let mut batch = Batch::default();
        let mut pending_resources = 0usize;
        while let Some((mut outcome, patient_id, patient_digest)) = result_receiver.recv().await {
            report.files_seen += outcome.files_seen;
            report.files_read += outcome.files_read;
            report.files_skipped_unchanged += outcome.files_skipped;
            report.messages += outcome.messages;
            report.records_deleted += outcome.records_deleted;
            for (source, warning) in outcome.warnings.drain(..) {
                report.warn(&source, &warning);
            }
            report.rejected.append(&mut outcome.rejected);
            pending_resources += outcome.resources;
            batch.operations.append(&mut outcome.operations);
            batch.operations.push(Operation::PutCheckpoint {
                scope: digest_scope_name.clone(),
                key: patient_id.clone(),
                value: patient_digest.to_le_bytes().to_vec(),
            });
            batch.operations.push(Operation::PutCheckpoint {
                scope: files_scope_name.clone(),
                key: patient_id,
                value: outcome
                    .file_list
                    .take()
                    .map(|list| list.encode())
                    .unwrap_or_default(),
            });
            context
                .progress
                .advance(outcome.files_seen, outcome.resources as u64);
            if pending_resources >= config.batch_resources.max(1) {
                pending_resources = 0;
                if batch_sender.send(std::mem::take(&mut batch)).await.is_err() {
                    // The applier failed; its error is reported below.
                    break;
                }
            }
        }
        if !batch.operations.is_empty() {
            let _ = batch_sender.send(std::mem::take(&mut batch)).await;
        }
        drop(batch_sender);
        let applied = applier
            .await
            .map_err(|error| AdapterError::Source(format!("writer stopped: {error}")));
        drop(result_receiver);
        let walked = walker
            .await
            .map_err(|error| AdapterError::Source(format!("walker stopped: {error}")))?;
        for handle in worker_handles {
            handle
                .await
                .map_err(|error| AdapterError::Source(format!("worker stopped: {error}")))?;
        }
        report.add_stats(&applied??);
        let mut stray = walked.map_err(AdapterError::Source)?;
        report.rejected.append(&mut stray);
        let unchanged_files = skipped.load(Ordering::Relaxed);
        report.files_seen += unchanged_files;
        report.files_skipped_unchanged += unchanged_files;
        report.rejected.sort_by(|a, b| a.source.cmp(&b.source));
        // Only a pull that went through records the generation it mapped with.
        context
            .store
            .apply(Batch {
                operations: vec![Operation::PutCheckpoint {
                    scope: generation_scope,
                    key: "generation".to_owned(),
                    value: MAPPING_GENERATION.as_bytes().to_vec(),
                }],
            })
            .await?;
        Ok(report)
    }
}
