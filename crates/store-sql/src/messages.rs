//! The inbound message log on either database (`messages`): rows written inside a batch's
//! transaction (both engines call [`insert`] and [`set_state`] from their write path), and the
//! [`MessageLog`] reads.

use sqlx::{Database, QueryBuilder};
use tsunagi_store::{InboundMessage, MessageLog, MessageState, StoreError};

use crate::{
    dialect::{Bound, Cells, Dialect, count, execute_built, stmt},
    store::{Engine, SqlStore},
};

type Connection<D> = <D as Database>::Connection;

const COLUMNS: &str = "seq, channel, sender, control_id, hash, received, facility, message_type, \
                       patient, state, reason, ack, raw";

/// Messages per insert statement (12 values each).
const MESSAGE_CHUNK: usize = 128;

/// Logs messages inside the batch's transaction, in order, with multi-row inserts (one
/// statement per message cost a round trip each: a third of a pipelined group's apply). A
/// second row under a duplicate key fails the statement (and so the batch).
pub async fn insert<D: Dialect>(
    connection: &mut Connection<D>,
    messages: Vec<InboundMessage>,
) -> Result<(), StoreError> {
    let mut remaining = messages.into_iter();
    for size in crate::pow2_sizes(remaining.len(), MESSAGE_CHUNK) {
        let chunk: Vec<InboundMessage> = remaining.by_ref().take(size).collect();
        let names: Vec<String> = chunk
            .iter()
            .map(|message| format!("{} from {}", message.control_id, message.sender))
            .collect();
        let mut sql = QueryBuilder::<D>::new(
            "INSERT INTO messages (channel, sender, control_id, hash, received, facility, \
             message_type, patient, state, reason, ack, raw) VALUES ",
        );
        for (index, message) in chunk.into_iter().enumerate() {
            sql.push(if index == 0 { "(" } else { ", (" });
            let values: [Bound; 12] = [
                message.channel.into(),
                message.sender.into(),
                message.control_id.into(),
                message.hash.into(),
                message.received.into(),
                message.facility.into(),
                message.message_type.into(),
                message.patient.into(),
                message.state.as_str().into(),
                message.reason.into(),
                message.ack.into(),
                message.raw.into(),
            ];
            for (position, value) in values.into_iter().enumerate() {
                if position > 0 {
                    sql.push(", ");
                }
                D::bind(&mut sql, value);
            }
            sql.push(")");
        }
        execute_built::<D>(connection, &mut sql)
            .await
            .map_err(|error| match error {
                StoreError::Conflict(_) => StoreError::Invalid(format!(
                    "a message is already logged (one of {})",
                    names.join(", ")
                )),
                other => other,
            })?;
    }
    Ok(())
}

/// Changes a logged message's state; an unknown sequence number fails the batch.
pub async fn set_state<D: Dialect>(
    connection: &mut Connection<D>,
    seq: i64,
    state: MessageState,
    reason: &str,
) -> Result<(), StoreError> {
    let changed = stmt("UPDATE messages SET state = ?1, reason = ?2 WHERE seq = ?3")
        .arg(state.as_str())
        .arg(reason)
        .arg(seq)
        .execute::<D>(connection)
        .await?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("message {seq} is not logged")));
    }
    Ok(())
}

fn from_row(row: &impl Cells) -> Result<InboundMessage, StoreError> {
    let state = row.text("state")?;
    Ok(InboundMessage {
        seq: row.int("seq")?,
        channel: row.text("channel")?,
        sender: row.text("sender")?,
        control_id: row.text("control_id")?,
        hash: row.bytes("hash")?,
        received: row.int("received")?,
        facility: row.text("facility")?,
        message_type: row.text("message_type")?,
        patient: row.text("patient")?,
        state: MessageState::parse(&state)
            .ok_or_else(|| StoreError::database(format!("unknown message state {state:?}")))?,
        reason: row.text("reason")?,
        ack: row.bytes("ack")?,
        raw: row.bytes("raw")?,
    })
}

#[async_trait::async_trait]
impl<E: Engine> MessageLog for SqlStore<E> {
    async fn logged_message(
        &self,
        sender: &str,
        control_id: &str,
    ) -> Result<Option<InboundMessage>, StoreError> {
        let row = stmt(format!(
            "SELECT {COLUMNS} FROM messages WHERE sender = ?1 AND control_id = ?2 \
             AND state <> 'conflict'"
        ))
        .arg(sender)
        .arg(control_id)
        .fetch_optional_in::<E::Db>(self.writer())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    async fn logged_messages(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<InboundMessage>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let pairs = keys
            .iter()
            .map(|(sender, control_id)| [sender.clone(), control_id.clone()])
            .collect();
        let rows = stmt(format!("SELECT {COLUMNS} {}", E::Db::logged_keys("?1")))
            .arg(Bound::Pairs(pairs))
            .fetch_all_in::<E::Db>(self.writer())
            .await?;
        rows.iter().map(from_row).collect()
    }

    async fn message(&self, seq: i64) -> Result<Option<InboundMessage>, StoreError> {
        let row = stmt(format!("SELECT {COLUMNS} FROM messages WHERE seq = ?1"))
            .arg(seq)
            .fetch_optional_in::<E::Db>(self.writer())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    async fn messages(
        &self,
        states: &[MessageState],
        after: i64,
        limit: usize,
    ) -> Result<Vec<InboundMessage>, StoreError> {
        let states: Vec<&str> = states.iter().map(|state| state.as_str()).collect();
        let rows = stmt(format!(
            "SELECT {COLUMNS} FROM messages WHERE {} AND seq > ?2 ORDER BY seq LIMIT ?3",
            E::Db::in_list("state", "?1")
        ))
        .arg(states)
        .arg(after)
        .arg(count(limit))
        .fetch_all_in::<E::Db>(self.writer())
        .await?;
        rows.iter().map(from_row).collect()
    }
}
