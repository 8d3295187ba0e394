//! SS-MIX2 storage trees, standardized and extended alike: `<root>/<id[0:3]>/<id[3:6]>/<id>/…`.
//!
//! A region's storage may be split over several roots (by period, by data type…), so the same
//! patient folder can appear under more than one root: [`patient_folders`] merges them by
//! patient id. Only the list of patient folders is held in memory (bounded by patients, not
//! files); each patient's files are listed when that patient is processed.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use tsunagi_store::{Store, StoreError};

use crate::Rejection;

/// Every patient's digest of a storage (a checkpoint scope of 8-byte values), by patient id:
/// none when the pull reads everything again (`full`).
pub async fn patient_digests(
    store: &dyn Store,
    scope: &str,
    full: bool,
) -> Result<std::collections::HashMap<String, u64>, StoreError> {
    if full {
        return Ok(std::collections::HashMap::new());
    }
    Ok(store
        .checkpoints(scope)
        .await?
        .into_iter()
        .filter_map(|(patient, value)| {
            Some((
                patient,
                u64::from_le_bytes(value.as_slice().try_into().ok()?),
            ))
        })
        .collect())
}

/// Every root a folder, or the error naming the first that is not (a pull of a storage that
/// is not mounted stops before reading anything).
pub fn require_folders(roots: &[std::path::PathBuf]) -> Result<(), crate::AdapterError> {
    match roots.iter().find(|root| !root.is_dir()) {
        Some(root) => Err(crate::AdapterError::Source(format!(
            "{} is not a folder",
            root.display()
        ))),
        None => Ok(()),
    }
}

/// The entries of `dir`, by name.
pub fn sorted_entries(dir: &Path) -> std::io::Result<Vec<fs::DirEntry>> {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    Ok(entries)
}

/// The entries of folder `dir`, or a rejection naming it.
pub fn entries_or_reject(dir: &Path, rejected: &mut Vec<Rejection>) -> Vec<fs::DirEntry> {
    match sorted_entries(dir) {
        Ok(entries) => entries,
        Err(error) => {
            rejected.push(Rejection {
                source: dir.display().to_string(),
                reason: format!("cannot list folder: {error}"),
            });
            Vec::new()
        }
    }
}

/// Whether an entry is a folder (a symlink to one is not followed).
pub fn is_dir(entry: &fs::DirEntry) -> bool {
    entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false)
}

/// A file's modification time in nanoseconds since the epoch (0 when unknown).
pub fn modified_nanos(metadata: &fs::Metadata) -> i128 {
    metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map(|elapsed| elapsed.as_nanos() as i128)
        .unwrap_or(0)
}

/// A file where the layout has none: `layout` says what the storage holds.
pub fn stray(path: &Path, what: &str, layout: &str) -> Rejection {
    Rejection {
        source: path.display().to_string(),
        reason: format!("{what}; {layout}"),
    }
}

/// What a walk found beside the folders it looked for.
#[derive(Debug, Default)]
pub struct Findings {
    /// Files and folders where the layout has none, and files that are not regular: the same
    /// on every walk until someone moves them.
    pub strays: Vec<Rejection>,
    /// What could not be listed or stat'ed now: worth reporting every time, and looking at
    /// again on the next pull.
    pub errors: Vec<Rejection>,
}

impl Findings {
    /// Both lists, strays first (for a caller that reports everything every time).
    pub fn all(self) -> Vec<Rejection> {
        let mut all = self.strays;
        all.extend(self.errors);
        all
    }

    /// Whether `entry` is a folder. A file is a stray (`what` it is, `layout` where files
    /// belong); an entry whose type cannot be told is an error, not a stray.
    pub fn folder(&mut self, entry: &fs::DirEntry, what: &str, layout: &str) -> bool {
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => true,
            Ok(_) => {
                self.strays.push(stray(&entry.path(), what, layout));
                false
            }
            Err(error) => {
                self.errors.push(Rejection {
                    source: entry.path().display().to_string(),
                    reason: format!("cannot stat: {error}"),
                });
                false
            }
        }
    }
}

/// Every patient folder under the roots, merged by patient id, in id order. Files found above
/// the patient folders are strays (`layout` says where files belong); folders that cannot be
/// listed are errors.
pub fn patient_folders(
    roots: &[PathBuf],
    layout: &str,
    found: &mut Findings,
) -> std::io::Result<BTreeMap<String, Vec<PathBuf>>> {
    let mut patients: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for root in roots {
        for first in sorted_entries(root)? {
            if !found.folder(&first, "a file directly under the storage root", layout) {
                continue;
            }
            for second in entries_or_reject(&first.path(), &mut found.errors) {
                if !found.folder(&second, "a file above the patient folders", layout) {
                    continue;
                }
                for patient in entries_or_reject(&second.path(), &mut found.errors) {
                    if !found.folder(&patient, "a file above the patient folders", layout) {
                        continue;
                    }
                    let id = patient.file_name().to_string_lossy().into_owned();
                    patients.entry(id).or_default().push(patient.path());
                }
            }
        }
    }
    Ok(patients)
}

/// Why a file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its content is not acceptable: refused until it changes.
    Content(String),
    /// It could not be read now (IO): read again on the next pull.
    Io(String),
}

/// Reads a regular file (never a link, a pipe or a device) of at most `max` bytes.
pub fn read_regular(path: &std::path::Path, max: u64) -> Result<Option<Vec<u8>>, Refusal> {
    use std::{io::Read, os::unix::fs::MetadataExt};
    let io = |error: std::io::Error| Refusal::Io(error.to_string());
    let before = std::fs::symlink_metadata(path).map_err(io)?;
    if !before.file_type().is_file() {
        return Err(Refusal::Content(
            "not a regular file (a link, a pipe or a device is never read)".to_owned(),
        ));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let opened = file.metadata().map_err(io)?;
    // What was opened is what was looked at: not a link swapped in meanwhile.
    if !opened.is_file() || opened.dev() != before.dev() || opened.ino() != before.ino() {
        return Err(Refusal::Io(
            "the file changed while it was opened".to_owned(),
        ));
    }
    let mut bytes = Vec::with_capacity(opened.len().min(max) as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}
