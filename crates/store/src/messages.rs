//! The inbound message log: every HL7 v2 message a feed accepted, with its raw bytes, what was done
//! with it and the ACK it was answered with.
//!
//! A feed writes a message's log row in the same batch as the resources it maps to
//! ([`crate::Operation::LogMessage`]), and answers only after that batch committed, so an ACK
//! always stands for durable data. The log is also how duplicates are recognised (sender +
//! MSH-10, compared by content hash) and what the operator's quarantine lists.

/// What became of an inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Mapped and applied to the store.
    Applied,
    /// Kept for the operator: could not be applied (unknown message type, unknown patient…).
    Quarantined,
    /// Reused a control id already logged with other content: refused and kept as evidence.
    Conflict,
    /// Dropped by the operator (kept, never applied).
    Dropped,
}

impl MessageState {
    /// Every state.
    pub const ALL: [MessageState; 4] = [
        Self::Applied,
        Self::Quarantined,
        Self::Conflict,
        Self::Dropped,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Quarantined => "quarantined",
            Self::Conflict => "conflict",
            Self::Dropped => "dropped",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

/// One logged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// Arrival order, assigned by the store (0 in a message being logged).
    pub seq: i64,
    /// How it arrived: `mllp` or `http`.
    pub channel: String,
    /// Who sent it: MSH-3 and MSH-4 as received, joined by `|`. With `control_id`, the
    /// duplicate key.
    pub sender: String,
    /// MSH-10.
    pub control_id: String,
    /// SHA-256 of the message with its segment terminators normalised
    /// (`tsunagi_hl7v2::normal_segments`; rows logged before that hold the raw bytes' hash).
    pub hash: Vec<u8>,
    /// When it was received (microseconds since the epoch).
    pub received: i64,
    /// The registered facility the sender speaks for.
    pub facility: String,
    /// MSH-9 (`ADT^A08`).
    pub message_type: String,
    /// The patient id the message names (PID-3), empty if none.
    pub patient: String,
    /// What became of it.
    pub state: MessageState,
    /// Why it is not applied (empty when applied).
    pub reason: String,
    /// The ACK it was answered with (returned again for a duplicate).
    pub ack: Vec<u8>,
    /// The message as received.
    pub raw: Vec<u8>,
}

/// Reads of the message log.
#[async_trait::async_trait]
pub trait MessageLog: Send + Sync {
    /// The message logged under a duplicate key (conflicts excluded), if any.
    async fn logged_message(
        &self,
        sender: &str,
        control_id: &str,
    ) -> Result<Option<InboundMessage>, crate::StoreError>;

    /// The messages logged under any of `keys` (sender, control id), conflicts excluded: one
    /// lookup for a whole group of arriving messages. The default asks key by key.
    async fn logged_messages(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<InboundMessage>, crate::StoreError> {
        let mut found = Vec::new();
        for (sender, control_id) in keys {
            if let Some(message) = self.logged_message(sender, control_id).await? {
                found.push(message);
            }
        }
        Ok(found)
    }

    /// One message by its sequence number.
    async fn message(&self, seq: i64) -> Result<Option<InboundMessage>, crate::StoreError>;

    /// Messages in any of `states`, oldest first, after sequence number `after`, at most
    /// `limit`.
    async fn messages(
        &self,
        states: &[MessageState],
        after: i64,
        limit: usize,
    ) -> Result<Vec<InboundMessage>, crate::StoreError>;
}
