//! Walking standardized storage: `<root>/<pid[0:3]>/<pid[3:6]>/<pid>/<診療日>/<データ種別>/<file>`.
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

use tsunagi_adapter::Rejection;

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

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<fs::DirEntry>> {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    Ok(entries)
}

fn is_dir(entry: &fs::DirEntry) -> bool {
    entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false)
}

fn stray(path: &Path, what: &str) -> Rejection {
    Rejection {
        source: path.display().to_string(),
        reason: format!(
            "{what}; SS-MIX2 files live in <root>/<3>/<3>/<patient>/<date>/<data type>/"
        ),
    }
}

/// Every patient folder under the roots, merged by patient id, in id order. Files found at the
/// wrong depth are reported as rejections.
pub fn patient_folders(
    roots: &[PathBuf],
    rejected: &mut Vec<Rejection>,
) -> std::io::Result<BTreeMap<String, Vec<PathBuf>>> {
    let mut patients: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for root in roots {
        for first in sorted_entries(root)? {
            if !is_dir(&first) {
                rejected.push(stray(
                    &first.path(),
                    "a file directly under the storage root",
                ));
                continue;
            }
            let second_level = match sorted_entries(&first.path()) {
                Ok(entries) => entries,
                Err(error) => {
                    rejected.push(Rejection {
                        source: first.path().display().to_string(),
                        reason: format!("cannot list folder: {error}"),
                    });
                    continue;
                }
            };
            for second in second_level {
                if !is_dir(&second) {
                    rejected.push(stray(&second.path(), "a file above the patient folders"));
                    continue;
                }
                let third_level = match sorted_entries(&second.path()) {
                    Ok(entries) => entries,
                    Err(error) => {
                        rejected.push(Rejection {
                            source: second.path().display().to_string(),
                            reason: format!("cannot list folder: {error}"),
                        });
                        continue;
                    }
                };
                for patient in third_level {
                    if !is_dir(&patient) {
                        rejected.push(stray(&patient.path(), "a file above the patient folders"));
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

/// Lists the files of one patient (all its folders), sorted by name then path.
pub fn patient_files(folders: &[PathBuf], rejected: &mut Vec<Rejection>) -> Vec<FoundFile> {
    let mut files = Vec::new();
    for folder in folders {
        let dates = match sorted_entries(folder) {
            Ok(entries) => entries,
            Err(error) => {
                rejected.push(Rejection {
                    source: folder.display().to_string(),
                    reason: format!("cannot list folder: {error}"),
                });
                continue;
            }
        };
        for date in dates {
            if !is_dir(&date) {
                rejected.push(stray(&date.path(), "a file directly in a patient folder"));
                continue;
            }
            let types = match sorted_entries(&date.path()) {
                Ok(entries) => entries,
                Err(error) => {
                    rejected.push(Rejection {
                        source: date.path().display().to_string(),
                        reason: format!("cannot list folder: {error}"),
                    });
                    continue;
                }
            };
            for data_type in types {
                if !is_dir(&data_type) {
                    rejected.push(stray(
                        &data_type.path(),
                        "a file directly in a care-date folder",
                    ));
                    continue;
                }
                let entries = match sorted_entries(&data_type.path()) {
                    Ok(entries) => entries,
                    Err(error) => {
                        rejected.push(Rejection {
                            source: data_type.path().display().to_string(),
                            reason: format!("cannot list folder: {error}"),
                        });
                        continue;
                    }
                };
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
                    let modified = metadata
                        .modified()
                        .ok()
                        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
                        .map(|elapsed| elapsed.as_nanos() as i128)
                        .unwrap_or(0);
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
