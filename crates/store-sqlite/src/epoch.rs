//! The standing epoch: a file beside the database (`<db>.standing`) that grows by one byte each
//! time a record a token's standing depends on changes — a facility, participant or client
//! written, a revocation recorded — in any process (the operator's `tsunagi admin` included),
//! after that change has committed. Its length is the epoch: the server reads it with one
//! `stat` per request and reads the records themselves only when it moved, so a deactivation or
//! revocation still holds from the next request without a query on every request.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use tsunagi_store::StoreError;

/// The epoch file of one database.
#[derive(Debug)]
pub(crate) struct StandingEpoch {
    path: PathBuf,
}

impl StandingEpoch {
    /// The epoch of the database file `database`.
    pub(crate) fn new(database: &Path) -> Self {
        let mut path = database.as_os_str().to_owned();
        path.push(".standing");
        Self {
            path: PathBuf::from(path),
        }
    }

    /// Moves the epoch on (call after the change has committed).
    pub(crate) fn bump(&self) -> Result<(), StoreError> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(b"."))
            .map_err(|error| {
                StoreError::database(format!(
                    "the change is committed, but {} could not be updated ({error}): a running server notices it only as its tokens expire",
                    self.path.display()
                ))
            })
    }

    /// The epoch now: 0 before the first change; `None` when it cannot be read.
    pub(crate) fn read(&self) -> Option<u64> {
        match std::fs::metadata(&self.path) {
            Ok(metadata) => Some(metadata.len()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Some(0),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_epoch_moves_with_every_change_and_is_shared_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("t.db");
        let server = StandingEpoch::new(&database);
        let operator = StandingEpoch::new(&database);
        assert_eq!(server.read(), Some(0));
        operator.bump().unwrap();
        operator.bump().unwrap();
        assert_eq!(server.read(), Some(2));
    }
}
