//! Paging snapshots in the database: a search's ordered result keys, stored so that whichever
//! node a page request reaches can cut that page from the same list (issue 22). The keys are
//! kept in chunks of [`SNAPSHOT_CHUNK`], so a page reads one or two chunks, never the list.

use crate::{Key, StoreError};

/// Keys per stored chunk (a page is at most `MAX_COUNT` = 1000 keys: two chunks at most).
pub const SNAPSHOT_CHUNK: usize = 1024;

/// A snapshot to store.
#[derive(Debug, Clone, Copy)]
pub struct NewSnapshot<'a> {
    /// Unguessable id (the searchset Bundle's id and the page links' `_snapshot`).
    pub id: &'a str,
    /// Whose search of what: checked on every page request.
    pub scope: &'a str,
    /// Every match, in order.
    pub keys: &'a [Key],
    /// When it was made, microseconds since the epoch.
    pub created: i64,
}

/// One page cut from a stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPage {
    /// The scope it was stored under.
    pub scope: String,
    /// Keys in the whole snapshot.
    pub total: usize,
    /// The page's keys.
    pub keys: Vec<Key>,
}

/// Where paging snapshots live.
#[async_trait::async_trait]
pub trait Paging: Send + Sync {
    /// Stores a snapshot (its header and every chunk in one transaction).
    async fn put_snapshot(&self, snapshot: NewSnapshot<'_>) -> Result<(), StoreError>;

    /// Keys `offset .. offset + count` of snapshot `id`, if it was made at or after
    /// `not_before` (an older one has expired).
    async fn snapshot_page(
        &self,
        id: &str,
        not_before: i64,
        offset: usize,
        count: usize,
    ) -> Result<Option<SnapshotPage>, StoreError>;

    /// Removes snapshots made before `before`, then the oldest while more than `max_keys` keys
    /// are kept in all. Returns how many were removed.
    async fn prune_snapshots(&self, before: i64, max_keys: usize) -> Result<u64, StoreError>;
}

/// A chunk's stored bytes: each key as 8 little-endian bytes.
pub fn encode_chunk(keys: &[Key]) -> Vec<u8> {
    keys.iter().flat_map(|key| key.to_le_bytes()).collect()
}

/// The keys of a stored chunk.
pub fn decode_chunk(bytes: &[u8]) -> Result<Vec<Key>, StoreError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(StoreError::database(format!(
            "a snapshot chunk of {} bytes is not whole keys",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|key| {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(key);
            Key::from_le_bytes(eight)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_refuse_torn_bytes() {
        let keys = vec![1, -2, i64::MAX, 0];
        assert_eq!(decode_chunk(&encode_chunk(&keys)).ok(), Some(keys));
        assert!(decode_chunk(&[1, 2, 3]).is_err());
    }
}
