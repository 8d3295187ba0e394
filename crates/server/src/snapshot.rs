//! Search-result snapshots: the ordered keys of a search, kept so that its pages are cut from
//! one fixed list.
//!
//! A page never repeats or skips a resource while ingestion goes on, because later pages are
//! slices of the list taken when the search first ran (resources deleted since are left out of
//! their page; resources created since are not in the list). Snapshots live in memory for a
//! bounded time and size; a page link to an expired snapshot answers 410 Gone.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tsunagi_store::Key;

/// One stored result list.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The resource type searched (or `Patient/$everything`), checked on every page request.
    pub scope: String,
    /// Every match, in order.
    pub keys: Arc<Vec<Key>>,
}

struct Entry {
    snapshot: Snapshot,
    created: Instant,
}

struct Inner {
    entries: HashMap<String, Entry>,
    order: VecDeque<String>,
    total_keys: usize,
}

/// The snapshot cache.
pub struct Snapshots {
    inner: Mutex<Inner>,
    ttl: Duration,
    max_keys: usize,
    counter: AtomicU64,
    keys: std::collections::hash_map::RandomState,
}

impl Snapshots {
    /// A cache keeping snapshots for `ttl` and at most `max_keys` keys in all.
    pub fn new(ttl: Duration, max_keys: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                total_keys: 0,
            }),
            ttl,
            max_keys,
            counter: AtomicU64::new(0),
            keys: std::collections::hash_map::RandomState::new(),
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

    /// Stores a snapshot and returns its id.
    pub fn put(&self, snapshot: Snapshot) -> String {
        let id = self.new_id();
        let Ok(mut inner) = self.inner.lock() else {
            return id;
        };
        self.expire(&mut inner);
        let size = snapshot.keys.len();
        while inner.total_keys + size > self.max_keys {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(entry) = inner.entries.remove(&oldest) {
                inner.total_keys -= entry.snapshot.keys.len();
            }
        }
        inner.total_keys += size;
        inner.order.push_back(id.clone());
        inner.entries.insert(
            id.clone(),
            Entry {
                snapshot,
                created: Instant::now(),
            },
        );
        id
    }

    /// A live snapshot.
    pub fn get(&self, id: &str) -> Option<Snapshot> {
        let mut inner = self.inner.lock().ok()?;
        self.expire(&mut inner);
        inner.entries.get(id).map(|entry| entry.snapshot.clone())
    }

    fn expire(&self, inner: &mut Inner) {
        while let Some(oldest) = inner.order.front() {
            let expired = inner
                .entries
                .get(oldest)
                .is_none_or(|entry| entry.created.elapsed() > self.ttl);
            if !expired {
                break;
            }
            if let Some(id) = inner.order.pop_front()
                && let Some(entry) = inner.entries.remove(&id)
            {
                inner.total_keys -= entry.snapshot.keys.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_expire_and_are_bounded() {
        let cache = Snapshots::new(Duration::from_secs(60), 10);
        let a = cache.put(Snapshot {
            scope: "Observation".into(),
            keys: Arc::new(vec![1, 2, 3, 4, 5, 6]),
        });
        assert_eq!(a.len(), 32);
        assert_eq!(cache.get(&a).map(|s| s.keys.len()), Some(6));
        let b = cache.put(Snapshot {
            scope: "Observation".into(),
            keys: Arc::new(vec![7, 8, 9, 10, 11]),
        });
        assert_ne!(a, b);
        assert!(cache.get(&a).is_none(), "the oldest snapshot makes room");
        assert!(cache.get(&b).is_some());
        let short = Snapshots::new(Duration::from_millis(0), 10);
        let c = short.put(Snapshot {
            scope: "Patient".into(),
            keys: Arc::new(vec![1]),
        });
        std::thread::sleep(Duration::from_millis(2));
        assert!(short.get(&c).is_none());
    }
}
