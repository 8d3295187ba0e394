//! The cap on a listener's connections and on each peer address's, and the accept loop's
//! handling of errors.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

/// How many connections a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections of the listener at once.
    pub max_connections: usize,
    /// Connections from one peer address at once (a reverse proxy in front is one address:
    /// raise this to `max_connections` there, and limit per client in the proxy).
    pub max_per_peer: usize,
}

/// Whether a connection was admitted.
#[derive(Debug)]
pub enum Admission {
    /// Served; the ticket is held until the connection closes.
    Admitted(Ticket),
    /// Its address already has `max_per_peer` connections.
    PeerFull,
    /// The listener already has `max_connections` connections.
    ListenerFull,
}

#[derive(Debug)]
struct Inner {
    name: &'static str,
    limits: Limits,
    slots: Arc<Semaphore>,
    peers: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
}

/// The connection limits of one listener.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("name", &self.inner.name)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// An admitted connection's place; released when dropped.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Inner>,
    peer: IpAddr,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut peers = self
            .gate
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = peers.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

impl Gate {
    /// A gate for the listener called `name` (in logs).
    pub fn new(name: &'static str, limits: Limits) -> Self {
        let limits = Limits {
            max_connections: limits.max_connections.max(1),
            max_per_peer: limits.max_per_peer.clamp(1, limits.max_connections.max(1)),
        };
        Self {
            inner: Arc::new(Inner {
                name,
                limits,
                slots: Arc::new(Semaphore::new(limits.max_connections)),
                peers: Mutex::default(),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// The listener's name.
    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Connections served now.
    pub fn open(&self) -> usize {
        self.inner.limits.max_connections - self.inner.slots.available_permits()
    }

    /// Connections turned away so far.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Admits a connection from `peer`, or says which limit it is over.
    pub fn admit(&self, peer: IpAddr) -> Admission {
        let mut peers = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = peers.get(&peer).copied().unwrap_or(0);
        if count >= self.inner.limits.max_per_peer {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            return Admission::PeerFull;
        }
        let Ok(slot) = self.inner.slots.clone().try_acquire_owned() else {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            return Admission::ListenerFull;
        };
        peers.insert(peer, count + 1);
        Admission::Admitted(Ticket {
            gate: self.inner.clone(),
            peer,
            _slot: slot,
        })
    }

    /// Waits until every admitted connection has closed, or `deadline` passed; true when all
    /// closed.
    pub async fn drained(&self, deadline: Duration) -> bool {
        let all = u32::try_from(self.inner.limits.max_connections).unwrap_or(u32::MAX);
        tokio::time::timeout(deadline, self.inner.slots.acquire_many(all))
            .await
            .is_ok_and(|permit| permit.is_ok())
    }

    /// The next connection of `listener`, with what the gate says of it. Errors of accept —
    /// out of file descriptors above all — are backed off (10 ms doubling to 1 s) and logged at
    /// most once a second, so a starved process neither spins nor floods its log.
    pub async fn accept(&self, listener: &TcpListener) -> (TcpStream, SocketAddr, Admission) {
        let mut backoff = Duration::from_millis(10);
        let mut last_log: Option<Instant> = None;
        let mut failures = 0u64;
        loop {
            match listener.accept().await {
                Ok((stream, address)) => {
                    if failures > 0 {
                        tracing::info!(target: "tsunagi::net", listener = self.inner.name, failures, "accepting again");
                    }
                    let admission = self.admit(address.ip());
                    return (stream, address, admission);
                }
                Err(error) => {
                    failures += 1;
                    if last_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(target: "tsunagi::net", listener = self.inner.name, %error, failures, "accept failed; backing off");
                        last_log = Some(Instant::now());
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[tokio::test]
    async fn caps_per_peer_and_per_listener_and_tickets_give_back() {
        let gate = Gate::new(
            "test",
            Limits {
                max_connections: 3,
                max_per_peer: 2,
            },
        );
        let first = gate.admit(ip(1));
        let second = gate.admit(ip(1));
        assert!(matches!(first, Admission::Admitted(_)));
        assert!(matches!(second, Admission::Admitted(_)));
        assert!(matches!(gate.admit(ip(1)), Admission::PeerFull));
        let third = gate.admit(ip(2));
        assert!(matches!(third, Admission::Admitted(_)));
        assert!(matches!(gate.admit(ip(3)), Admission::ListenerFull));
        assert_eq!((gate.open(), gate.refused()), (3, 2));
        drop(first);
        assert!(matches!(gate.admit(ip(1)), Admission::Admitted(_)));
        drop(second);
        drop(third);
        assert!(gate.drained(Duration::from_millis(50)).await);
    }

    #[tokio::test]
    async fn draining_waits_for_open_connections() {
        let gate = Gate::new(
            "test",
            Limits {
                max_connections: 2,
                max_per_peer: 2,
            },
        );
        let held = gate.admit(ip(1));
        assert!(!gate.drained(Duration::from_millis(20)).await);
        drop(held);
        assert!(gate.drained(Duration::from_millis(20)).await);
    }
}
