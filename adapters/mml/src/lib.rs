//! The MML 4.0 adapter: a hospital EHR's export folder of MML files (Homma's: what SS-MIX2
//! standardized storage does not carry — progress courses, surgeries, referrals), pulled into
//! `DocumentReference`, `Procedure` and `Binary` in the same chart as the SS-MIX2 data
//! (`tsunagi_mapping::mml`).
//!
//! One pull walks every `*.xml` file under the roots (regular files only; links are never
//! followed), skips a file whose size and modification time are as last seen (checkpoint key
//! `<root number>:<path below it>`), and reads the others. Each module of a file is one source
//! record, `mml:<facility>:<patient>:<docId uid>`, and the file's bytes another,
//! `mml:<facility>:<patient>:file:<Binary id>` (by content): so a module re-exported in another
//! file, or a file renamed or rotated, never deletes what another file brought. A file's
//! records, its bytes and its checkpoint are written in one transaction. A refused file (not MML, hostile XML, over
//! the size limit, a referral about another patient) is reported with its path and reason,
//! changes nothing, and is not read again until it changes; one that cannot be read now (IO) is
//! read again on the next pull. A file that disappears from the folder leaves its resources: an
//! export folder is rotated, the record is not withdrawn by that.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tsunagi_adapter::{
    AdapterContext, AdapterError, AdapterInfo, Progress, PullAdapter, PullReport, Rejection,
    storage::{Refusal, modified_nanos, read_regular, sorted_entries},
};
use tsunagi_core::{FacilityId, hash::fnv64, ids::logical_id};
use tsunagi_document::mml::MmlDocument;
use tsunagi_mapping::{SourceRecord, mml::MmlSource};
use tsunagi_store::{Batch, Operation, ResourceWrite, Store};

/// Largest MML file read, in bytes, unless configured otherwise (`max_file_bytes`).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 50 * 1024 * 1024;

/// File bytes per store transaction at most (a batch also ends at `batch_resources`).
const BATCH_BYTES: u64 = 16 * 1024 * 1024;

/// Configuration of one MML export source.
#[derive(Debug, Clone)]
pub struct MmlConfig {
    /// The hospital's 10-digit code.
    pub facility: FacilityId,
    /// Display name (for reports).
    pub name: Option<String>,
    /// One or more export folders.
    pub roots: Vec<PathBuf>,
    /// Resources per store transaction.
    pub batch_resources: usize,
    /// Largest file read; larger ones are refused.
    pub max_file_bytes: u64,
    /// Ignore checkpoints and read every file again (writes stay idempotent).
    pub full: bool,
}

/// The adapter.
#[derive(Debug, Clone)]
pub struct MmlAdapter {
    config: MmlConfig,
}

impl MmlAdapter {
    /// Creates the adapter.
    pub fn new(config: MmlConfig) -> Self {
        Self { config }
    }
}

/// The key of a revised module in [`revised_scope`]: its patient and uid.
fn revision_key(patient: &str, uid: &str) -> String {
    format!("{patient}\u{1f}{uid}")
}

/// Checkpoint scope of the revised modules: key = patient and uid (`revision_key`) of an
/// edition a later one revises (`parentId relation="oldEdition"`), value = the later one's uid. Kept so that the older
/// edition stays revised whichever file is read first, now or in a `--full` pull.
pub fn revised_scope(facility: &str) -> String {
    format!("mml:{facility}:revised")
}

/// Checkpoint scope of the files as last seen: key = path below the root, value = 8 bytes of
/// digest (size and modification time) and one byte, 1 when the file was refused.
pub fn files_scope(facility: &str) -> String {
    format!("mml:{facility}:files")
}

#[async_trait::async_trait]
impl PullAdapter for MmlAdapter {
    fn describe(&self) -> AdapterInfo {
        AdapterInfo {
            kind: "mml",
            facility: self.config.facility.as_str().to_owned(),
        }
    }

    async fn pull(&self, context: &AdapterContext) -> Result<PullReport, AdapterError> {
        tsunagi_adapter::storage::require_folders(&self.config.roots)?;
        let facility = self.config.facility.as_str().to_owned();
        let seen: HashMap<String, u64> = if self.config.full {
            HashMap::new()
        } else {
            context
                .store
                .checkpoints(&files_scope(&facility))
                .await?
                .into_iter()
                .filter_map(|(key, value)| {
                    Some((key, u64::from_le_bytes(value.get(..8)?.try_into().ok()?)))
                })
                .collect()
        };
        let revised: HashMap<String, String> = context
            .store
            .checkpoints(&revised_scope(&facility))
            .await?
            .into_iter()
            .map(|(older, newer)| (older, String::from_utf8_lossy(&newer).into_owned()))
            .collect();
        let puller = Puller {
            config: self.config.clone(),
            store: context.store.clone(),
            progress: context.progress.clone(),
            handle: Handle::current(),
            seen,
            revised,
        };
        tokio::task::spawn_blocking(move || puller.run())
            .await
            .map_err(|error| AdapterError::Source(format!("the pull stopped: {error}")))?
    }
}

struct Puller {
    config: MmlConfig,
    store: Arc<dyn Store>,
    progress: Arc<dyn Progress>,
    handle: Handle,
    seen: HashMap<String, u64>,
    /// Older edition uid → the uid of the edition revising it.
    revised: HashMap<String, String>,
}

/// Every `*.xml` regular file below `root`, and every link (never followed: refused, and
/// checkpointed like a refused file), with its path below it and whether it is a link, in name
/// order.
fn xml_files(root: &Path, rejected: &mut Vec<Rejection>) -> Vec<(PathBuf, String, bool)> {
    let mut files = Vec::new();
    let mut stack = vec![(root.to_owned(), String::new())];
    while let Some((folder, prefix)) = stack.pop() {
        let entries = match sorted_entries(&folder) {
            Ok(entries) => entries,
            Err(error) => {
                rejected.push(Rejection {
                    source: folder.display().to_string(),
                    reason: format!("cannot list folder: {error}"),
                });
                continue;
            }
        };
        let mut folders = Vec::new();
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => folders.push((entry.path(), relative)),
                Ok(kind) if kind.is_file() && name.to_ascii_lowercase().ends_with(".xml") => {
                    files.push((entry.path(), relative, false));
                }
                Ok(kind) if kind.is_symlink() => files.push((entry.path(), relative, true)),
                _ => {}
            }
        }
        // Depth first, in name order.
        stack.extend(folders.into_iter().rev());
    }
    files
}

/// What one file produced.
enum Read {
    /// Its operations, resource count and bytes, and the editions of other files it revises
    /// (patient id, older uid), newly learnt.
    Accepted(Vec<Operation>, usize, u64, Vec<(String, String)>),
    /// Refused for its content: not read again until it changes.
    Refused(String),
    /// Not readable now: read again next time.
    Retry(String),
}

impl Puller {
    fn run(mut self) -> Result<PullReport, AdapterError> {
        let facility = self.config.facility.as_str().to_owned();
        let mut report = PullReport {
            adapter: "mml".into(),
            facility: facility.clone(),
            ..PullReport::default()
        };
        let mut files = Vec::new();
        for (number, root) in self.config.roots.iter().enumerate() {
            files.extend(xml_files(root, &mut report.rejected).into_iter().map(
                |(path, relative, link)| {
                    let key = format!("{number}:{relative}");
                    (path, relative, key, link)
                },
            ));
        }
        let mut pending: Vec<Operation> = Vec::new();
        let (mut pending_resources, mut pending_bytes) = (0usize, 0u64);
        for (path, relative, key, link) in files {
            report.files_seen += 1;
            let Ok(metadata) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let mut stamp = Vec::with_capacity(40);
            stamp.extend_from_slice(&metadata.len().to_le_bytes());
            stamp.extend_from_slice(&modified_nanos(&metadata).to_le_bytes());
            {
                use std::os::unix::fs::MetadataExt;
                stamp.extend_from_slice(&metadata.ino().to_le_bytes());
            }
            let digest = fnv64(&stamp);
            if self.seen.get(&key) == Some(&digest) {
                report.files_skipped_unchanged += 1;
                continue;
            }
            let checkpoint = |refused: bool| {
                let mut value = digest.to_le_bytes().to_vec();
                value.push(u8::from(refused));
                Operation::PutCheckpoint {
                    scope: files_scope(&facility),
                    key: key.clone(),
                    value,
                }
            };
            if link {
                // Reported once, not again until the link changes.
                report.rejected.push(Rejection {
                    source: path.display().to_string(),
                    reason: "a link: never followed (export real files)".into(),
                });
                pending.push(checkpoint(true));
                continue;
            }
            report.files_read += 1;
            match self.read(&path, &relative, &mut report) {
                Read::Accepted(operations, resources, bytes, revises) => {
                    if !revises.is_empty() && !pending.is_empty() {
                        // What the older editions are now is read from the store.
                        self.commit(std::mem::take(&mut pending), &mut report)?;
                        (pending_resources, pending_bytes) = (0, 0);
                    }
                    pending.extend(operations);
                    for (patient, older) in revises {
                        pending.extend(self.supersede(&facility, &patient, &older)?);
                    }
                    pending.push(checkpoint(false));
                    pending_resources += resources;
                    pending_bytes += bytes;
                }
                Read::Refused(reason) => {
                    report.rejected.push(Rejection {
                        source: path.display().to_string(),
                        reason,
                    });
                    pending.push(checkpoint(true));
                }
                Read::Retry(reason) => report.rejected.push(Rejection {
                    source: path.display().to_string(),
                    reason: format!("{reason} (read again on the next pull)"),
                }),
            }
            self.progress
                .advance(report.files_seen, pending_resources as u64);
            if pending_resources >= self.config.batch_resources.max(1)
                || pending_bytes >= BATCH_BYTES
            {
                self.commit(std::mem::take(&mut pending), &mut report)?;
                (pending_resources, pending_bytes) = (0, 0);
            }
        }
        if !pending.is_empty() {
            self.commit(pending, &mut report)?;
        }
        Ok(report)
    }

    fn commit(
        &self,
        operations: Vec<Operation>,
        report: &mut PullReport,
    ) -> Result<(), AdapterError> {
        let stats = self
            .handle
            .block_on(self.store.apply(Batch { operations }))?;
        report.add_stats(&stats);
        Ok(())
    }

    /// What makes an older edition's resources, written from another file, revised: its
    /// DocumentReference rewritten `superseded`, or its surgery's Procedures deleted (history
    /// kept).
    fn supersede(
        &self,
        facility: &str,
        patient: &str,
        older: &str,
    ) -> Result<Vec<Operation>, AdapterError> {
        let source_key = format!("mml:{facility}:{patient}:{older}");
        let id = tsunagi_mapping::mml::document_id(facility, patient, older);
        let stored = self.handle.block_on(self.store.read(
            &tsunagi_store::Access::Unrestricted,
            "DocumentReference",
            &id,
        ))?;
        let Some(stored) = stored else {
            return Ok(vec![Operation::DeleteSource { source_key }]);
        };
        let Some(mut json) = stored.to_json()? else {
            return Ok(Vec::new());
        };
        if json["status"] == "superseded" {
            return Ok(Vec::new());
        }
        json["status"] = json!("superseded");
        if let Some(meta) = json.get_mut("meta").and_then(|meta| meta.as_object_mut()) {
            // The store's own, written again by it.
            meta.remove("versionId");
            meta.remove("lastUpdated");
        }
        let write = ResourceWrite::from_json("DocumentReference", &id, &json)
            .map_err(|error| AdapterError::Source(error.to_string()))?;
        Ok(vec![Operation::ReplaceSource {
            source_key,
            facility: facility.to_owned(),
            resources: vec![write],
        }])
    }

    fn read(&mut self, path: &Path, relative: &str, report: &mut PullReport) -> Read {
        let max = self.config.max_file_bytes;
        let bytes = match read_regular(path, max) {
            Ok(Some(bytes)) if bytes.is_empty() => {
                return Read::Refused("the file is empty (0 bytes)".into());
            }
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Read::Refused(format!("over the limit of {max} bytes (max_file_bytes)"));
            }
            Err(Refusal::Content(why)) => return Read::Refused(why),
            Err(Refusal::Io(why)) => return Read::Retry(why),
        };
        let document = match MmlDocument::parse(&bytes) {
            Ok(document) => document,
            Err(error) => return Read::Refused(error.to_string()),
        };
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let facility = self.config.facility.as_str();
        // The editions this file revises: learnt before mapping, so that an older edition in
        // the same file is mapped as revised too.
        // Editions are the patient's own: the record is keyed by patient and uid.
        let pid = document.patient_id.as_str();
        let key = |uid: &str| revision_key(pid, uid);
        let own: Vec<&str> = document.modules.iter().map(|m| m.uid.as_str()).collect();
        let mut revises = Vec::new();
        let mut learnt = Vec::new();
        // Remembered once the file is accepted: a refused file revises nothing.
        let mut newly: Vec<(String, String)> = Vec::new();
        for module in &document.modules {
            let Some(older) = &module.replaces else {
                continue;
            };
            let known =
                |k: &str| self.revised.contains_key(k) || newly.iter().any(|(seen, _)| seen == k);
            // A module revising itself, or one that its own older edition claims to revise
            // (a cycle), revises nothing: reported, not followed.
            let cycle = older == &module.uid
                || self.revised.get(&key(&module.uid)).map(String::as_str) == Some(older.as_str())
                || newly
                    .iter()
                    .any(|(seen, newer)| seen == &key(&module.uid) && newer == older);
            if cycle {
                report.warn(
                    &path.display().to_string(),
                    &format!(
                        "module {} names {older} as its older edition, which it is itself an edition of: ignored",
                        module.uid
                    ),
                );
                continue;
            }
            if known(&key(older)) {
                continue;
            }
            newly.push((key(older), module.uid.clone()));
            learnt.push(Operation::PutCheckpoint {
                scope: revised_scope(facility),
                key: key(older),
                value: module.uid.as_bytes().to_vec(),
            });
            if !own.contains(&older.as_str()) {
                revises.push((document.patient_id.clone(), older.clone()));
            }
        }
        let revised = &self.revised;
        let is_revised = |uid: &str| {
            let uid = key(uid);
            revised.contains_key(&uid) || newly.iter().any(|(older, _)| *older == uid)
        };
        let mapped = match tsunagi_mapping::map(SourceRecord::Mml(MmlSource {
            facility: &self.config.facility,
            file: relative,
            size: bytes.len() as u64,
            sha256: &sha256,
            document: &document,
            revised: &is_revised,
        })) {
            Ok(mapped) => mapped,
            Err(error) => return Read::Refused(error.to_string()),
        };
        // One module twice in a file (its uid repeated) would be two writes of one resource.
        let mut ids: Vec<&str> = mapped.resources.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(twice) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Read::Refused(format!(
                "{} appears twice: a module's docId/uid is repeated in the file",
                twice[0]
            ));
        }
        for warning in &mapped.warnings {
            report.warn(&path.display().to_string(), warning);
        }
        if mapped.resources.is_empty() {
            // Only modules this adapter does not read (or revised surgeries): nothing to write
            // but what it revises and the checkpoints.
            self.revised.extend(newly);
            return Read::Accepted(learnt, 0, 0, revises);
        }
        let patient = logical_id(&[facility, &document.patient_id]);
        let first_document = mapped
            .resources
            .iter()
            .find(|resource| resource.resource_type == "DocumentReference")
            .map(|resource| resource.id.clone());
        // The resources of each module, by its uid (the identifier every one of them carries).
        let system = tsunagi_mapping::mml::module_system(facility);
        let mut modules: Vec<(String, Vec<ResourceWrite>)> = Vec::new();
        let mut count = 0;
        for resource in mapped.resources {
            let uid = resource.json["identifier"]
                .as_array()
                .and_then(|ids| ids.iter().find(|id| id["system"] == system.as_str()))
                .and_then(|id| id["value"].as_str())
                .map(|value| value.split('#').next().unwrap_or(value).to_owned())
                .unwrap_or_default();
            let write = match ResourceWrite::from_json(
                resource.resource_type,
                &resource.id,
                &resource.json,
            ) {
                Ok(write) => write,
                Err(error) => return Read::Refused(error.to_string()),
            };
            count += 1;
            match modules.iter_mut().find(|(known, _)| *known == uid) {
                Some((_, list)) => list.push(write),
                None => modules.push((uid, vec![write])),
            }
        }
        // The file's bytes, in the patient's compartment (its tag says which).
        let id = tsunagi_mapping::mml::binary_id(facility, &document.patient_id, &sha256);
        let binary = tsunagi_mapping::document::binary_resource(
            &id,
            &patient,
            &sha256,
            "application/xml",
            first_document.as_deref(),
        );
        let binary = match ResourceWrite::from_json("Binary", &id, &binary) {
            Ok(write) => write,
            Err(error) => return Read::Refused(error.to_string()),
        };
        let size = bytes.len() as u64;
        let pid = &document.patient_id;
        let mut operations = vec![
            Operation::PutBlob { sha256, bytes },
            Operation::ReplaceSource {
                source_key: format!("mml:{facility}:{pid}:file:{id}"),
                facility: facility.to_owned(),
                resources: vec![binary],
            },
        ];
        for (uid, resources) in modules {
            operations.push(Operation::ReplaceSource {
                source_key: format!("mml:{facility}:{pid}:{uid}"),
                facility: facility.to_owned(),
                resources,
            });
        }
        operations.extend(learnt);
        self.revised.extend(newly);
        Read::Accepted(operations, count + 1, size, revises)
    }
}
