//! The per-patient checkpoint, written in the same transaction as the patient's documents:
//! - `ssmix2-extended:<facility>:digest` / `<patient>`: a digest of all the patient's content
//!   folders; unchanged, the patient is skipped without opening a file;
//! - `ssmix2-extended:<facility>:folders` / `<patient>`: each content folder's digest and
//!   whether it was read or refused, so that only changed folders are read again and a refused
//!   one is not re-read (nor reported again) until it changes; and the strays found beside
//!   them (files where the layout has none), reported once, not again while they stay;
//! - `ssmix2-extended:<facility>:strays` / `roots`: the strays above the patient folders,
//!   reported once likewise.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// Scope of the patients' digests.
pub fn digest_scope(facility: &str) -> String {
    format!("ssmix2-extended:{facility}:digest")
}

/// Scope of the patients' folder lists.
pub fn folders_scope(facility: &str) -> String {
    format!("ssmix2-extended:{facility}:folders")
}

/// A content folder as last seen: its digest and whether it was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The folder's digest then.
    pub digest: u64,
    /// Refused (a bad file): not read again until its digest changes.
    pub refused: bool,
}

/// Scope of the strays found above the patient folders (key [`ROOT_STRAYS`]).
pub fn strays_scope(facility: &str) -> String {
    format!("ssmix2-extended:{facility}:strays")
}

/// Key of the strays above the patient folders.
pub const ROOT_STRAYS: &str = "roots";

/// A patient's content folders as last seen, by (data type, date, name), and the strays
/// already reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folders(
    pub BTreeMap<(String, String, String), Seen>,
    pub BTreeSet<String>,
);

/// Stored strays: a JSON list of their paths (an unreadable one is empty: all are reported).
pub fn decode_strays(bytes: &[u8]) -> BTreeSet<String> {
    serde_json::from_slice::<Vec<String>>(bytes)
        .map(|paths| paths.into_iter().collect())
        .unwrap_or_default()
}

/// The stored form of strays.
pub fn encode_strays(strays: &BTreeSet<String>) -> Vec<u8> {
    serde_json::to_vec(strays).unwrap_or_default()
}

impl Folders {
    /// Reads a stored list (an unreadable one is empty: everything is read again). A stray is
    /// a row of one path (rows the builds before strays skip).
    pub fn decode(bytes: &[u8]) -> Self {
        let mut folders = BTreeMap::new();
        let mut strays = BTreeSet::new();
        if let Ok(Value::Array(rows)) = serde_json::from_slice::<Value>(bytes) {
            for row in rows {
                if let Some([Value::String(path)]) = row.as_array().map(Vec::as_slice) {
                    strays.insert(path.clone());
                    continue;
                }
                let text = |index: usize| row[index].as_str().map(str::to_owned);
                if let (Some(kind), Some(date), Some(name), Some(digest), Some(refused)) = (
                    text(0),
                    text(1),
                    text(2),
                    text(3).and_then(|hex| u64::from_str_radix(&hex, 16).ok()),
                    row[4].as_bool(),
                ) {
                    folders.insert((kind, date, name), Seen { digest, refused });
                }
            }
        }
        Self(folders, strays)
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let rows: Vec<Value> = self
            .0
            .iter()
            .map(|((kind, date, name), seen)| {
                json!([
                    kind,
                    date,
                    name,
                    format!("{:016x}", seen.digest),
                    seen.refused
                ])
            })
            .chain(self.1.iter().map(|path| json!([path])))
            .collect();
        serde_json::to_vec(&rows).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_list_survives_its_stored_form() {
        let mut folders = Folders::default();
        folders.0.insert(
            (
                "L1^経過^99Z".into(),
                "20240501".into(),
                "P_20240501_L1_K\t_1".into(),
            ),
            Seen {
                digest: u64::MAX,
                refused: true,
            },
        );
        folders
            .1
            .insert("/storage/000/000/0000000001/20240501/stray.txt".into());
        assert_eq!(Folders::decode(&folders.encode()), folders);
        assert_eq!(Folders::decode(b"garbage"), Folders::default());
    }
}
