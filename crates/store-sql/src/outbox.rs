//! The outbound queue on either database (`outbox`): rows written inside a batch's transaction
//! (both engines call [`insert`] and [`update`] from their write path), and the [`Outbox`]
//! reads.

use sqlx::Database;
use tsunagi_store::{
    Claim, DeliveryState, DeliveryUpdate, NodeHold, OutboundMessage, Outbox, StoreError,
};

use crate::{
    dialect::{Cells, Dialect, count, stmt},
    store::{Engine, SqlStore},
};

type Connection<D> = <D as Database>::Connection;

const COLUMNS: &str = "seq, destination, resource, task, patient, control_id, payload, state, \
                       attempts, next_attempt, last_error, ack, created, updated";

/// Queues a delivery inside the batch's transaction. A second delivery of the same resource to
/// the same destination fails the statement (and so the batch).
pub async fn insert<D: Dialect>(
    connection: &mut Connection<D>,
    message: &OutboundMessage,
) -> Result<(), StoreError> {
    stmt(
        "INSERT INTO outbox (destination, resource, task, patient, control_id, payload, state, \
         attempts, next_attempt, last_error, ack, created, updated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .arg(&message.destination)
    .arg(&message.resource)
    .arg(&message.task)
    .arg(&message.patient)
    .arg(&message.control_id)
    .arg(&message.payload)
    .arg(message.state.as_str())
    .arg(i64::from(message.attempts))
    .arg(message.next_attempt)
    .arg(&message.last_error)
    .arg(&message.ack)
    .arg(message.created)
    .arg(message.updated)
    .execute::<D>(connection)
    .await
    .map_err(|error| match error {
        StoreError::Conflict(_) => StoreError::Invalid(format!(
            "{} is already queued for {}",
            message.resource, message.destination
        )),
        other => other,
    })?;
    Ok(())
}

/// Records an attempt's outcome (ending its claim); an unknown sequence number fails the batch,
/// and so does an attempt made under a claim another node has taken over since
/// ([`StoreError::ClaimLost`]). The operator's act (no fence) moves the fence but keeps the
/// lease: an attempt in flight cannot record over it, and no node sends the message again
/// before that attempt's lease has run out.
pub async fn update<D: Dialect>(
    connection: &mut Connection<D>,
    update: &DeliveryUpdate,
) -> Result<(), StoreError> {
    const SET: &str = "UPDATE outbox SET state = ?1, attempts = ?2, next_attempt = ?3, \
                       last_error = ?4, ack = ?5, updated = ?6, lease_owner = ''";
    let (text, fence) = match update.fence {
        // The holder's outcome ends its claim.
        Some(fence) => (
            format!("{SET}, lease_until = 0 WHERE seq = ?7 AND fence = ?8"),
            fence,
        ),
        None => (format!("{SET}, fence = fence + ?8 WHERE seq = ?7"), 1),
    };
    let changed = stmt(text)
        .arg(update.state.as_str())
        .arg(i64::from(update.attempts))
        .arg(update.next_attempt)
        .arg(&update.last_error)
        .arg(&update.ack)
        .arg(update.updated)
        .arg(update.seq)
        .arg(fence)
        .execute::<D>(connection)
        .await?;
    if changed == 0 {
        return Err(match update.fence {
            Some(fence) => StoreError::ClaimLost(format!(
                "outbound message {} is no longer held under claim {fence}: another node took it over",
                update.seq
            )),
            None => StoreError::NotFound(format!("outbound message {} is not queued", update.seq)),
        });
    }
    Ok(())
}

fn from_row(row: &impl Cells) -> Result<OutboundMessage, StoreError> {
    let state = row.text("state")?;
    Ok(OutboundMessage {
        seq: row.int("seq")?,
        destination: row.text("destination")?,
        resource: row.text("resource")?,
        task: row.text("task")?,
        patient: row.text("patient")?,
        control_id: row.text("control_id")?,
        payload: row.bytes("payload")?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::database(format!("unknown delivery state {state:?}")))?,
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
        next_attempt: row.int("next_attempt")?,
        last_error: row.text("last_error")?,
        ack: row.bytes("ack")?,
        created: row.int("created")?,
        updated: row.int("updated")?,
    })
}

#[async_trait::async_trait]
impl<E: Engine> Outbox for SqlStore<E> {
    async fn outbound(&self, seq: i64) -> Result<Option<OutboundMessage>, StoreError> {
        let row = stmt(format!("SELECT {COLUMNS} FROM outbox WHERE seq = ?1"))
            .arg(seq)
            .fetch_optional_in::<E::Db>(self.writer())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    async fn claim_due(
        &self,
        node: &str,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        let rows = stmt(format!(
            "UPDATE outbox SET lease_owner = ?1, lease_until = ?2, fence = fence + 1 \
             WHERE seq IN (SELECT seq FROM outbox WHERE state = 'pending' AND next_attempt <= ?3 \
             AND lease_until <= ?3 ORDER BY next_attempt, seq LIMIT ?4{}) \
             RETURNING {COLUMNS}, fence",
            E::Db::SKIP_LOCKED
        ))
        .arg(node)
        .arg(lease_until)
        .arg(now)
        .arg(count(limit))
        .fetch_all_in::<E::Db>(self.writer())
        .await?;
        let mut claims = rows
            .iter()
            .map(|row| {
                Ok(Claim {
                    message: from_row(row)?,
                    fence: row.int("fence")?,
                })
            })
            .collect::<Result<Vec<Claim>, StoreError>>()?;
        claims.sort_by_key(|claim| (claim.message.next_attempt, claim.message.seq));
        Ok(claims)
    }

    async fn hold_node(&self, node: &str) -> Result<Option<NodeHold>, StoreError> {
        self.engine().hold_node(node).await
    }

    async fn release_claims(&self, node: &str) -> Result<u64, StoreError> {
        stmt(
            "UPDATE outbox SET lease_owner = '', lease_until = 0, fence = fence + 1 \
             WHERE lease_owner = ?1 AND state = 'pending'",
        )
        .arg(node)
        .execute_in::<E::Db>(self.writer())
        .await
    }

    async fn renew_claim(
        &self,
        seq: i64,
        fence: i64,
        lease_until: i64,
    ) -> Result<bool, StoreError> {
        let changed = stmt(
            "UPDATE outbox SET lease_until = ?1 WHERE seq = ?2 AND fence = ?3 AND state = 'pending'",
        )
        .arg(lease_until)
        .arg(seq)
        .arg(fence)
        .execute_in::<E::Db>(self.writer())
        .await?;
        Ok(changed == 1)
    }

    async fn outbound_list(
        &self,
        states: &[DeliveryState],
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboundMessage>, StoreError> {
        let states: Vec<&str> = states.iter().map(|state| state.as_str()).collect();
        let rows = stmt(format!(
            "SELECT {COLUMNS} FROM outbox WHERE {} AND seq > ?2 ORDER BY seq LIMIT ?3",
            E::Db::in_list("state", "?1")
        ))
        .arg(states)
        .arg(after)
        .arg(count(limit))
        .fetch_all_in::<E::Db>(self.writer())
        .await?;
        rows.iter().map(from_row).collect()
    }

    async fn outbound_next_due(&self) -> Result<Option<i64>, StoreError> {
        let row = stmt(
            "SELECT MIN(CASE WHEN lease_until > next_attempt THEN lease_until ELSE next_attempt END) \
             AS due FROM outbox WHERE state = 'pending'",
        )
            .fetch_one_in::<E::Db>(self.writer())
            .await?;
        row.opt_int("due")
    }
}
