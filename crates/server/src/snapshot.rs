//! Search-result snapshots: the ordered keys of a search, kept so that its pages are cut from
//! one fixed list.
//!
//! A page never repeats or skips a resource while ingestion goes on, because later pages are
//! slices of the list taken when the search first ran (resources deleted since are left out of
//! their page; resources created since are not in the list). Snapshots live in the database
//! ([`tsunagi_store::Paging`]), so the next page may be asked of any node behind a load
//! balancer. They live for a bounded time; a page link to an expired snapshot answers 410 Gone.
//! One result longer than `snapshot_max_keys` is refused (narrow the search); the keys of all
//! snapshots together are brought back under that bound every 30 s, oldest first (between two
//! prunings they may exceed it by what those seconds of searches stored). On SQLite, storing a
//! snapshot is a write like any other (it waits for the writer).

use std::{
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::Duration,
};

use tsunagi_store::{Governance, Key, NewSnapshot, SnapshotPage, StoreError};

/// How often one process prunes expired snapshots (microseconds).
const PRUNE_EVERY: i64 = 30 * 1_000_000;

/// Makes, reads and prunes snapshots.
pub struct Snapshots {
    ttl: Duration,
    max_keys: usize,
    counter: AtomicU64,
    keys: std::collections::hash_map::RandomState,
    last_prune: AtomicI64,
}

impl Snapshots {
    /// Snapshots kept for `ttl` and at most `max_keys` keys in all.
    pub fn new(ttl: Duration, max_keys: usize) -> Self {
        Self {
            ttl,
            max_keys,
            counter: AtomicU64::new(0),
            keys: std::collections::hash_map::RandomState::new(),
            last_prune: AtomicI64::new(0),
        }
    }

    /// An unguessable id: SipHash, keyed from the OS's randomness, of a counter and the time.
    pub fn new_id(&self) -> String {
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut parts = [0u64; 2];
        for (salt, part) in parts.iter_mut().enumerate() {
            let mut hasher = self.keys.build_hasher();
            hasher.write_u64(count);
            hasher.write_u64(now);
            hasher.write_usize(salt);
            *part = hasher.finish();
        }
        format!("{:016x}{:016x}", parts[0], parts[1])
    }

    /// The most keys one snapshot (and all of them together) may hold.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    fn ttl_micros(&self) -> i64 {
        i64::try_from(self.ttl.as_micros()).unwrap_or(i64::MAX)
    }

    /// Stores `keys` under `scope` and returns the snapshot's id. Every [`PRUNE_EVERY`], the
    /// expired snapshots and those beyond the bound are removed first.
    pub async fn put(
        &self,
        store: &dyn Governance,
        scope: &str,
        keys: &[Key],
        now: i64,
    ) -> Result<String, StoreError> {
        let last = self.last_prune.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= PRUNE_EVERY
            && self
                .last_prune
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let before = now.saturating_sub(self.ttl_micros());
            let room = self.max_keys.saturating_sub(keys.len());
            if let Err(error) = store.prune_snapshots(before, room).await {
                tracing::warn!(target: "tsunagi::api", %error, "pruning paging snapshots failed");
            }
        }
        let id = self.new_id();
        store
            .put_snapshot(NewSnapshot {
                id: &id,
                scope,
                keys,
                created: now,
            })
            .await?;
        Ok(id)
    }

    /// Keys `offset .. offset + count` of a live snapshot.
    pub async fn page(
        &self,
        store: &dyn Governance,
        id: &str,
        now: i64,
        offset: usize,
        count: usize,
    ) -> Result<Option<SnapshotPage>, StoreError> {
        let not_before = now.saturating_sub(self.ttl_micros());
        store.snapshot_page(id, not_before, offset, count).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_long_and_distinct() {
        let snapshots = Snapshots::new(Duration::from_secs(60), 10);
        let a = snapshots.new_id();
        let b = snapshots.new_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
