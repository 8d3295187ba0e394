//! Outbound delivery, the same for every destination: notes and documents queued by the write
//! endpoint go to the facility that owns the patient's record, through the [`Destination`]
//! configured for it (`[[destination]]`).
//!
//! Rules (promise R3):
//! - a delivery is done only when the destination says so (an MLLP destination: the peer's ACK
//!   read and MSA-1 checked, MSA-2 naming the message; a folder: the file synced into place);
//! - a retry is capped exponential backoff, the **same bytes under the same MSH-10**, so the
//!   receiver can recognise a resend;
//! - a refusal, or attempts exhausted → dead letter, for the operator (`tsunagi admin outbox`);
//! - no destination for the facility → retried (the operator may add one).
//!
//! Several nodes may deliver from one database (issue 22): a round first **claims** its due
//! messages for a lease ([`Outbox::claim_due`]), renews each claim just before its attempt and
//! records the outcome under the claim's fence. So no two nodes have one MSH-10 in flight; a
//! node that dies mid-delivery leaves its claims to run out, and another node takes them over
//! (at least once across a crash, the same bytes under the same MSH-10).
//!
//! Every change of state is committed with the Task that shows it on the API; a round's changes
//! commit in one transaction (or sooner, before the claims could run out).

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::{Value, json};
use tsunagi_core::{clock::Clock, metrics, time::format_instant_jst};
use tsunagi_store::{
    Access, Batch, Claim, DeliveryState, DeliveryUpdate, NodeHold, Operation, OutboundMessage,
    Outbox, ResourceWrite, Store, StoreError, governance::AuditRecord,
};

use crate::outbound::{Attempt, Destination};

/// How often a running deliverer checks that it still holds its node's name.
const HOLD_CHECK_EVERY: Duration = Duration::from_secs(5);

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
    /// How long a claim holds a message for one node (renewed before an attempt when less than
    /// half of it and a whole attempt is left; outcomes are committed once half of it has
    /// passed). At least 6 × `timeout` plus room to commit: half of it must outlast an attempt
    /// (a connect, the write and the ACK read, each up to `timeout`).
    pub lease: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30 * 60),
            timeout: Duration::from_secs(30),
            batch: 256,
            lease: Duration::from_secs(200),
        }
    }
}

/// What the store must offer the worker.
pub trait DeliveryStore: Store + Outbox {}
impl<T: Store + Outbox + ?Sized> DeliveryStore for T {}

/// The delivery worker.
pub struct Deliverer<S: ?Sized> {
    store: Arc<S>,
    /// Who claims (host and process), for the operator's eyes in the `outbox` table.
    node: String,
    destinations: HashMap<String, Arc<dyn Destination>>,
    clock: Arc<dyn Clock>,
    options: DeliveryOptions,
    /// This node's name while [`Deliverer::run`] holds it, and when that was last checked.
    name: Option<(NodeHold, tokio::time::Instant)>,
}

impl<S: ?Sized> std::fmt::Debug for Deliverer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut facilities: Vec<&String> = self.destinations.keys().collect();
        facilities.sort();
        f.debug_struct("Deliverer")
            .field("destinations", &facilities)
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
    /// Claims another node took over before their attempt (their lease ran out here).
    pub lost: usize,
}

impl<S: DeliveryStore + ?Sized + 'static> Deliverer<S> {
    /// A worker delivering through `destinations` (one per facility; a later one for the same
    /// facility replaces an earlier one).
    pub fn new(
        store: Arc<S>,
        destinations: Vec<Arc<dyn Destination>>,
        clock: Arc<dyn Clock>,
        options: DeliveryOptions,
    ) -> Self {
        let destinations = destinations
            .into_iter()
            .map(|destination| (destination.describe().facility, destination))
            .collect();
        Self {
            store,
            node: crate::node_name(),
            destinations,
            clock,
            options,
            name: None,
        }
    }

    fn lease_micros(&self) -> i64 {
        i64::try_from(self.options.lease.as_micros()).unwrap_or(i64::MAX)
    }

    /// Attempts every message due now that no other node holds, once each, oldest first.
    pub async fn round(&mut self) -> Result<Round, StoreError> {
        let mut round = Round::default();
        if self.name_lost().await {
            return Err(StoreError::ClaimLost(
                "this node's name is no longer held".to_owned(),
            ));
        }
        let now = self.clock.now_micros();
        let lease = self.lease_micros();
        let claims = self
            .store
            .claim_due(
                &self.node,
                now,
                now.saturating_add(lease),
                self.options.batch,
            )
            .await?;
        // The round's outcomes commit together: one transaction (one fsync) for the round, not
        // one per message, unless half a lease has passed since the oldest uncommitted attempt
        // began (its claim must still hold when its outcome commits). A crash before a commit
        // only means those messages are sent again, under the same MSH-10: at least once.
        //
        // A claim is renewed before an attempt only when less than half a lease, a whole attempt
        // and some slack are left of it (on a fast peer, a round renews nothing); outcomes commit
        // before an attempt that could end past half a lease from the oldest uncommitted one's
        // start. So every attempt starts and ends, and its outcome commits, while its claim
        // holds, with the slack to spare (clock skew between nodes eats into it).
        let attempt_max = self.attempt_limit();
        let attempt_micros = i64::try_from(attempt_max.as_micros()).unwrap_or(i64::MAX);
        // Room for a renewal, the Task's read and the commit after an attempt.
        const SLACK: i64 = 10_000_000;
        let held_until = now.saturating_add(lease);
        let mut outcomes: Vec<Vec<Operation>> = Vec::with_capacity(claims.len());
        let mut oldest: Option<i64> = None;
        for claim in claims {
            // Checked before each attempt too: a round may last minutes.
            if self.name_lost().await {
                self.commit(outcomes).await?;
                return Err(StoreError::ClaimLost(
                    "this node's name is no longer held".to_owned(),
                ));
            }
            let mut began = self.clock.now_micros();
            // The oldest uncommitted outcome must commit while its claim holds: before this
            // attempt, if it could end past half a lease from that one's start.
            if let Some(first) = oldest
                && began + attempt_micros + SLACK - first > lease / 2
            {
                self.commit(std::mem::take(&mut outcomes)).await?;
                oldest = None;
                began = self.clock.now_micros();
            }
            if held_until.saturating_sub(began) < lease / 2 + attempt_micros + SLACK {
                let renewed = self
                    .store
                    .renew_claim(claim.message.seq, claim.fence, began.saturating_add(lease))
                    .await;
                match renewed {
                    Ok(true) => {}
                    Ok(false) => {
                        round.lost += 1;
                        metrics::count(&metrics::OUTBOX_ATTEMPTS, &[("result", "lost")], 1);
                        continue;
                    }
                    Err(error) => {
                        // What was delivered so far is recorded before giving up the round.
                        self.commit(outcomes).await?;
                        return Err(error);
                    }
                }
            }
            let attempted = std::time::Instant::now();
            let attempt = self.attempt(&claim.message, attempt_max).await;
            metrics::observe(
                &metrics::OUTBOX_ATTEMPT,
                &[],
                attempted.elapsed().as_secs_f64(),
            );
            let mut operations = Vec::with_capacity(2);
            let state = match self.record(&claim, attempt, &mut operations).await {
                Ok(state) => state,
                Err(error) => {
                    self.commit(outcomes).await?;
                    return Err(error);
                }
            };
            let result = match state {
                DeliveryState::Delivered => {
                    round.delivered += 1;
                    "delivered"
                }
                DeliveryState::Pending => {
                    round.retrying += 1;
                    "retry"
                }
                DeliveryState::Dead | DeliveryState::Dropped => {
                    round.dead += 1;
                    "dead"
                }
            };
            metrics::count(&metrics::OUTBOX_ATTEMPTS, &[("result", result)], 1);
            outcomes.push(operations);
            oldest.get_or_insert(began);
        }
        self.commit(outcomes).await?;
        Ok(round)
    }

    /// The longest one attempt may take: a connect, the write and the ACK read, each up to the
    /// timeout, and a second more. An attempt past it is cut (and retried).
    fn attempt_limit(&self) -> Duration {
        self.options.timeout.saturating_mul(3) + Duration::from_secs(1)
    }

    /// Commits attempts' outcomes in one transaction. Should one of them have been taken over
    /// by another node meanwhile (its claim ran out), each is committed alone and the one taken
    /// over is left to its new holder.
    async fn commit(&self, outcomes: Vec<Vec<Operation>>) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let operations: Vec<Operation> = outcomes.iter().flatten().cloned().collect();
        match self.store.apply(Batch { operations }).await {
            Err(StoreError::ClaimLost(_)) => {}
            other => return other.map(drop),
        }
        for operations in outcomes {
            match self.store.apply(Batch { operations }).await {
                Err(StoreError::ClaimLost(reason)) => {
                    tracing::warn!(target: "tsunagi::outbox", %reason, "an attempt's claim was taken over; its outcome is left to the new holder");
                }
                other => other.map(drop)?,
            }
        }
        Ok(())
    }

    /// Whether the name [`Deliverer::run`] holds was lost, checked at most every
    /// [`HOLD_CHECK_EVERY`]: a name held through a database session is lost with the session,
    /// and another process of the same name may then take it and release this one's claims.
    /// `false` when no name is held (a round run on its own, as tests do).
    async fn name_lost(&mut self) -> bool {
        let Some((hold, checked)) = &mut self.name else {
            return false;
        };
        if checked.elapsed() < HOLD_CHECK_EVERY {
            return false;
        }
        if hold.still_held().await {
            *checked = tokio::time::Instant::now();
            return false;
        }
        tracing::error!(target: "tsunagi::outbox", node = %self.node, "the hold on this node's name was lost (its database session ended); delivering nothing until it is held again");
        self.name = None;
        true
    }

    /// Holds this node's name, waiting while another live process holds it, then releases
    /// what this node held before it stopped (or crashed, or lost the name): that is safe only
    /// while no other live process goes by the same name, so nothing is delivered before this
    /// process holds its name (a twin is told of in the log, and waited out).
    async fn hold_name(&self, poll: Duration) -> NodeHold {
        let mut warned = false;
        let hold = loop {
            match self.store.hold_node(&self.node).await {
                Ok(Some(hold)) => break hold,
                Ok(None) if !warned => {
                    tracing::error!(target: "tsunagi::outbox", node = %self.node, "another live node is named the same: give each node its own TSUNAGI_NODE; this one delivers nothing until the name is free");
                    warned = true;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(target: "tsunagi::outbox", %error, "the node name could not be held; retrying");
                }
            }
            tokio::time::sleep(poll.max(Duration::from_secs(1))).await;
        };
        match self.store.release_claims(&self.node).await {
            Ok(0) => {}
            Ok(released) => {
                tracing::info!(target: "tsunagi::outbox", node = %self.node, released, "claims of this node's previous run released");
            }
            Err(error) => {
                tracing::error!(target: "tsunagi::outbox", %error, "releasing this node's old claims failed; they wait for their leases");
            }
        }
        hold
    }

    /// Runs rounds until the task is dropped: at once when `wake` is notified (a new message
    /// was queued), else when the next retry is due, at least every `poll`.
    pub async fn run(mut self, wake: Arc<tokio::sync::Notify>, poll: Duration) {
        loop {
            // Nothing is delivered while the name is not held (at start, and after a hold was
            // lost with its database session: `name_lost`).
            if self.name.is_none() {
                let hold = self.hold_name(poll).await;
                self.name = Some((hold, tokio::time::Instant::now()));
            }
            match self.round().await {
                Ok(round) if round.delivered + round.retrying + round.dead + round.lost > 0 => {
                    tracing::info!(target: "tsunagi::outbox", delivered = round.delivered, retrying = round.retrying, dead = round.dead, lost = round.lost, "delivery round");
                    continue;
                }
                Ok(_) => {}
                // A lost name was logged where it was found.
                Err(StoreError::ClaimLost(_)) if self.name.is_none() => {}
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

    async fn attempt(&mut self, message: &OutboundMessage, limit: Duration) -> Attempt {
        match self.destinations.get(&message.destination) {
            None => Attempt::Retry {
                ack: Vec::new(),
                error: format!(
                    "no destination for facility {} is configured",
                    message.destination
                ),
            },
            Some(destination) => {
                match tokio::time::timeout(
                    limit,
                    destination.deliver(message, self.options.timeout),
                )
                .await
                {
                    Ok(attempt) => attempt,
                    Err(_) => Attempt::Retry {
                        ack: Vec::new(),
                        error: format!("the attempt was cut after {limit:?}"),
                    },
                }
            }
        }
    }

    /// The operations that record an attempt's outcome with the Task that shows it.
    async fn record(
        &self,
        claim: &Claim,
        attempt: Attempt,
        operations: &mut Vec<Operation>,
    ) -> Result<DeliveryState, StoreError> {
        let message = &claim.message;
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
            fence: Some(claim.fence),
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
/// fresh attempts; `drop` ends it. Both are committed with the Task and with the act's audit
/// record, which `audit` makes from the message.
pub async fn operator_act<S: DeliveryStore + ?Sized>(
    store: &S,
    seq: i64,
    retry: bool,
    reason: &str,
    now: i64,
    audit: impl FnOnce(&OutboundMessage) -> AuditRecord + Send,
) -> Result<OutboundMessage, StoreError> {
    let message = store
        .outbound(seq)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("outbound message {seq} is not queued")))?;
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
        fence: None,
    }))];
    operations.extend(task_update(store, &message, state, &status, now).await?);
    operations.push(Operation::Audit(Box::new(audit(&message))));
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
}
