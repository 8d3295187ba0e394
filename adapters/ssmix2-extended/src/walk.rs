//! Walking extended storage: `<root>/<id[0:3]>/<id[3:6]>/<id>/<診療日>/<データ種別>/<コンテンツフォルダ>/<files>`.
//! Each content folder is one version of one document: its main file and what sits beside it.

use std::path::{Path, PathBuf};

pub use tsunagi_adapter::storage::Findings;
use tsunagi_adapter::{
    Rejection,
    storage::{self, entries_or_reject, modified_nanos},
};
use tsunagi_core::hash::Fnv64;

/// Where extended storage keeps its documents.
pub const LAYOUT: &str =
    "extended storage holds <root>/<3>/<3>/<patient>/<date>/<data type>/<content folder>/<files>";

/// A file of a content folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    /// Its name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified: i128,
}

/// One content folder: one version of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundVersion {
    /// The content folder.
    pub path: PathBuf,
    /// Its name.
    pub name: String,
    /// The care-date folder it sits in.
    pub date_folder: String,
    /// The data-type folder it sits in.
    pub type_folder: String,
    /// Its files, by name.
    pub files: Vec<FoundFile>,
}

impl FoundVersion {
    /// A digest of the folder's files (names, sizes, times): a changed one is read again.
    pub fn digest(&self) -> u64 {
        let mut hasher = Fnv64::default();
        hasher.write_field(self.name.as_bytes());
        for file in &self.files {
            hasher.write_field(file.name.as_bytes());
            hasher.write_field(&file.size.to_le_bytes());
            hasher.write_field(&file.modified.to_le_bytes());
        }
        hasher.finish()
    }

    /// The main document: `main_document.*` (the NHO layout's name), else the only file.
    pub fn main_file(&self) -> Result<&FoundFile, String> {
        let mains: Vec<&FoundFile> = self
            .files
            .iter()
            .filter(|file| {
                file.name
                    .split_once('.')
                    .map_or(file.name.as_str(), |(stem, _)| stem)
                    .eq_ignore_ascii_case("main_document")
            })
            .collect();
        match (mains.as_slice(), self.files.as_slice()) {
            ([main], _) => Ok(main),
            ([], [only]) => Ok(only),
            ([], []) => Err("the content folder is empty".to_owned()),
            ([], files) => Err(format!(
                "no main_document.* among its {} files, and more than one file",
                files.len()
            )),
            (mains, _) => Err(format!("{} files named main_document.*", mains.len())),
        }
    }
}

fn stray(path: &Path, what: &str) -> Rejection {
    storage::stray(path, what, LAYOUT)
}

/// A patient's content folders (all its patient folders), by data type, date and name.
pub fn patient_versions(folders: &[PathBuf], found: &mut Findings) -> Vec<FoundVersion> {
    let mut versions = Vec::new();
    for folder in folders {
        for date in entries_or_reject(folder, &mut found.errors) {
            if !found.folder(&date, "a file directly in a patient folder", LAYOUT) {
                continue;
            }
            for data_type in entries_or_reject(&date.path(), &mut found.errors) {
                if !found.folder(&data_type, "a file directly in a care-date folder", LAYOUT) {
                    continue;
                }
                for content in entries_or_reject(&data_type.path(), &mut found.errors) {
                    if !found.folder(&content, "a file directly in a data-type folder", LAYOUT) {
                        continue;
                    }
                    let mut files = Vec::new();
                    for file in entries_or_reject(&content.path(), &mut found.errors) {
                        let path = file.path();
                        match file.metadata() {
                            Ok(metadata) if metadata.is_dir() => {
                                found
                                    .strays
                                    .push(stray(&path, "a folder inside a content folder"));
                            }
                            // A link, a pipe or a device is never read: it could point anywhere.
                            Ok(metadata) if !metadata.is_file() => found.strays.push(Rejection {
                                source: path.display().to_string(),
                                reason:
                                    "not a regular file (a link, a pipe or a device is never read)"
                                        .to_owned(),
                            }),
                            Ok(metadata) => files.push(FoundFile {
                                name: file.file_name().to_string_lossy().into_owned(),
                                size: metadata.len(),
                                modified: modified_nanos(&metadata),
                            }),
                            Err(error) => found.errors.push(Rejection {
                                source: path.display().to_string(),
                                reason: format!("cannot stat file: {error}"),
                            }),
                        }
                    }
                    versions.push(FoundVersion {
                        path: content.path(),
                        name: content.file_name().to_string_lossy().into_owned(),
                        date_folder: date.file_name().to_string_lossy().into_owned(),
                        type_folder: data_type.file_name().to_string_lossy().into_owned(),
                        files,
                    });
                }
            }
        }
    }
    versions.sort_by(|a, b| {
        (&a.type_folder, &a.date_folder, &a.name, &a.path).cmp(&(
            &b.type_folder,
            &b.date_folder,
            &b.name,
            &b.path,
        ))
    });
    versions
}

/// A digest of all of a patient's versions and strays: unchanged, the patient is skipped
/// unread (and its strays, reported when they appeared, are not reported again).
pub fn patient_digest(versions: &[FoundVersion], strays: &[Rejection]) -> u64 {
    let mut hasher = Fnv64::default();
    for version in versions {
        hasher.write_field(version.type_folder.as_bytes());
        hasher.write_field(version.date_folder.as_bytes());
        hasher.write_field(&version.digest().to_le_bytes());
    }
    if !strays.is_empty() {
        // Absent strays leave the digest of earlier builds as it was.
        hasher.write_field(b"strays");
        for stray in strays {
            hasher.write_field(stray.source.as_bytes());
        }
    }
    hasher.finish()
}
