//! The audit journal: how the server records every access without a database commit on the
//! path of each answer. A request's audit records are appended to a journal file next to the
//! database (one `write` of checksummed frames: once it returns, the records survive a crash of
//! the process, as a commit with `synchronous = NORMAL` does), and imported into the `audit`
//! table in large transactions — every 100 ms in the background, and before any read of the
//! trail, so that a reader always sees every record appended before it asked.
//!
//! Files are `<database file>.audit-<generation>`. The server appends to a new generation each
//! time it starts and whenever the current file passes [`ROTATE_BYTES`]. The import position
//! (generation, offset) is kept in `store_meta` and moved in the transaction that inserts the
//! records, under SQLite's write lock, so two processes never import a record twice; a
//! generation is deleted only once a later one is being imported from. A frame cut short by a
//! crash, or failing its checksum, ends its file: its request was never answered.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use tsunagi_core::hash::Fnv64;
use tsunagi_store::{StoreError, governance::AuditRecord};

/// A journal file is closed for appending, and a new generation begun, past this size.
pub(crate) const ROTATE_BYTES: u64 = 64 << 20;
/// Frame header: payload length (u32 LE) and the payload's FNV-1a 64 (u64 LE).
const HEADER: usize = 12;
/// Marks an absent optional string.
const NONE: u16 = u16::MAX;

fn io_error(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::database(format!("audit journal {}: {error}", path.display()))
}

/// The file this process appends to.
#[derive(Debug)]
struct Appender {
    generation: u64,
    file: File,
    /// Bytes written to `file`.
    written: u64,
    /// Begin a new generation past this size.
    rotate_at: u64,
}

/// The journal files of one database.
#[derive(Debug)]
pub(crate) struct Journal {
    /// The database file; journal files are named after it.
    database: PathBuf,
    /// What this process appends to, when it appends at all.
    appender: Mutex<Option<Appender>>,
}

impl Journal {
    pub(crate) fn new(database: PathBuf) -> Self {
        Self {
            database,
            appender: Mutex::new(None),
        }
    }

    fn path(&self, generation: u64) -> PathBuf {
        let mut name = self.database.as_os_str().to_owned();
        name.push(format!(".audit-{generation}"));
        PathBuf::from(name)
    }

    /// The journal files on disk, oldest generation first.
    pub(crate) fn files(&self) -> Result<Vec<(u64, PathBuf)>, StoreError> {
        let directory = match self.database.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let Some(base) = self.database.file_name().and_then(|name| name.to_str()) else {
            return Ok(Vec::new());
        };
        let prefix = format!("{base}.audit-");
        let mut found = Vec::new();
        let entries = std::fs::read_dir(&directory).map_err(|e| io_error(&directory, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&directory, e))?;
            let name = entry.file_name();
            if let Some(generation) = name
                .to_str()
                .and_then(|name| name.strip_prefix(&prefix))
                .and_then(|rest| rest.parse::<u64>().ok())
            {
                found.push((generation, entry.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Starts appending, to a generation after every existing one and after `imported`; a new
    /// generation begins whenever the current file passes `rotate_at` bytes.
    pub(crate) fn start_appending(&self, imported: u64, rotate_at: u64) -> Result<(), StoreError> {
        let newest = self
            .files()?
            .last()
            .map_or(0, |(generation, _)| *generation);
        let generation = newest.max(imported) + 1;
        let file = self.create(generation)?;
        *self.appender.lock().unwrap_or_else(PoisonError::into_inner) = Some(Appender {
            generation,
            file,
            written: 0,
            rotate_at,
        });
        Ok(())
    }

    fn create(&self, generation: u64) -> Result<File, StoreError> {
        let path = self.path(generation);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))
    }

    /// Appends `records` in one write; `Ok(false)` when this process does not append (the
    /// caller inserts them directly).
    pub(crate) fn append(&self, records: &[AuditRecord]) -> Result<bool, StoreError> {
        if self
            .appender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            return Ok(false);
        }
        // Encoded outside the lock (a process that appends never stops): only the write is
        // serialised.
        let mut bytes = Vec::with_capacity(records.len() * 1600);
        for record in records {
            encode(record, &mut bytes)?;
        }
        let mut appender = self.appender.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(appender) = appender.as_mut() else {
            return Ok(false);
        };
        appender
            .file
            .write_all(&bytes)
            .map_err(|e| io_error(&self.path(appender.generation), e))?;
        appender.written += bytes.len() as u64;
        if appender.written >= appender.rotate_at {
            let next = appender.generation + 1;
            appender.file = self.create(next)?;
            appender.generation = next;
            appender.written = 0;
        }
        Ok(true)
    }

    /// The complete frames of a file from `offset`, and the offset after the last of them.
    pub(crate) fn read_from(
        path: &Path,
        offset: u64,
    ) -> Result<(Vec<AuditRecord>, u64), StoreError> {
        let mut file = File::open(path).map_err(|e| io_error(path, e))?;
        let length = file.metadata().map_err(|e| io_error(path, e))?.len();
        if offset >= length {
            return Ok((Vec::new(), offset));
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io_error(path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| io_error(path, e))?;
        let (records, consumed) = decode(&bytes);
        Ok((records, offset + consumed as u64))
    }
}

fn put_text(bytes: &mut Vec<u8>, text: Option<&str>) -> Result<(), StoreError> {
    match text {
        None => bytes.extend_from_slice(&NONE.to_le_bytes()),
        Some(text) => {
            let length = u16::try_from(text.len())
                .ok()
                .filter(|length| *length != NONE)
                .ok_or_else(|| StoreError::Invalid("an audit field is too long".into()))?;
            bytes.extend_from_slice(&length.to_le_bytes());
            bytes.extend_from_slice(text.as_bytes());
        }
    }
    Ok(())
}

/// One frame: header, then id, recorded, patient, facility and the event.
fn encode(record: &AuditRecord, bytes: &mut Vec<u8>) -> Result<(), StoreError> {
    let start = bytes.len();
    bytes.extend_from_slice(&[0; HEADER]);
    put_text(bytes, Some(&record.id))?;
    bytes.extend_from_slice(&record.recorded.to_le_bytes());
    put_text(bytes, record.patient.as_deref())?;
    put_text(bytes, record.facility.as_deref())?;
    let event = u32::try_from(record.event.len())
        .map_err(|_| StoreError::Invalid("an audit event is too long".into()))?;
    bytes.extend_from_slice(&event.to_le_bytes());
    bytes.extend_from_slice(&record.event);
    let payload = bytes.get(start + HEADER..).unwrap_or_default();
    let length = u32::try_from(payload.len())
        .map_err(|_| StoreError::Invalid("an audit event is too long".into()))?;
    let mut digest = Fnv64::default();
    digest.write(payload);
    let digest = digest.finish();
    if let Some(header) = bytes.get_mut(start..start + HEADER) {
        header[..4].copy_from_slice(&length.to_le_bytes());
        header[4..].copy_from_slice(&digest.to_le_bytes());
    }
    Ok(())
}

/// Reads the fields of one payload in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn text(&mut self) -> Option<Option<String>> {
        let length = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
        if length == NONE {
            return Some(None);
        }
        let text = std::str::from_utf8(self.take(usize::from(length))?).ok()?;
        Some(Some(text.to_owned()))
    }

    fn record(mut self) -> Option<AuditRecord> {
        let id = self.text()??;
        let recorded = i64::from_le_bytes(self.take(8)?.try_into().ok()?);
        let patient = self.text()?;
        let facility = self.text()?;
        let length = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
        let event = self.take(usize::try_from(length).ok()?)?.to_vec();
        self.0.is_empty().then_some(AuditRecord {
            id,
            recorded,
            patient,
            facility,
            event,
        })
    }
}

/// The records of the complete, intact frames at the start of `bytes`, and how many bytes they
/// take.
pub(crate) fn decode(bytes: &[u8]) -> (Vec<AuditRecord>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let mut digest_bytes = [0; 8];
        digest_bytes.copy_from_slice(&header[4..]);
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + length) else {
            break;
        };
        let mut digest = Fnv64::default();
        digest.write(payload);
        if digest.finish() != u64::from_le_bytes(digest_bytes) {
            break;
        }
        let Some(record) = Fields(payload).record() else {
            break;
        };
        records.push(record);
        at += HEADER + length;
    }
    (records, at)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record(n: i64, patient: Option<&str>) -> AuditRecord {
        AuditRecord {
            id: format!("id-{n}"),
            recorded: n,
            patient: patient.map(str::to_owned),
            facility: Some("0610100010".into()),
            event: format!("{{\"n\":{n},\"text\":\"監査\"}}").into_bytes(),
        }
    }

    #[test]
    fn frames_round_trip_and_a_cut_or_damaged_frame_ends_the_file() {
        let records = vec![
            record(1, Some("p1")),
            record(2, None),
            record(3, Some("p3")),
        ];
        let mut bytes = Vec::new();
        for r in &records {
            encode(r, &mut bytes).unwrap();
        }
        assert_eq!(decode(&bytes), (records.clone(), bytes.len()));
        // Cut inside the last frame: the first two only.
        let (cut, consumed) = decode(&bytes[..bytes.len() - 3]);
        assert_eq!(cut, records[..2]);
        let mut two = Vec::new();
        for r in &records[..2] {
            encode(r, &mut two).unwrap();
        }
        assert_eq!(consumed, two.len());
        // A flipped byte in the second frame's payload: the first only.
        let mut damaged = bytes.clone();
        damaged[two.len() - 2] ^= 0x20;
        assert_eq!(decode(&damaged).0, records[..1]);
    }
}
