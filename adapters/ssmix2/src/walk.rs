//! Walking standardized storage: `<root>/<pid[0:3]>/<pid[3:6]>/<pid>/<診療日>/<データ種別>/<file>`
//! (the patient folders as every SS-MIX2 storage has them: `tsunagi_adapter::storage`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use tsunagi_adapter::{
    Rejection,
    storage::{self, entries_or_reject, is_dir, modified_nanos},
};

/// One file found under a patient folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    /// Full path.
    pub path: PathBuf,
    /// File name (lossy if not UTF-8).
    pub name: String,
    /// Name of the care-date folder it sits in.
    pub date_folder: String,
    /// Name of the data-type folder it sits in.
    pub type_folder: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified: i128,
}

/// Where SS-MIX2 standardized storage keeps its files.
pub const LAYOUT: &str = "SS-MIX2 files live in <root>/<3>/<3>/<patient>/<date>/<data type>/";

fn stray(path: &Path, what: &str) -> Rejection {
    storage::stray(path, what, LAYOUT)
}

/// Every patient folder under the roots, merged by patient id, in id order. Files found at the
/// wrong depth are reported as rejections.
pub fn patient_folders(
    roots: &[PathBuf],
    rejected: &mut Vec<Rejection>,
) -> std::io::Result<BTreeMap<String, Vec<PathBuf>>> {
    let mut found = storage::Findings::default();
    let patients = storage::patient_folders(roots, LAYOUT, &mut found);
    rejected.extend(found.all());
    patients
}

/// Lists the files of one patient (all its folders), sorted by name then path.
pub fn patient_files(folders: &[PathBuf], rejected: &mut Vec<Rejection>) -> Vec<FoundFile> {
    let mut files = Vec::new();
    for folder in folders {
        let dates = entries_or_reject(folder, rejected);
        for date in dates {
            if !is_dir(&date) {
                rejected.push(stray(&date.path(), "a file directly in a patient folder"));
                continue;
            }
            let types = entries_or_reject(&date.path(), rejected);
            for data_type in types {
                if !is_dir(&data_type) {
                    rejected.push(stray(
                        &data_type.path(),
                        "a file directly in a care-date folder",
                    ));
                    continue;
                }
                let entries = entries_or_reject(&data_type.path(), rejected);
                for file in entries {
                    let path = file.path();
                    let metadata = match file.metadata() {
                        Ok(metadata) => metadata,
                        Err(error) => {
                            rejected.push(Rejection {
                                source: path.display().to_string(),
                                reason: format!("cannot stat file: {error}"),
                            });
                            continue;
                        }
                    };
                    if metadata.is_dir() {
                        rejected.push(stray(&path, "a folder inside a data-type folder"));
                        continue;
                    }
                    let modified = modified_nanos(&metadata);
                    files.push(FoundFile {
                        name: file.file_name().to_string_lossy().into_owned(),
                        date_folder: date.file_name().to_string_lossy().into_owned(),
                        type_folder: data_type.file_name().to_string_lossy().into_owned(),
                        size: metadata.len(),
                        modified,
                        path,
                    });
                }
            }
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.path.cmp(&b.path)));
    files
}
