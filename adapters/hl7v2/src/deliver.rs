//! Outbound delivery: notes and documents queued by the write endpoint go to the hospital that
//! owns the patient's record, over MLLP or into its inbound folder.
//!
//! Rules (promise R3):
//! - a delivery is done only when the peer's ACK was read and MSA-1 checked (MSA-2 must name the
//!   message); AA/CA → delivered;
//! - AE/CE, a timeout, a dropped connection or an unreadable answer → retried with capped
//!   exponential backoff, the **same bytes under the same MSH-10**, so the receiver can
//!   recognise a resend;
//! - AR/CR, or attempts exhausted → dead letter, for the operator (`tsunagi admin outbox`);
//! - a folder delivery is done when the file is written, synced and renamed into place.
//!
//! Every change of state is committed with the Task that shows it on the API; a round's changes
//! commit in one transaction.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde_json::{Value, json};
use tsunagi_core::{clock::Clock, time::format_instant_jst};
use tsunagi_hl7v2::{
    Message,
    ack::{AckCode, read_ack},
    charset,
};
use tsunagi_mllp::client::Connection;
use tsunagi_store::{
    Access, Batch, DeliveryState, DeliveryUpdate, Operation, OutboundMessage, Outbox,
    ResourceWrite, Store, StoreError,
};

/// How a hospital receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An MLLP listener of its EHR (`host:port`).
    Mllp(String),
    /// Its inbound folder; each message becomes `<MSH-10>.hl7`.
    Folder(PathBuf),
}

/// Retry and timeout settings.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryOptions {
    /// Attempts before a message becomes a dead letter.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubled after each, up to `max_backoff`.
    pub first_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// How long to wait for a connection or an ACK.
    pub timeout: Duration,
    /// Rows taken per round.
    pub batch: usize,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30 * 60),
            timeout: Duration::from_secs(30),
            batch: 256,
        }
    }
}

/// What the store must offer the worker.
pub trait DeliveryStore: Store + Outbox {}
impl<T: Store + Outbox + ?Sized> DeliveryStore for T {}

/// What one attempt met.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    Delivered { ack: Vec<u8>, note: String },
    Retry { ack: Vec<u8>, error: String },
    Refused { ack: Vec<u8>, error: String },
}

/// The delivery worker.
pub struct Deliverer<S: ?Sized> {
    store: Arc<S>,
    routes: HashMap<String, Route>,
    clock: Arc<dyn Clock>,
    options: DeliveryOptions,
    connections: HashMap<String, Connection>,
}

impl<S: ?Sized> std::fmt::Debug for Deliverer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Messages delivered.
    pub delivered: usize,
    /// Messages to be tried again later.
    pub retrying: usize,
    /// Messages now in the dead-letter list.
    pub dead: usize,
}

impl<S: DeliveryStore + ?Sized + 'static> Deliverer<S> {
    /// A worker delivering to `routes` (facility code → route).
    pub fn new(
        store: Arc<S>,
        routes: HashMap<String, Route>,
        clock: Arc<dyn Clock>,
        options: DeliveryOptions,
    ) -> Self {
        Self {
            store,
            routes,
            clock,
            options,
            connections: HashMap::new(),
        }
    }

    /// Attempts every message due now, once each, oldest first.
    pub async fn round(&mut self) -> Result<Round, StoreError> {
        let mut round = Round::default();
        let due = self
            .store
            .outbound_due(self.clock.now_micros(), self.options.batch)
            .await?;
        // The round's outcomes commit together: one transaction (one fsync) for the round, not
        // one per message. A crash before that commit only means the round's messages are sent
        // again, under the same MSH-10 — at least once, as promised.
        let mut operations = Vec::with_capacity(due.len() * 2);
        for message in due {
            let attempt = self.attempt(&message).await;
            let state = self.record(&message, attempt, &mut operations).await?;
            match state {
                DeliveryState::Delivered => round.delivered += 1,
                DeliveryState::Pending => round.retrying += 1,
                DeliveryState::Dead | DeliveryState::Dropped => round.dead += 1,
            }
        }
        if !operations.is_empty() {
            self.store.apply(Batch { operations }).await?;
        }
        Ok(round)
    }

    /// Runs rounds until the task is dropped: at once when `wake` is notified (a new message
    /// was queued), else when the next retry is due, at least every `poll`.
    pub async fn run(mut self, wake: Arc<tokio::sync::Notify>, poll: Duration) {
        loop {
            match self.round().await {
                Ok(round) if round.delivered + round.retrying + round.dead > 0 => {
                    tracing::info!(target: "tsunagi::outbox", delivered = round.delivered, retrying = round.retrying, dead = round.dead, "delivery round");
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(target: "tsunagi::outbox", %error, "delivery round failed");
                }
            }
            let wait = match self.store.outbound_next_due().await {
                Ok(Some(due)) => {
                    let micros = due.saturating_sub(self.clock.now_micros()).max(0);
                    Duration::from_micros(u64::try_from(micros).unwrap_or(0)).min(poll)
                }
                _ => poll,
            };
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn attempt(&mut self, message: &OutboundMessage) -> Attempt {
        match self.routes.get(&message.destination).cloned() {
            None => Attempt::Retry {
                ack: Vec::new(),
                error: format!("no route to facility {} is configured", message.destination),
            },
            Some(Route::Folder(folder)) => match write_file(&folder, message).await {
                Ok(path) => Attempt::Delivered {
                    ack: Vec::new(),
                    note: format!("written to {}", path.display()),
                },
                Err(error) => Attempt::Retry {
                    ack: Vec::new(),
                    error: format!("cannot write into {}: {error}", folder.display()),
                },
            },
            Some(Route::Mllp(address)) => self.send(&address, message).await,
        }
    }

    async fn send(&mut self, address: &str, message: &OutboundMessage) -> Attempt {
        let timeout = self.options.timeout;
        let destination = message.destination.clone();
        if !self.connections.contains_key(&destination) {
            match tokio::time::timeout(timeout, Connection::connect(address)).await {
                Ok(Ok(connection)) => {
                    self.connections.insert(destination.clone(), connection);
                }
                Ok(Err(error)) => {
                    return Attempt::Retry {
                        ack: Vec::new(),
                        error: format!("cannot connect to {address}: {error}"),
                    };
                }
                Err(_) => {
                    return Attempt::Retry {
                        ack: Vec::new(),
                        error: format!("no connection to {address} within {timeout:?}"),
                    };
                }
            }
        }
        let Some(connection) = self.connections.get_mut(&destination) else {
            return Attempt::Retry {
                ack: Vec::new(),
                error: "no connection".to_owned(),
            };
        };
        let reply = connection.request(&message.payload, timeout).await;
        let (attempt, clean) = match reply {
            Err(error) => (
                Attempt::Retry {
                    ack: Vec::new(),
                    error: format!("{address}: {error}"),
                },
                false,
            ),
            Ok(reply) => judge(&reply, &message.control_id),
        };
        // After anything but a valid ACK of this message the connection's state is unknown
        // (a late ACK could be read as the next message's): start afresh.
        if !clean {
            self.connections.remove(&destination);
        }
        attempt
    }

    /// The operations that record an attempt's outcome with the Task that shows it.
    async fn record(
        &self,
        message: &OutboundMessage,
        attempt: Attempt,
        operations: &mut Vec<Operation>,
    ) -> Result<DeliveryState, StoreError> {
        let now = self.clock.now_micros();
        let attempts = message.attempts.saturating_add(1);
        let (state, next_attempt, error, ack, status) = match attempt {
            Attempt::Delivered { ack, note } => (
                DeliveryState::Delivered,
                message.next_attempt,
                note,
                ack,
                "delivered".to_owned(),
            ),
            Attempt::Refused { ack, error } => (
                DeliveryState::Dead,
                message.next_attempt,
                error.clone(),
                ack,
                format!("refused: {error}"),
            ),
            Attempt::Retry { ack, error } if attempts >= self.options.max_attempts => (
                DeliveryState::Dead,
                message.next_attempt,
                error.clone(),
                ack,
                format!("gave up after {attempts} attempts: {error}"),
            ),
            Attempt::Retry { ack, error } => {
                let wait = backoff(&self.options, attempts);
                let next = now.saturating_add(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX));
                (
                    DeliveryState::Pending,
                    next,
                    error.clone(),
                    ack,
                    format!(
                        "attempt {attempts} failed ({error}); next at {}",
                        format_instant_jst(next)
                    ),
                )
            }
        };
        match state {
            DeliveryState::Delivered => {}
            DeliveryState::Dead => {
                tracing::warn!(target: "tsunagi::outbox", resource = %message.resource, destination = %message.destination, %error, "dead letter");
            }
            _ => {
                tracing::info!(target: "tsunagi::outbox", resource = %message.resource, destination = %message.destination, %error, attempts, "will retry");
            }
        }
        operations.push(Operation::SetDelivery(Box::new(DeliveryUpdate {
            seq: message.seq,
            state,
            attempts,
            next_attempt,
            last_error: error,
            ack,
            updated: now,
        })));
        operations.extend(task_update(self.store.as_ref(), message, state, &status, now).await?);
        Ok(state)
    }
}

/// The wait after `attempts` failed attempts: first_backoff × 2^(attempts−1), capped.
pub fn backoff(options: &DeliveryOptions, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1));
    options
        .first_backoff
        .saturating_mul(factor)
        .min(options.max_backoff)
}

/// What a reply says about `control_id`, and whether it was a valid ACK of it.
fn judge(reply: &[u8], control_id: &str) -> (Attempt, bool) {
    let unreadable = |why: String| {
        (
            Attempt::Retry {
                ack: reply.to_vec(),
                error: why,
            },
            false,
        )
    };
    let Ok((text, _)) = charset::decode(reply) else {
        return unreadable("the answer is not HL7 (undecodable)".to_owned());
    };
    let Ok(parsed) = Message::parse(&text) else {
        return unreadable("the answer is not an HL7 message".to_owned());
    };
    let Ok(ack) = read_ack(&parsed) else {
        return unreadable("the answer has no valid MSA-1".to_owned());
    };
    if ack.control_id != control_id {
        return unreadable(format!(
            "the ACK acknowledges {:?}, not {control_id:?}",
            ack.control_id
        ));
    }
    let text = if ack.text.is_empty() {
        ack.code.as_str().to_owned()
    } else {
        format!("{}: {}", ack.code.as_str(), ack.text)
    };
    let attempt = match ack.code {
        AckCode::AA | AckCode::CA => Attempt::Delivered {
            ack: reply.to_vec(),
            note: String::new(),
        },
        AckCode::AE | AckCode::CE => Attempt::Retry {
            ack: reply.to_vec(),
            error: text,
        },
        AckCode::AR | AckCode::CR => Attempt::Refused {
            ack: reply.to_vec(),
            error: text,
        },
    };
    (attempt, true)
}

/// Writes `<MSH-10>.hl7` into `folder`: a temporary name first, synced, then renamed, so the
/// hospital never reads half a file; a rewrite after a crash replaces it with the same bytes.
async fn write_file(folder: &Path, message: &OutboundMessage) -> std::io::Result<PathBuf> {
    let name: String = message
        .control_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let path = folder.join(format!("{name}.hl7"));
    let temporary = folder.join(format!(".{name}.hl7.partial"));
    let payload = message.payload.clone();
    let (done, file) = (path.clone(), temporary.clone());
    let folder = folder.to_owned();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut handle = std::fs::File::create(&file)?;
        handle.write_all(&payload)?;
        handle.sync_all()?;
        std::fs::rename(&file, &done)?;
        std::fs::File::open(&folder)?.sync_all()
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(path)
}

/// The Task of a delivery rewritten to show `state`.
async fn task_update<S: Store + ?Sized>(
    store: &S,
    message: &OutboundMessage,
    state: DeliveryState,
    status_text: &str,
    now: i64,
) -> Result<Option<Operation>, StoreError> {
    let Some(id) = message.task.strip_prefix("Task/") else {
        return Ok(None);
    };
    let Some(current) = store.read(&Access::Unrestricted, "Task", id).await? else {
        return Ok(None);
    };
    let Some(mut task) = current.to_json()? else {
        return Ok(None);
    };
    let status = match state {
        DeliveryState::Pending => "requested",
        DeliveryState::Delivered => "completed",
        DeliveryState::Dead => "failed",
        DeliveryState::Dropped => "cancelled",
    };
    task["status"] = json!(status);
    task["businessStatus"] = json!({"text": status_text});
    task["lastModified"] = json!(format_instant_jst(now));
    if let Value::Object(fields) = &mut task {
        fields.remove("meta");
        fields.remove("output");
    }
    task["meta"] = json!({"source": format!("urn:tsunagi:outbox#{}", message.control_id)});
    if state == DeliveryState::Delivered {
        task["output"] = json!([{
            "type": {"text": "delivered"},
            "valueString": format!("{} accepted {} ({} attempts)", message.destination, message.control_id, message.attempts + 1)
        }]);
    }
    Ok(Some(Operation::ReplaceSource {
        source_key: format!("outbox:{}", message.task),
        facility: message.destination.clone(),
        resources: vec![ResourceWrite::from_json("Task", id, &task)?],
    }))
}

/// The operator's acts on a delivery: `retry` makes a dead (or pending) message due now with
/// fresh attempts; `drop` ends it. Both are committed with the Task.
pub async fn operator_act<S: DeliveryStore + ?Sized>(
    store: &S,
    seq: i64,
    retry: bool,
    reason: &str,
    now: i64,
) -> Result<OutboundMessage, StoreError> {
    let message = store
        .outbound(seq)
        .await?
        .ok_or_else(|| StoreError::Invalid(format!("outbound message {seq} is not queued")))?;
    let allowed = match message.state {
        DeliveryState::Pending | DeliveryState::Dead => true,
        DeliveryState::Dropped => retry,
        DeliveryState::Delivered => false,
    };
    if !allowed {
        return Err(StoreError::Invalid(format!(
            "outbound message {seq} is {}",
            message.state.as_str()
        )));
    }
    let (state, attempts, status) = if retry {
        (
            DeliveryState::Pending,
            0,
            format!("retried by the operator: {reason}"),
        )
    } else {
        (
            DeliveryState::Dropped,
            message.attempts,
            format!("dropped by the operator: {reason}"),
        )
    };
    let mut operations = vec![Operation::SetDelivery(Box::new(DeliveryUpdate {
        seq,
        state,
        attempts,
        next_attempt: now,
        last_error: status.clone(),
        ack: message.ack.clone(),
        updated: now,
    }))];
    operations.extend(task_update(store, &message, state, &status, now).await?);
    store.apply(Batch { operations }).await?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let options = DeliveryOptions {
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            ..DeliveryOptions::default()
        };
        let waits: Vec<u64> = (1..=6).map(|n| backoff(&options, n).as_secs()).collect();
        assert_eq!(waits, vec![5, 10, 20, 40, 60, 60]);
        assert_eq!(backoff(&options, 200).as_secs(), 60);
    }

    #[test]
    fn an_ack_counts_only_for_the_message_it_names() {
        let ack = |code: &str, id: &str| {
            format!("MSH|^~\\&|EHR|H|TSUNAGI|T|20261124||ACK^T02^ACK|A1|P|2.5\rMSA|{code}|{id}\r")
        };
        let judged = |code: &str, id: &str| judge(ack(code, id).as_bytes(), "T1");
        assert!(matches!(
            judged("AA", "T1"),
            (Attempt::Delivered { .. }, true)
        ));
        assert!(matches!(
            judged("CA", "T1"),
            (Attempt::Delivered { .. }, true)
        ));
        assert!(matches!(judged("AE", "T1"), (Attempt::Retry { .. }, true)));
        assert!(matches!(
            judged("AR", "T1"),
            (Attempt::Refused { .. }, true)
        ));
        assert!(matches!(judged("AA", "T2"), (Attempt::Retry { .. }, false)));
        assert!(matches!(judged("XX", "T1"), (Attempt::Retry { .. }, false)));
        assert!(matches!(
            judge(b"garbage", "T1"),
            (Attempt::Retry { .. }, false)
        ));
    }
}
