//! The cap on a listener's connections and on each peer address's, and the accept loop's
//! handling of errors. A full listener that evicts (the API's) makes room for a newcomer by
//! closing its oldest connection that has not proven itself — none of whose requests carried a
//! valid token — so that idle or slow unauthenticated sockets can never keep authenticated
//! clients out.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
};

/// How many connections a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections of the listener at once.
    pub max_connections: usize,
    /// Connections from one peer address at once (a reverse proxy in front is one address:
    /// raise this to `max_connections` there, and limit per client in the proxy).
    pub max_per_peer: usize,
    /// When full, close the oldest connection that has not proven itself
    /// ([`Evictable::spare`]) to admit a new one.
    pub evict: bool,
}

/// How long a newcomer waits for the place of the connection evicted for it.
const EVICTION_WAIT: Duration = Duration::from_millis(250);

/// An open connection, as the gate knows it.
#[derive(Debug)]
struct Entry {
    spared_until: Arc<AtomicI64>,
    evict: Arc<Notify>,
}

/// Seconds since the epoch, now.
fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Until when a connection is spared from eviction (seconds since the epoch; none at first).
/// The server spares it while it proves itself — for as long as the token it carried is valid —
/// and exposes it again when a request on it fails to authenticate.
#[derive(Debug, Clone)]
pub struct Evictable(Arc<AtomicI64>);

impl Evictable {
    /// The connection carried a valid credential still valid for `lifetime`.
    pub fn spare_for(&self, lifetime: Duration) {
        let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        self.0
            .fetch_max(now_seconds().saturating_add(lifetime), Ordering::Relaxed);
    }

    /// The connection proved itself for as long as it stays open (an MLLP sender whose message
    /// was acknowledged).
    pub fn spare(&self) {
        self.0.store(i64::MAX, Ordering::Relaxed);
    }

    /// A request on the connection failed to authenticate: evictable again.
    pub fn expose(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// The address a per-peer cap counts: an IPv4 address, or the /64 network of an IPv6 one (one
/// host holds a whole /64).
fn peer_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// The most connections a gate counts (a configuration beyond it is clamped).
const MAX_CAP: usize = 1 << 20;

/// Whether a connection was admitted.
#[derive(Debug)]
pub enum Admission {
    /// Served; the ticket is held until the connection closes.
    Admitted(Ticket),
    /// Its address already has `max_per_peer` connections.
    PeerFull,
    /// The listener already has `max_connections` connections.
    ListenerFull,
    /// The listener does not serve this address at all.
    Screened,
}

#[derive(Debug)]
struct Inner {
    name: &'static str,
    limits: Limits,
    slots: Arc<Semaphore>,
    peers: Mutex<HashMap<IpAddr, usize>>,
    /// Open connections by admission order.
    open: Mutex<BTreeMap<u64, Entry>>,
    admitted: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    /// When refusals were last logged, and the count then.
    last_warned: Mutex<Option<(Instant, u64)>>,
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
    number: u64,
    spared_until: Arc<AtomicI64>,
    evict: Arc<Notify>,
    _slot: OwnedSemaphorePermit,
}

impl Ticket {
    /// The handle that spares the connection from eviction.
    pub fn evictable(&self) -> Evictable {
        Evictable(self.spared_until.clone())
    }

    /// Completes when the gate evicts this connection for a newcomer (never, on a gate that
    /// does not evict): the connection should close at once.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.number);
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
        let max_connections = limits.max_connections.clamp(1, MAX_CAP);
        let limits = Limits {
            max_connections,
            max_per_peer: limits.max_per_peer.clamp(1, max_connections),
            evict: limits.evict,
        };
        Self {
            inner: Arc::new(Inner {
                name,
                limits,
                slots: Arc::new(Semaphore::new(limits.max_connections)),
                peers: Mutex::default(),
                open: Mutex::default(),
                admitted: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                evicted: AtomicU64::new(0),
                last_warned: Mutex::default(),
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

    /// Connections evicted for newcomers so far.
    pub fn evicted(&self) -> u64 {
        self.inner.evicted.load(Ordering::Relaxed)
    }

    /// Logs refused connections at most once every ten seconds, with how many there were.
    fn note_refusal(&self) {
        let mut last = self
            .inner
            .last_warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(10)) {
            let refused = self.refused();
            let since = last.map_or(refused, |(_, before)| refused.saturating_sub(before));
            tracing::warn!(
                target: "tsunagi::net",
                listener = self.inner.name,
                refused_since_last_warning = since,
                open = self.open(),
                "connections turned away (caps, or addresses this listener does not serve)"
            );
            *last = Some((Instant::now(), refused));
        }
    }

    /// Registers an admitted connection holding `slot`.
    fn ticket(&self, peer: IpAddr, slot: OwnedSemaphorePermit) -> Ticket {
        let number = self.inner.admitted.fetch_add(1, Ordering::Relaxed);
        let spared_until = Arc::new(AtomicI64::new(0));
        let evict = Arc::new(Notify::new());
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                number,
                Entry {
                    spared_until: spared_until.clone(),
                    evict: evict.clone(),
                },
            );
        Ticket {
            gate: self.inner.clone(),
            peer,
            number,
            spared_until,
            evict,
            _slot: slot,
        }
    }

    /// Tells the oldest connection that has not proven itself to close; false when there is
    /// none.
    fn evict_one(&self) -> bool {
        let open = self
            .inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = now_seconds();
        // The one chosen is marked spared, so it is not chosen twice while it closes.
        match open.values().find(|entry| {
            entry
                .spared_until
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |until| {
                    (until <= now).then_some(i64::MAX)
                })
                .is_ok()
        }) {
            Some(entry) => {
                entry.evict.notify_one();
                self.inner.evicted.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Admits a connection from `peer`, or says which limit it is over. A full gate that evicts
    /// closes its oldest unproven connection and gives its place to this one.
    pub async fn admit(&self, address: IpAddr) -> Admission {
        let peer = peer_key(address);
        let peer_full = || {
            let peers = self
                .inner
                .peers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            peers.get(&peer).copied().unwrap_or(0) >= self.inner.limits.max_per_peer
        };
        if peer_full() {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            return Admission::PeerFull;
        }
        let slot = match self.inner.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) if self.inner.limits.evict && self.evict_one() => {
                let freed =
                    tokio::time::timeout(EVICTION_WAIT, self.inner.slots.clone().acquire_owned())
                        .await;
                match freed {
                    Ok(Ok(slot)) => slot,
                    _ => {
                        self.inner.refused.fetch_add(1, Ordering::Relaxed);
                        return Admission::ListenerFull;
                    }
                }
            }
            Err(_) => {
                self.inner.refused.fetch_add(1, Ordering::Relaxed);
                return Admission::ListenerFull;
            }
        };
        let mut peers = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = peers.entry(peer).or_insert(0);
        if *count >= self.inner.limits.max_per_peer {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            return Admission::PeerFull;
        }
        *count += 1;
        drop(peers);
        Admission::Admitted(self.ticket(peer, slot))
    }

    /// Waits until every admitted connection has closed, or `deadline` passed; true when all
    /// closed.
    pub async fn drained(&self, deadline: Duration) -> bool {
        let all = u32::try_from(self.inner.limits.max_connections).unwrap_or(u32::MAX);
        tokio::time::timeout(deadline, self.inner.slots.acquire_many(all))
            .await
            .is_ok_and(|permit| permit.is_ok())
    }

    /// The next connection of `listener`, with what the gate says of it; `screen` says which
    /// addresses the listener serves at all (others are [`Admission::Screened`] before any cap
    /// counts them). Errors of accept — out of file descriptors above all — are backed off
    /// (10 ms doubling to 1 s) and logged at most once a second, so a starved process neither
    /// spins nor floods its log.
    pub async fn accept(
        &self,
        listener: &TcpListener,
        screen: &(dyn Fn(IpAddr) -> bool + Send + Sync),
    ) -> (TcpStream, SocketAddr, Admission) {
        let mut backoff = Duration::from_millis(10);
        let mut last_log: Option<Instant> = None;
        let mut failures = 0u64;
        loop {
            match listener.accept().await {
                Ok((stream, address)) => {
                    if failures > 0 {
                        tracing::info!(target: "tsunagi::net", listener = self.inner.name, failures, "accepting again");
                    }
                    let admission = if screen(address.ip()) {
                        self.admit(address.ip()).await
                    } else {
                        self.inner.refused.fetch_add(1, Ordering::Relaxed);
                        Admission::Screened
                    };
                    if !matches!(admission, Admission::Admitted(_)) {
                        self.note_refusal();
                    }
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
                evict: false,
            },
        );
        let first = gate.admit(ip(1)).await;
        let second = gate.admit(ip(1)).await;
        assert!(matches!(first, Admission::Admitted(_)));
        assert!(matches!(second, Admission::Admitted(_)));
        assert!(matches!(gate.admit(ip(1)).await, Admission::PeerFull));
        let third = gate.admit(ip(2)).await;
        assert!(matches!(third, Admission::Admitted(_)));
        assert!(matches!(gate.admit(ip(3)).await, Admission::ListenerFull));
        assert_eq!((gate.open(), gate.refused()), (3, 2));
        drop(first);
        assert!(matches!(gate.admit(ip(1)).await, Admission::Admitted(_)));
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
                evict: false,
            },
        );
        let held = gate.admit(ip(1)).await;
        assert!(!gate.drained(Duration::from_millis(20)).await);
        drop(held);
        assert!(gate.drained(Duration::from_millis(20)).await);
    }

    #[tokio::test]
    async fn a_full_evicting_gate_closes_the_oldest_unproven_connection() {
        let gate = Gate::new(
            "test",
            Limits {
                max_connections: 3,
                max_per_peer: 3,
                evict: true,
            },
        );
        let admitted = |admission: Admission| match admission {
            Admission::Admitted(ticket) => ticket,
            other => panic!("{other:?}"),
        };
        let proven = admitted(gate.admit(ip(1)).await);
        proven.evictable().spare();
        let idle = admitted(gate.admit(ip(2)).await);
        let slow = admitted(gate.admit(ip(3)).await);
        // The idle connection closes when told, as a server's connection task does.
        let closing = tokio::spawn(async move {
            idle.evicted().await;
            drop(idle);
        });
        let newcomer = admitted(gate.admit(ip(4)).await);
        closing.await.unwrap();
        assert_eq!((gate.open(), gate.evicted()), (3, 1));
        // Next the slow one; the proven one is never chosen.
        let closing = tokio::spawn(async move {
            slow.evicted().await;
            drop(slow);
        });
        newcomer.evictable().spare();
        let _another = admitted(gate.admit(ip(5)).await);
        closing.await.unwrap();
        _another.evictable().spare();
        assert!(matches!(gate.admit(ip(6)).await, Admission::ListenerFull));
        drop(proven);
    }

    #[tokio::test]
    async fn sparing_lapses_and_is_withdrawn_and_ipv6_hosts_count_by_their_64() {
        let gate = Gate::new(
            "test",
            Limits {
                max_connections: 2,
                max_per_peer: 2,
                evict: true,
            },
        );
        let admitted = |admission: Admission| match admission {
            Admission::Admitted(ticket) => ticket,
            other => panic!("{other:?}"),
        };
        let expired = admitted(gate.admit(ip(1)).await);
        expired.evictable().spare_for(Duration::ZERO);
        let withdrawn = admitted(gate.admit(ip(2)).await);
        withdrawn.evictable().spare_for(Duration::from_secs(300));
        withdrawn.evictable().expose();
        // A token that expired no longer protects its connection; neither does a failed login.
        let closing = tokio::spawn(async move {
            expired.evicted().await;
        });
        let first = admitted(gate.admit(ip(3)).await);
        closing.await.unwrap();
        first.evictable().spare();
        let closing = tokio::spawn(async move {
            withdrawn.evicted().await;
        });
        let _second = admitted(gate.admit(ip(4)).await);
        closing.await.unwrap();
        // Two addresses of one IPv6 /64 are one peer.
        let six = Gate::new(
            "test",
            Limits {
                max_connections: 8,
                max_per_peer: 1,
                evict: false,
            },
        );
        let _one = admitted(six.admit("2001:db8::1".parse().unwrap()).await);
        assert!(matches!(
            six.admit("2001:db8::2".parse().unwrap()).await,
            Admission::PeerFull
        ));
        assert!(matches!(
            six.admit("2001:db8:0:1::1".parse().unwrap()).await,
            Admission::Admitted(_)
        ));
    }

    /// CPU time of this process so far, in clock ticks (utime + stime of /proc/self/stat).
    fn cpu_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Out of descriptors, accept fails with EMFILE at once, again and again; the gate must wait
    /// between tries rather than spin, and accept the waiting connection once a descriptor is
    /// free. (Each test runs in a process of its own, whose limit it lowers.)
    #[tokio::test]
    async fn accept_errors_are_backed_off_not_spun() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // The client's socket exists before the descriptors run out; its connection waits in
        // the backlog.
        let client = std::net::TcpStream::connect(address).unwrap();
        let limit = getrlimit(Resource::Nofile);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(256),
                maximum: limit.maximum,
            },
        )
        .unwrap();
        let before = cpu_ticks();
        let mut hogs = Vec::new();
        while let Ok(file) = std::fs::File::open("/dev/null") {
            hogs.push(file);
        }
        let gate = Gate::new(
            "test",
            Limits {
                max_connections: 8,
                max_per_peer: 8,
                evict: false,
            },
        );
        let accepting = gate.accept(&listener, &|_| true);
        tokio::pin!(accepting);
        let starved = tokio::time::timeout(Duration::from_millis(1500), &mut accepting).await;
        assert!(
            starved.is_err(),
            "nothing can be accepted without a descriptor"
        );
        // One descriptor for reading /proc (the accept is not polled meanwhile).
        drop(hogs.pop());
        let spent = cpu_ticks() - before;
        assert!(
            spent < 30,
            "{spent} ticks of CPU in 1.5 s of EMFILE: spinning"
        );
        drop(hogs);
        let (_, _, admission) = tokio::time::timeout(Duration::from_secs(3), accepting)
            .await
            .unwrap();
        assert!(matches!(admission, Admission::Admitted(_)));
        drop(client);
    }
}
