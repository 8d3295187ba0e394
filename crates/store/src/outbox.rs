//! The outbound queue: notes and documents written through the API, waiting to be delivered to
//! the hospital that owns the patient's record.
//!
//! A row is written in the same batch as the resource it carries ([`crate::Operation::Enqueue`]),
//! so a created note always has its delivery queued and a failed write queues nothing. The payload
//! (the HL7 v2 message, already encoded) and its control id are fixed when the row is written:
//! every retry sends the same bytes under the same MSH-10, so the receiver can recognise a resend.
//! A row leaves `pending` only when the peer's ACK was read and MSA-1 checked
//! ([`crate::Operation::SetDelivery`]).

/// Where an outbound message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for its next attempt (`next_attempt`).
    Pending,
    /// The peer acknowledged it (AA/CA).
    Delivered,
    /// Refused by the peer (AR/CR) or out of attempts: waits for the operator (dead letter).
    Dead,
    /// Dropped by the operator.
    Dropped,
}

impl DeliveryState {
    /// Every state.
    pub const ALL: [DeliveryState; 4] = [Self::Pending, Self::Delivered, Self::Dead, Self::Dropped];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
            Self::Dropped => "dropped",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

/// One queued delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// Queue order, assigned by the store (0 in a row being enqueued).
    pub seq: i64,
    /// The facility code of the destination (the hospital owning the patient's record).
    pub destination: String,
    /// The resource delivered, `Type/id`.
    pub resource: String,
    /// The Task that shows the delivery's state on the API, `Task/id`.
    pub task: String,
    /// The patient the resource is about (logical id).
    pub patient: String,
    /// MSH-10 of the payload (the same on every attempt).
    pub control_id: String,
    /// The message as it is sent (HL7 v2, ISO-2022-JP).
    pub payload: Vec<u8>,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (microseconds since the epoch).
    pub next_attempt: i64,
    /// What the last attempt met (empty before the first).
    pub last_error: String,
    /// The peer's last ACK as received.
    pub ack: Vec<u8>,
    /// When it was queued (microseconds).
    pub created: i64,
    /// When its state last changed (microseconds).
    pub updated: i64,
}

/// A change of a queued delivery's state after an attempt, or by the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryUpdate {
    /// The row.
    pub seq: i64,
    /// The state it is in now.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt: i64,
    /// What the attempt met.
    pub last_error: String,
    /// The peer's ACK, if one was read.
    pub ack: Vec<u8>,
    /// Now.
    pub updated: i64,
    /// The fence of the claim the attempt was made under ([`Claim::fence`]): the update is
    /// refused ([`crate::StoreError::ClaimLost`]) if another node has claimed the row since.
    /// `None` (the operator's act): applied whatever the claim; the fence moves (the holder
    /// cannot record over it) but the lease stands, so no node sends it again while the
    /// holder's attempt may still be in flight.
    pub fence: Option<i64>,
}

/// Kept while this process is the one live node of its name; dropping it lets the name go.
pub type NodeHold = Box<dyn HeldName>;

/// A node name held ([`Outbox::hold_node`]), which can be checked.
#[async_trait::async_trait]
pub trait HeldName: Send + Sync {
    /// Whether the name is still this process's. PostgreSQL lets a session's lock go when the
    /// session ends (a restart, a dropped connection): then another process may take the name
    /// and release this one's claims, so the caller must stop and hold the name again.
    async fn still_held(&mut self) -> bool;
}

/// A name held for as long as the process lives (a file lock the operating system keeps).
#[derive(Debug)]
pub struct HeldForLife<T>(pub T);

#[async_trait::async_trait]
impl<T: Send + Sync> HeldName for HeldForLife<T> {
    async fn still_held(&mut self) -> bool {
        true
    }
}

/// A due message claimed by one node for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The message.
    pub message: OutboundMessage,
    /// Bumped by every claim: the outcome of an attempt is recorded under it.
    pub fence: i64,
}

/// Reads of the outbound queue.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync {
    /// One row by its sequence number.
    async fn outbound(&self, seq: i64) -> Result<Option<OutboundMessage>, crate::StoreError>;

    /// Claims pending rows due at `now` that no node holds, oldest first, at most `limit`, for
    /// `node` until `lease_until`; each claim bumps the row's fence. Two nodes never hold one
    /// row at once (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: one writer).
    async fn claim_due(
        &self,
        node: &str,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<Claim>, crate::StoreError>;

    /// Holds the name `node` for this process while the returned guard lives (PostgreSQL: a
    /// session advisory lock; SQLite: a file lock beside the database). `None`: another live
    /// process holds that name, so its claims are not this process's to release.
    async fn hold_node(&self, node: &str) -> Result<Option<NodeHold>, crate::StoreError>;

    /// Ends every claim `node` holds (a node starting again after a crash takes back at once
    /// what its previous life held, instead of waiting for the leases to run out); the fences
    /// move, so nothing that life attempted can be recorded. Returns how many were held.
    async fn release_claims(&self, node: &str) -> Result<u64, crate::StoreError>;

    /// Extends a claim to `lease_until` if it is still held under `fence` and still pending;
    /// `false` when another node has claimed the row since (or it is no longer pending).
    async fn renew_claim(
        &self,
        seq: i64,
        fence: i64,
        lease_until: i64,
    ) -> Result<bool, crate::StoreError>;

    /// Rows in any of `states`, oldest first, after sequence number `after`, at most `limit`.
    async fn outbound_list(
        &self,
        states: &[DeliveryState],
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboundMessage>, crate::StoreError>;

    /// When the earliest pending row can next be claimed (its `next_attempt`, or the end of
    /// another node's claim on it), if any: when the worker should wake.
    async fn outbound_next_due(&self) -> Result<Option<i64>, crate::StoreError>;
}
