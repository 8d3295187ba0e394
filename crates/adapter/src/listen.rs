//! Listen sources: a sender pushes messages as events happen (a hospital EHR over MLLP, a lab
//! company over `POST /hl7v2`), instead of writing storage for the gateway to pull.
//!
//! A [`ListenAdapter`] is started once on a store and returns its [`PushIntake`]; every transport
//! that receives for it — an MLLP listener ([`MllpIntake`]), the HTTP server's `POST /hl7v2` —
//! hands what it receives to that one intake, which commits before it answers. Transports know
//! nothing of the messages; the adapter knows nothing of sockets, TLS or HTTP.

use std::{future::Future, net::IpAddr, pin::Pin, sync::Arc};

use tsunagi_core::clock::Clock;
use tsunagi_store::FeedStore;

use crate::AdapterError;

/// How a message came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An MLLP connection (plain or TLS).
    Mllp,
    /// An HTTP request of a system client (`POST /hl7v2`).
    Http,
}

/// Who sent a message, as its connection tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A verified client: a TLS client certificate's common name, or the system client whose
    /// token posted the message. It names the sender, whatever the message claims.
    Client(String),
    /// No client identity, from this address: the message names its sender, which must be
    /// registered to connect from the address.
    Address(IpAddr),
}

/// One message as a transport received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// How it came.
    pub transport: Transport,
    /// Its bytes, as received.
    pub raw: Vec<u8>,
    /// Who sent it.
    pub sender: Sender,
}

/// What to send back once a message is committed or refused (`None`: the sender asked for no
/// answer).
pub type Answer = Option<Vec<u8>>;

/// The answer-to-be of a queued message. An error means nothing was committed and the sender
/// gets no answer (it resends; duplicates make the resend harmless).
pub type PendingAnswer = Pin<Box<dyn Future<Output = Result<Answer, AdapterError>> + Send>>;

/// Where transports hand what they receive.
#[async_trait::async_trait]
pub trait PushIntake: Send + Sync {
    /// Whether a connection without client identity from `address` could speak for any
    /// registered sender; a transport closes the others at once.
    fn admits(&self, address: IpAddr) -> bool;

    /// Takes one message in arrival order and returns its answer-to-be, so a transport can read
    /// the sender's next message while this one is committed.
    async fn take(&self, pushed: Pushed) -> Result<PendingAnswer, AdapterError>;

    /// Takes one message and waits for its answer.
    async fn exchange(&self, pushed: Pushed) -> Result<Answer, AdapterError> {
        self.take(pushed).await?.await
    }
}

/// What a listen source may use.
#[derive(Clone)]
pub struct ListenContext {
    /// Where resources and the message log go.
    pub store: Arc<dyn FeedStore>,
    /// The clock (fixed in tests).
    pub clock: Arc<dyn Clock>,
}

/// Static description of a listen source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenInfo {
    /// Kind, e.g. `hl7v2`.
    pub kind: &'static str,
    /// The facilities whose senders it receives, one per configured sender.
    pub facilities: Vec<String>,
}

/// A source whose senders push: started once, it receives from every transport.
pub trait ListenAdapter: Send + Sync {
    /// What this source is.
    fn describe(&self) -> ListenInfo;

    /// Starts receiving into the context's store (on the current tokio runtime): the intake
    /// every transport hands messages to.
    fn start(&self, context: &ListenContext) -> Arc<dyn PushIntake>;
}

/// An intake served over MLLP: each frame is taken in order and its answer written back once
/// committed; a frame that cannot be committed closes the connection unanswered.
#[derive(Clone)]
pub struct MllpIntake(pub Arc<dyn PushIntake>);

impl MllpIntake {
    fn pushed(frame: Vec<u8>, peer: &tsunagi_mllp::PeerInfo) -> Pushed {
        Pushed {
            transport: Transport::Mllp,
            raw: frame,
            sender: match &peer.client {
                Some(client) => Sender::Client(client.clone()),
                None => Sender::Address(peer.address.ip()),
            },
        }
    }
}

#[async_trait::async_trait]
impl tsunagi_mllp::FrameHandler for MllpIntake {
    /// A plain connection from an address no sender is registered at is closed at once.
    fn admits(&self, address: IpAddr) -> bool {
        self.0.admits(address)
    }

    async fn handle(
        &self,
        frame: Vec<u8>,
        peer: &tsunagi_mllp::PeerInfo,
    ) -> Result<Option<Vec<u8>>, ()> {
        self.0
            .exchange(Self::pushed(frame, peer))
            .await
            .map_err(|error| {
                tracing::error!(target: "tsunagi::feed", address = %peer.address, %error, "message not answered");
            })
    }

    /// Pipelining: the message is queued in frame order and answered once committed.
    async fn accept(&self, frame: Vec<u8>, peer: &tsunagi_mllp::PeerInfo) -> tsunagi_mllp::Answer {
        let address = peer.address;
        match self.0.take(Self::pushed(frame, peer)).await {
            Ok(answer) => Box::pin(async move {
                answer.await.map_err(|error| {
                    tracing::error!(target: "tsunagi::feed", %address, %error, "message not answered");
                })
            }),
            Err(error) => {
                tracing::error!(target: "tsunagi::feed", %address, %error, "message not queued");
                Box::pin(std::future::ready(Err(())))
            }
        }
    }
}
