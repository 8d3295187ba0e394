//! The per-patient checkpoint.
//!
//! Two store checkpoints per patient, written in the same transaction as the patient's data:
//! - `ssmix2:<facility>:digest` / `<patient>`: a 64-bit digest of the patient's file list
//!   (names, sizes, modification times). All digests are loaded at the start of a run (bounded
//!   by patients, not files); a patient whose digest matches is skipped without opening a file.
//! - `ssmix2:<facility>:files` / `<patient>`: the file list itself, with each file's status, read
//!   only for patients that changed, to tell new content from renames (`_1` → `_2` keeps the
//!   name's stem, size and time).

use std::collections::HashMap;

use tsunagi_core::hash::Fnv64;

use crate::walk::FoundFile;

/// Scope of the digests.
pub fn digest_scope(facility: &str) -> String {
    format!("ssmix2:{facility}:digest")
}

/// Scope of the file lists.
pub fn files_scope(facility: &str) -> String {
    format!("ssmix2:{facility}:files")
}

/// Digest of a patient's files.
pub fn digest(files: &[FoundFile]) -> u64 {
    let mut hasher = Fnv64::default();
    for file in files {
        hasher.write_field(file.name.as_bytes());
        hasher.write_field(&file.size.to_le_bytes());
        hasher.write_field(&file.modified.to_le_bytes());
    }
    hasher.finish()
}

/// What was decided about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Read (or accounted for) successfully.
    Ok,
    /// Refused; kept so it is not re-read until it changes.
    Rejected,
}

/// A remembered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    /// Size when last seen.
    pub size: u64,
    /// Modification time when last seen.
    pub modified: i128,
    /// Outcome.
    pub status: Status,
}

/// The remembered file list of one patient, keyed by name stem (name without the flag).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileList {
    /// stem → (flag character, remembered state).
    pub entries: HashMap<String, Vec<(char, Remembered)>>,
}

impl FileList {
    /// Decodes a stored list (`stem\tflag\tsize\tmtime\tstatus` lines); unreadable lines are
    /// skipped, which at worst makes a file look new and be read again.
    pub fn decode(bytes: &[u8]) -> Self {
        let mut list = Self::default();
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() != 5 {
                continue;
            }
            let (Ok(size), Ok(modified)) = (fields[2].parse(), fields[3].parse()) else {
                continue;
            };
            let status = if fields[4] == "rejected" {
                Status::Rejected
            } else {
                Status::Ok
            };
            let flag = fields[1].chars().next().unwrap_or('?');
            list.entries.entry(fields[0].to_owned()).or_default().push((
                flag,
                Remembered {
                    size,
                    modified,
                    status,
                },
            ));
        }
        list
    }

    /// Encodes the list, sorted for determinism.
    pub fn encode(&self) -> Vec<u8> {
        let mut lines: Vec<String> = Vec::new();
        for (stem, versions) in &self.entries {
            for (flag, remembered) in versions {
                lines.push(format!(
                    "{stem}\t{flag}\t{}\t{}\t{}",
                    remembered.size,
                    remembered.modified,
                    if remembered.status == Status::Rejected {
                        "rejected"
                    } else {
                        "ok"
                    }
                ));
            }
        }
        lines.sort();
        let mut out = lines.join("\n").into_bytes();
        out.push(b'\n');
        out
    }

    /// The remembered state of a file with this stem, size and time, whatever its flag was.
    pub fn known(&self, stem: &str, size: u64, modified: i128) -> Option<&Remembered> {
        self.entries
            .get(stem)?
            .iter()
            .map(|(_, remembered)| remembered)
            .find(|remembered| remembered.size == size && remembered.modified == modified)
    }

    /// The flags this stem had.
    pub fn flags(&self, stem: &str) -> Vec<char> {
        self.entries
            .get(stem)
            .map(|versions| versions.iter().map(|(flag, _)| *flag).collect())
            .unwrap_or_default()
    }

    /// Remembers a file.
    pub fn remember(&mut self, stem: &str, flag: char, remembered: Remembered) {
        self.entries
            .entry(stem.to_owned())
            .or_default()
            .push((flag, remembered));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut list = FileList::default();
        list.remember(
            "a_b",
            '1',
            Remembered {
                size: 10,
                modified: 99,
                status: Status::Ok,
            },
        );
        list.remember(
            "c_d",
            '0',
            Remembered {
                size: 3,
                modified: -1,
                status: Status::Rejected,
            },
        );
        let decoded = FileList::decode(&list.encode());
        assert_eq!(decoded, list);
        assert!(decoded.known("a_b", 10, 99).is_some());
        assert!(decoded.known("a_b", 11, 99).is_none());
        assert_eq!(decoded.flags("c_d"), vec!['0']);
    }
}
