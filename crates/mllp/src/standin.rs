//! A hospital EHR stand-in: an MLLP peer that receives what Tsunagi delivers and answers as told
//! — ACK, NACK (AE or AR), slowly, by dropping the connection, or with garbage. The tests of
//! outbound delivery use it, and so do `tsunagi demo` and `tsunagi bench outbound`.
//!
//! Like a careful receiver it recognises a resend by MSH-10: [`StandIn::accepted`] lists each
//! control id it accepted once, however often it was delivered.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::net::TcpListener;
use tsunagi_hl7v2::{
    Message,
    ack::{AckCode, Header, Responder, write_ack},
    charset,
};

use crate::{FrameHandler, PeerInfo, ServerOptions};

/// How the stand-in answers one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// AA.
    Accept,
    /// AE: try again later.
    Error,
    /// AR: never.
    Reject,
    /// AA after this long.
    Slow(Duration),
    /// Closes the connection without an answer (after reading the message).
    Drop,
    /// Answers with a frame that is not HL7.
    Garbage,
}

#[derive(Debug, Default)]
struct Inner {
    script: VecDeque<Behaviour>,
    default: Option<Behaviour>,
    received: usize,
    accepted: BTreeMap<String, usize>,
    /// Control ids being answered now, and how many times one arrived while it already was.
    in_flight: BTreeMap<String, usize>,
    overlapped: usize,
    last: Vec<u8>,
    /// Where each received message is also sent, with how it was answered (`tsunagi standin`).
    watcher: Option<tokio::sync::mpsc::UnboundedSender<(Vec<u8>, Behaviour)>>,
}

/// A running stand-in.
#[derive(Debug, Clone)]
pub struct StandIn {
    address: std::net::SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

struct Handler(Arc<Mutex<Inner>>);

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait::async_trait]
impl FrameHandler for Handler {
    async fn handle(&self, frame: Vec<u8>, _peer: &PeerInfo) -> Result<Option<Vec<u8>>, ()> {
        let behaviour = {
            let mut inner = lock(&self.0);
            inner.received += 1;
            inner.last.clone_from(&frame);
            let default = inner.default.unwrap_or(Behaviour::Accept);
            let behaviour = inner.script.pop_front().unwrap_or(default);
            if let Some(watcher) = &inner.watcher {
                let _ = watcher.send((frame.clone(), behaviour));
            }
            behaviour
        };
        let code = match behaviour {
            Behaviour::Drop => return Err(()),
            Behaviour::Garbage => return Ok(Some(b"\x00garbage, not HL7".to_vec())),
            Behaviour::Slow(_) | Behaviour::Accept => AckCode::AA,
            Behaviour::Error => AckCode::AE,
            Behaviour::Reject => AckCode::AR,
        };
        let Ok((text, _)) = charset::decode(&frame) else {
            return Ok(Some(b"MSA|AR".to_vec()));
        };
        let Ok(message) = Message::parse(&text) else {
            return Ok(Some(b"MSA|AR".to_vec()));
        };
        let header = Header::of(&message);
        // Accepted (committed, as an EHR would) before a slow answer is written.
        {
            let mut inner = lock(&self.0);
            if code == AckCode::AA {
                *inner.accepted.entry(header.control_id.clone()).or_default() += 1;
            }
            let in_flight = inner
                .in_flight
                .entry(header.control_id.clone())
                .or_default();
            *in_flight += 1;
            if *in_flight > 1 {
                inner.overlapped += 1;
            }
        }
        if let Behaviour::Slow(pause) = behaviour {
            tokio::time::sleep(pause).await;
        }
        {
            let mut inner = lock(&self.0);
            if let Some(in_flight) = inner.in_flight.get_mut(&header.control_id) {
                *in_flight = in_flight.saturating_sub(1);
            }
        }
        let ack = write_ack(
            &header,
            &Responder {
                application: "EHR",
                facility: "",
                timestamp: "20261124000000+0900",
                control_id: &format!("ACK{}", header.control_id),
            },
            code,
            &[],
        );
        Ok(Some(ack.into_bytes()))
    }
}

impl StandIn {
    /// Starts listening on `address` (`127.0.0.1:0` for any free port).
    pub async fn start(address: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner::default()));
        tokio::spawn(crate::serve(
            listener,
            None,
            ServerOptions {
                idle_timeout: Duration::from_secs(600),
                ..ServerOptions::default()
            },
            Arc::new(Handler(inner.clone())),
        ));
        Ok(Self { address, inner })
    }

    /// Where it listens.
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// Answers the next messages with these behaviours, in order.
    pub fn script(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        lock(&self.inner).script.extend(behaviours);
    }

    /// How it answers once the script is used up (AA unless set).
    pub fn set_default(&self, behaviour: Behaviour) {
        lock(&self.inner).default = Some(behaviour);
    }

    /// Every message received from now on, with how it is answered, as it arrives.
    pub fn watch(&self) -> tokio::sync::mpsc::UnboundedReceiver<(Vec<u8>, Behaviour)> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        lock(&self.inner).watcher = Some(sender);
        receiver
    }

    /// Messages received, resends included.
    pub fn received(&self) -> usize {
        lock(&self.inner).received
    }

    /// How many times a message arrived while the same control id was still being answered
    /// (two senders had one MSH-10 in flight at once).
    pub fn overlapped(&self) -> usize {
        lock(&self.inner).overlapped
    }

    /// Each control id accepted, with how often it was accepted (more than 1: a resend).
    pub fn accepted(&self) -> BTreeMap<String, usize> {
        lock(&self.inner).accepted.clone()
    }

    /// The last message received, as received.
    pub fn last(&self) -> Vec<u8> {
        lock(&self.inner).last.clone()
    }
}
