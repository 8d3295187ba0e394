//! The SS-MIX2 extended-storage adapter: the documents a hospital's EHR keeps beside its
//! standardized storage (progress notes, discharge summaries, referral letters, radiology
//! reports: CDA R2, PDF or other files), pulled into `DocumentReference` + `Binary`.
//!
//! One pull:
//! 1. loads every patient's digest (see [`checkpoint`]); a patient whose content folders are
//!    unchanged is skipped without opening a file;
//! 2. for a changed patient, reads its folders ([`walk`]) and groups the versions of each
//!    document record; a record with a new or changed version is read again whole ([`read`]),
//!    so its versions chain (`replaces`) and all but the newest are `superseded`;
//! 3. commits patients in batches bounded by resources and by document bytes, each batch with
//!    its patients' checkpoints: a crash loses nothing, a re-run resumes.
//!
//! Nothing is deleted: extended storage revises, it never deletes. A refused version is
//! reported with its file and reason, changes nothing, and is not read again until it changes;
//! a stray (a file where the layout has none) is reported when it appears, not on every pull
//! while it stays (`--full` reports everything again). What cannot be read now (an IO error) is
//! reported every time and looked at again next pull.

pub mod checkpoint;
mod read;
pub mod walk;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
};

use tokio::runtime::Handle;
use tsunagi_adapter::{
    AdapterContext, AdapterError, AdapterInfo, Progress, PullAdapter, PullReport, Rejection,
};
use tsunagi_core::FacilityId;
use tsunagi_document::layout::{ContentFolder, DataTypeFolder};
use tsunagi_store::{Batch, Operation, Store};

use crate::{
    checkpoint::{
        Folders, ROOT_STRAYS, Seen, decode_strays, digest_scope, encode_strays, folders_scope,
        strays_scope,
    },
    walk::{Findings, FoundVersion},
};

/// Largest main document read, in bytes, unless configured otherwise (`max_document_bytes`).
pub const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 50 * 1024 * 1024;

/// Document bytes per store transaction at most, unless configured otherwise (a batch also
/// ends at `batch_resources`).
pub const DEFAULT_BATCH_BYTES: u64 = 16 * 1024 * 1024;

/// Configuration of one extended-storage source.
#[derive(Debug, Clone)]
pub struct ExtendedConfig {
    /// The hospital's 10-digit code.
    pub facility: FacilityId,
    /// Display name (for reports).
    pub name: Option<String>,
    /// One or more storage roots.
    pub roots: Vec<PathBuf>,
    /// Resources per store transaction.
    pub batch_resources: usize,
    /// Document bytes per store transaction (a large patient's records are written as read).
    pub batch_bytes: u64,
    /// Largest main document read; larger ones are refused.
    pub max_document_bytes: u64,
    /// Ignore checkpoints and read every folder again (writes stay idempotent).
    pub full: bool,
}

/// The adapter.
#[derive(Debug, Clone)]
pub struct ExtendedAdapter {
    config: ExtendedConfig,
}

impl ExtendedAdapter {
    /// Creates the adapter.
    pub fn new(config: ExtendedConfig) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl PullAdapter for ExtendedAdapter {
    fn describe(&self) -> AdapterInfo {
        AdapterInfo {
            kind: "ssmix2-extended",
            facility: self.config.facility.as_str().to_owned(),
        }
    }

    async fn pull(&self, context: &AdapterContext) -> Result<PullReport, AdapterError> {
        tsunagi_adapter::storage::require_folders(&self.config.roots)?;
        let facility = self.config.facility.as_str().to_owned();
        let digests = tsunagi_adapter::storage::patient_digests(
            context.store.as_ref(),
            &digest_scope(&facility),
            self.config.full,
        )
        .await?;
        let puller = Puller {
            config: self.config.clone(),
            store: context.store.clone(),
            progress: context.progress.clone(),
            handle: Handle::current(),
            digests,
        };
        tokio::task::spawn_blocking(move || puller.run())
            .await
            .map_err(|error| AdapterError::Source(format!("the pull stopped: {error}")))?
    }
}

/// One pull, run on a blocking thread (the files are read synchronously).
struct Puller {
    config: ExtendedConfig,
    store: Arc<dyn Store>,
    progress: Arc<dyn Progress>,
    handle: Handle,
    digests: std::collections::HashMap<String, u64>,
}

/// The versions of one document record, with the data-type folder they sit under.
type Record<'v> = (DataTypeFolder, Vec<(ContentFolder, &'v FoundVersion)>);

/// What one patient produced.
#[derive(Default)]
struct PatientOutcome {
    operations: Vec<Operation>,
    resources: usize,
    bytes: u64,
    folders: Folders,
    /// Something could not be read now: the patient's digest is not recorded, so the next pull
    /// looks again.
    retry: bool,
}

impl Puller {
    fn run(self) -> Result<PullReport, AdapterError> {
        let facility = self.config.facility.as_str().to_owned();
        let mut report = PullReport {
            adapter: "ssmix2-extended".to_owned(),
            facility: facility.clone(),
            ..PullReport::default()
        };
        let mut above = Findings::default();
        let patients =
            tsunagi_adapter::storage::patient_folders(&self.config.roots, walk::LAYOUT, &mut above)
                .map_err(|error| {
                    AdapterError::Source(format!("cannot walk the storage: {error}"))
                })?;
        // A folder that cannot be listed now is reported every time; strays once.
        report.rejected.append(&mut above.errors);
        let mut batch = Batch::default();
        self.root_strays(above.strays, &mut batch, &mut report);
        let (mut pending_resources, mut pending_bytes) = (0usize, 0u64);
        for (patient_id, folders) in patients {
            let mut found = Findings::default();
            let versions = walk::patient_versions(&folders, &mut found);
            let digest = walk::patient_digest(&versions, &found.strays);
            let seen = versions.len() as u64;
            report.files_seen += seen;
            if found.errors.is_empty() && self.digests.get(&patient_id) == Some(&digest) {
                report.files_skipped_unchanged += seen;
                self.progress.advance(seen, 0);
                continue;
            }
            report.rejected.append(&mut found.errors);
            let stored = if self.config.full || !self.digests.contains_key(&patient_id) {
                Folders::default()
            } else {
                match self.handle.block_on(
                    self.store
                        .checkpoint(&folders_scope(&facility), &patient_id),
                ) {
                    Ok(Some(bytes)) => Folders::decode(&bytes),
                    Ok(None) => Folders::default(),
                    Err(error) => {
                        report.rejected.push(Rejection {
                            source: patient_id.clone(),
                            reason: format!(
                                "cannot read the checkpoint, patient left for the next run: {error}"
                            ),
                        });
                        continue;
                    }
                }
            };
            let mut outcome = self.patient(&patient_id, &versions, &stored, &mut report)?;
            // A stray is reported when it appears, not again while it stays.
            for stray in found.strays {
                if !stored.1.contains(&stray.source) {
                    outcome.folders.1.insert(stray.source.clone());
                    report.rejected.push(stray);
                } else {
                    outcome.folders.1.insert(stray.source);
                }
            }
            pending_resources += outcome.resources;
            pending_bytes += outcome.bytes;
            batch.operations.extend(outcome.operations);
            if !outcome.retry {
                batch.operations.push(Operation::PutCheckpoint {
                    scope: digest_scope(&facility),
                    key: patient_id.clone(),
                    value: digest.to_le_bytes().to_vec(),
                });
            }
            batch.operations.push(Operation::PutCheckpoint {
                scope: folders_scope(&facility),
                key: patient_id,
                value: outcome.folders.encode(),
            });
            self.progress.advance(seen, outcome.resources as u64);
            if pending_resources >= self.config.batch_resources.max(1)
                || pending_bytes >= self.config.batch_bytes
            {
                self.apply(std::mem::take(&mut batch), &mut report)?;
                (pending_resources, pending_bytes) = (0, 0);
            }
        }
        if !batch.operations.is_empty() {
            self.apply(batch, &mut report)?;
        }
        report.rejected.sort_by(|a, b| a.source.cmp(&b.source));
        Ok(report)
    }

    /// Reports the strays above the patient folders that were not there last pull, and notes
    /// the current ones with the first batch (a failed read of the note reports them all).
    fn root_strays(&self, strays: Vec<Rejection>, batch: &mut Batch, report: &mut PullReport) {
        let scope = strays_scope(self.config.facility.as_str());
        let before = match self
            .handle
            .block_on(self.store.checkpoint(&scope, ROOT_STRAYS))
        {
            Ok(Some(bytes)) if !self.config.full => decode_strays(&bytes),
            _ => BTreeSet::new(),
        };
        let now: BTreeSet<String> = strays.iter().map(|s| s.source.clone()).collect();
        report.rejected.extend(
            strays
                .into_iter()
                .filter(|stray| !before.contains(&stray.source)),
        );
        if now != before {
            batch.operations.push(Operation::PutCheckpoint {
                scope,
                key: ROOT_STRAYS.to_owned(),
                value: encode_strays(&now),
            });
        }
    }

    fn apply(&self, batch: Batch, report: &mut PullReport) -> Result<(), AdapterError> {
        let stats = self.handle.block_on(self.store.apply(batch))?;
        report.add_stats(&stats);
        Ok(())
    }

    /// Reads what changed of one patient's documents.
    fn patient(
        &self,
        patient_id: &str,
        versions: &[FoundVersion],
        stored: &Folders,
        report: &mut PullReport,
    ) -> Result<PatientOutcome, AdapterError> {
        let mut outcome = PatientOutcome::default();
        let key_of = |version: &FoundVersion| {
            (
                version.type_folder.clone(),
                version.date_folder.clone(),
                version.name.clone(),
            )
        };
        let refuse = |outcome: &mut PatientOutcome,
                      report: &mut PullReport,
                      version: &FoundVersion,
                      reason: String| {
            let key = key_of(version);
            let digest = version.digest();
            let before = stored.0.get(&key);
            // Reported once: not again while it stays as it is.
            if before
                != Some(&Seen {
                    digest,
                    refused: true,
                })
            {
                report.rejected.push(Rejection {
                    source: version.path.display().to_string(),
                    reason,
                });
            }
            outcome.folders.0.insert(
                key,
                Seen {
                    digest,
                    refused: true,
                },
            );
        };
        // Versions grouped by record: (data-type folder, record key) → versions.
        let mut records: BTreeMap<(String, String), Record<'_>> = BTreeMap::new();
        for version in versions {
            let parsed = DataTypeFolder::parse(&version.type_folder).and_then(|data_type| {
                let content = ContentFolder::parse(
                    &version.name,
                    patient_id,
                    &version.date_folder,
                    &data_type,
                )?;
                Ok((data_type, content))
            });
            match parsed {
                Ok((data_type, content)) => {
                    let key = content.record_key(&data_type);
                    records
                        .entry((version.type_folder.clone(), key))
                        .or_insert_with(|| (data_type, Vec::new()))
                        .1
                        .push((content, version));
                }
                Err(error) => refuse(&mut outcome, report, version, error.to_string()),
            }
        }
        for ((_, record_key), (data_type, mut record)) in records {
            record.sort_by(|a, b| {
                a.0.occurred
                    .cmp(&b.0.occurred)
                    .then(a.0.folder.cmp(&b.0.folder))
            });
            let seen: Vec<Option<&Seen>> = record
                .iter()
                .map(|(_, version)| stored.0.get(&key_of(version)))
                .collect();
            let changed = record
                .iter()
                .zip(&seen)
                .any(|((_, version), seen)| seen.map(|s| s.digest) != Some(version.digest()));
            if !changed {
                for ((_, version), seen) in record.iter().zip(seen) {
                    if let Some(seen) = seen {
                        outcome.folders.0.insert(key_of(version), *seen);
                    }
                }
                report.files_skipped_unchanged += record.len() as u64;
                continue;
            }
            // Refused before and unchanged since: neither read nor reported again.
            let skip: Vec<bool> = record
                .iter()
                .zip(&seen)
                .map(|((_, version), seen)| {
                    *seen
                        == Some(&Seen {
                            digest: version.digest(),
                            refused: true,
                        })
                })
                .collect();
            let stored_before: Vec<bool> = seen
                .iter()
                .map(|seen| seen.is_some_and(|seen| !seen.refused))
                .collect();
            let read = read::read_record(
                &self.config.facility,
                &data_type,
                &record_key,
                &record,
                &skip,
                &stored_before,
                self.config.max_document_bytes,
            );
            report.files_read += read.read;
            for (source, warning) in &read.warnings {
                report.warn(source, warning);
            }
            let refused: BTreeMap<usize, &Rejection> = read
                .refused
                .iter()
                .map(|(index, rejection)| (*index, rejection))
                .collect();
            outcome.retry |= read.retry;
            for (index, (_, version)) in record.iter().enumerate() {
                match (refused.get(&index), skip[index]) {
                    // Not read now (IO): reported, not remembered, read again next time.
                    (Some(rejection), _) if read.unreadable.contains(&index) => {
                        report.rejected.push((*rejection).clone());
                    }
                    (Some(rejection), _) => {
                        refuse(&mut outcome, report, version, rejection.reason.clone())
                    }
                    (None, true) => {
                        outcome.folders.0.insert(
                            key_of(version),
                            Seen {
                                digest: version.digest(),
                                refused: true,
                            },
                        );
                    }
                    (None, false) => {
                        outcome.folders.0.insert(
                            key_of(version),
                            Seen {
                                digest: version.digest(),
                                refused: false,
                            },
                        );
                    }
                }
            }
            outcome.resources += read.resources;
            outcome.bytes += read.bytes;
            outcome.operations.extend(read.operations);
            // A large chart is written as it is read: memory stays bounded by a batch, not by a
            // patient. Its checkpoint comes with its last records; until then a re-run reads it
            // again, and writing the same records again changes nothing.
            if outcome.bytes >= self.config.batch_bytes {
                self.apply(
                    Batch {
                        operations: std::mem::take(&mut outcome.operations),
                    },
                    report,
                )?;
                outcome.bytes = 0;
                outcome.resources = 0;
            }
        }
        Ok(outcome)
    }
}
