//! The HL7 v2 feed adapter: a hospital EHR (or a lab company) that pushes messages as events
//! happen, over MLLP or HTTP, instead of writing SS-MIX2 storage for Tsunagi to pull.
//!
//! [`Intake`] receives raw messages from any transport and answers each with the ACK to send.
//! One writer task takes messages in arrival order and, for each:
//! 1. decodes (ISO-2022-JP before splitting) and parses it; unreadable → AR, nothing stored;
//! 2. finds the registered feed it speaks for ([`Feeds`]: the connection's client certificate,
//!    else MSH-3/MSH-4); unknown sender → AR, nothing stored;
//! 3. recognises a duplicate by sender + MSH-10: the same content (SHA-256) → the stored ACK
//!    again and nothing written; other content → AR, and the message is kept as a conflict;
//! 4. derives the record the message belongs to ([`tsunagi_mapping::pushed::identify`]) and
//!    maps it with the same mapping as SS-MIX2 files, onto the same source key, so a pushed
//!    message and the same message read from storage are one record;
//! 5. anything that cannot be applied (an unsupported type, an unknown patient, a mapping error)
//!    is kept in quarantine and answered AE / CE.
//!
//! The messages taken together (at most [`IntakeOptions::group`]) are committed in **one
//! transaction** — resources and message-log rows — and only then answered: commit-before-ACK
//! with group commit. If the store fails, nobody is answered (the transport closes the
//! connection, the sender resends, duplicates make the resend harmless). Messages of one patient
//! are applied in arrival order because there is one writer.

mod decision;
mod feeds;
mod process;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

pub use feeds::{FeedConfig, Feeds, Peer, SenderError};
pub use process::{Channel, Received, Reply};
use tokio::sync::{mpsc, oneshot};
use tsunagi_adapter::{
    AdapterError,
    listen::{
        ListenAdapter, ListenContext, ListenInfo, PendingAnswer, PushIntake, Pushed, Sender,
        Transport,
    },
};
use tsunagi_core::{clock::Clock, metrics};
use tsunagi_store::{Batch, StoreError};

/// Why a message got no answer.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The store could not commit: the sender must resend.
    #[error("the store cannot commit: {0}")]
    Store(#[from] StoreError),
    /// The intake has stopped.
    #[error("the intake has stopped")]
    Stopped,
}

/// Tuning.
#[derive(Debug, Clone, Copy)]
pub struct IntakeOptions {
    /// Messages committed together at most.
    pub group: usize,
    /// Messages waiting for the writer at most (senders wait beyond it).
    pub queue: usize,
}

impl Default for IntakeOptions {
    fn default() -> Self {
        Self {
            group: 512,
            queue: 4096,
        }
    }
}

pub use tsunagi_store::FeedStore;

type Job = (Received, oneshot::Sender<Result<Reply, IntakeError>>);

/// The running intake: submit messages, get their ACKs.
#[derive(Clone)]
pub struct Intake {
    sender: mpsc::Sender<Job>,
    feeds: Arc<Feeds>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").finish_non_exhaustive()
    }
}

impl Intake {
    /// Starts the writer task on the current tokio runtime.
    pub fn start<S: FeedStore + ?Sized + 'static>(
        store: Arc<S>,
        feeds: Arc<Feeds>,
        clock: Arc<dyn Clock>,
        options: IntakeOptions,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(options.queue.max(1));
        let processor = process::Processor::new(store, feeds.clone(), clock);
        tokio::spawn(writer(processor, receiver, options.group.max(1)));
        Self { sender, feeds }
    }

    /// Whether a connection without client identity from `address` could speak for any sender.
    pub fn admits(&self, address: std::net::IpAddr) -> bool {
        self.feeds.admits(address)
    }

    /// Submits one message and waits until it is committed (or refused); the reply holds the ACK
    /// to send.
    pub async fn submit(&self, received: Received) -> Result<Reply, IntakeError> {
        self.enqueue(received).await?.await
    }

    /// Queues one message for the writer (messages are applied in the order they are queued)
    /// and returns the future of its reply, so a transport can take the sender's next message
    /// before this one is committed.
    pub async fn enqueue(
        &self,
        received: Received,
    ) -> Result<impl Future<Output = Result<Reply, IntakeError>> + Send + 'static, IntakeError>
    {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((received, reply))
            .await
            .map_err(|_| IntakeError::Stopped)?;
        Ok(async move { answer.await.map_err(|_| IntakeError::Stopped)? })
    }
}

/// Applies a quarantined message again (after its cause was fixed: the patient registered, a
/// code table completed…). The message keeps its place in the log; when it can now be applied
/// its resources and its new state commit together, with the operator's act (`audit` makes its
/// record from the outcome).
pub async fn retry<S: FeedStore + ?Sized + 'static>(
    store: Arc<S>,
    feeds: Arc<Feeds>,
    clock: Arc<dyn Clock>,
    seq: i64,
    audit: impl FnOnce(&RetryOutcome) -> tsunagi_store::governance::AuditRecord + Send,
) -> Result<process::RetryOutcome, IntakeError> {
    process::Processor::new(store, feeds, clock)
        .retry(seq, audit)
        .await
}

pub use process::RetryOutcome;

impl From<Pushed> for Received {
    fn from(pushed: Pushed) -> Self {
        Self {
            channel: match pushed.transport {
                Transport::Mllp => Channel::Mllp,
                Transport::Http => Channel::Http,
            },
            raw: pushed.raw,
            origin: match pushed.sender {
                Sender::Client(client) => Peer::Client(client),
                Sender::Address(address) => Peer::Address(address),
            },
        }
    }
}

impl From<IntakeError> for AdapterError {
    fn from(error: IntakeError) -> Self {
        match error {
            IntakeError::Store(error) => Self::Store(error),
            IntakeError::Stopped => Self::Stopped,
        }
    }
}

#[async_trait::async_trait]
impl PushIntake for Intake {
    fn admits(&self, address: std::net::IpAddr) -> bool {
        self.feeds.admits(address)
    }

    async fn take(&self, pushed: Pushed) -> Result<PendingAnswer, AdapterError> {
        let reply = self.enqueue(pushed.into()).await?;
        Ok(Box::pin(async move { Ok(reply.await?.ack) }))
    }
}

/// The HL7 v2 feed as a listen source (`[[source]] kind = "hl7v2"`): every configured sender
/// shares one intake, so messages of one patient are applied in arrival order whatever the
/// transport.
#[derive(Debug, Clone)]
pub struct Hl7v2Listener {
    feeds: Arc<Feeds>,
    options: IntakeOptions,
}

impl Hl7v2Listener {
    /// The source of these senders.
    pub fn new(feeds: Arc<Feeds>, options: IntakeOptions) -> Self {
        Self { feeds, options }
    }
}

impl ListenAdapter for Hl7v2Listener {
    fn describe(&self) -> ListenInfo {
        ListenInfo {
            kind: "hl7v2",
            facilities: self
                .feeds
                .all()
                .iter()
                .map(|feed| feed.facility.as_str().to_owned())
                .collect(),
        }
    }

    fn start(&self, context: &ListenContext) -> Arc<dyn PushIntake> {
        Arc::new(Intake::start(
            context.store.clone(),
            self.feeds.clone(),
            context.clock.clone(),
            self.options,
        ))
    }
}

/// Counts ACK control ids within this process.
static ACK_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn next_ack_number() -> u64 {
    ACK_COUNTER.fetch_add(1, Ordering::Relaxed)
}

async fn writer<S: FeedStore + ?Sized>(
    mut processor: process::Processor<S>,
    mut receiver: mpsc::Receiver<Job>,
    group: usize,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(group);
    loop {
        if receiver.recv_many(&mut jobs, group).await == 0 {
            return;
        }
        processor.begin_group();
        let raws: Vec<&[u8]> = jobs
            .iter()
            .map(|(received, _)| received.raw.as_slice())
            .collect();
        if let Err(error) = processor.prefetch(&raws).await {
            // Nothing is decided without the log: nobody is answered, senders resend.
            tracing::error!(target: "tsunagi::feed", %error, "duplicate lookup failed");
            for (_, reply) in jobs.drain(..) {
                let _ = reply.send(Err(IntakeError::Store(error.clone())));
            }
            continue;
        }
        let mut prepared = Vec::with_capacity(jobs.len());
        for (received, _) in &jobs {
            prepared.push(processor.prepare(received).await);
        }
        let mut batch = Batch::default();
        // Moved, not copied: if the group fails, each message is prepared again from its bytes.
        for prepared in prepared.iter_mut().flatten() {
            batch.operations.append(&mut prepared.operations);
        }
        let started = std::time::Instant::now();
        let committed = if batch.operations.is_empty() {
            Ok(())
        } else {
            match processor.settled(batch).await {
                Ok(batch) => processor.store().apply(batch).await.map(|_| ()),
                Err(error) => Err(error),
            }
        };
        match committed {
            Ok(()) => {
                metrics::observe(&metrics::HL7V2_COMMIT, &[], started.elapsed().as_secs_f64());
                processor.committed();
                for ((_, reply), item) in jobs.drain(..).zip(prepared) {
                    let item = item.map(|prepared| prepared.reply).map_err(Into::into);
                    count_answer(&item);
                    let _ = reply.send(item);
                }
            }
            Err(error) => {
                // One message may carry what the store refuses (a mapping that lists a resource
                // twice…): commit each on its own, so only that one is quarantined.
                tracing::warn!(target: "tsunagi::feed", %error, "group commit failed; committing one by one");
                processor.begin_group();
                for (received, reply) in jobs.drain(..) {
                    let result = processor.commit_alone(&received).await;
                    count_answer(&result);
                    let _ = reply.send(result);
                }
            }
        }
    }
}

/// Counts an answered message in `/metrics` (one not answered is not counted: it comes again).
fn count_answer(answer: &Result<Reply, IntakeError>) {
    let Ok(reply) = answer else {
        return;
    };
    let outcome = match reply.outcome {
        tsunagi_hl7v2::ack::Outcome::Accepted => "accepted",
        tsunagi_hl7v2::ack::Outcome::Error => "error",
        tsunagi_hl7v2::ack::Outcome::Rejected => "rejected",
    };
    let duplicate = if reply.duplicate { "true" } else { "false" };
    metrics::count(
        &metrics::HL7V2_MESSAGES,
        &[("outcome", outcome), ("duplicate", duplicate)],
        1,
    );
}
