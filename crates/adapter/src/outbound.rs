//! The outbound side of the adapter framework: a [`Destination`] is how one facility receives
//! what the gateway sends it (notes and documents written through the API), and the
//! [`crate::delivery::Deliverer`] drains the store's outbox through the destinations. A
//! destination adapter (`adapters/outbound-mllp`, `adapters/outbound-folder`) implements only
//! the transport and what counts as accepted; retries, backoff, dead letters, the Task that
//! shows a delivery's state and the operator's acts are the framework's, the same for all.

use std::time::Duration;

use tsunagi_store::OutboundMessage;

/// What one delivery attempt met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver has it (an ACK read and checked, or a file synced into place).
    Delivered {
        /// The receiver's answer, kept with the delivery.
        ack: Vec<u8>,
        /// What shows where it went (a file name), or empty.
        note: String,
    },
    /// Not this time: try again after the backoff (the same bytes under the same MSH-10).
    Retry {
        /// The receiver's answer, if any.
        ack: Vec<u8>,
        /// Why, for the operator.
        error: String,
    },
    /// The receiver refuses it: a dead letter at once.
    Refused {
        /// The receiver's answer.
        ack: Vec<u8>,
        /// Why, for the operator.
        error: String,
    },
}

/// What a destination is, for reports and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationInfo {
    /// Its kind, as `[[destination]] kind` names it (`mllp`, `folder`).
    pub kind: &'static str,
    /// The 10-digit code of the facility it delivers to.
    pub facility: String,
    /// Where (an address, a folder), for the operator.
    pub address: String,
}

/// How one facility receives. One delivery at a time per destination: the deliverer never
/// calls [`Destination::deliver`] concurrently on one destination.
#[async_trait::async_trait]
pub trait Destination: Send + Sync {
    /// Kind, facility and address.
    fn describe(&self) -> DestinationInfo;

    /// Hands `message` over, waiting at most `timeout` for each step (connecting, the answer).
    /// Never panics and never returns an error: whatever happened is an [`Attempt`].
    async fn deliver(&self, message: &OutboundMessage, timeout: Duration) -> Attempt;
}
