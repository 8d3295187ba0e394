//! The inbound message log in SQLite (`messages`, schema 6): rows written inside a batch's
//! transaction, and the [`MessageLog`] reads.

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, sqlite::SqliteRow};
use tsunagi_store::{InboundMessage, MessageLog, MessageState, StoreError};

use crate::{SqliteStore, db_error};

const COLUMNS: &str = "seq, channel, sender, control_id, hash, received, facility, message_type, \
                       patient, state, reason, ack, raw";

/// Logs messages inside the batch's transaction, in order, with multi-row inserts (one
/// statement per message cost a round trip to SQLite's thread each: a third of a pipelined
/// group's apply). A second row under a duplicate key fails the statement (and so the batch).
pub(crate) async fn insert(
    connection: &mut SqliteConnection,
    messages: Vec<InboundMessage>,
) -> Result<(), StoreError> {
    let mut remaining = messages.into_iter();
    for size in crate::pow2_sizes(remaining.len(), MESSAGE_CHUNK) {
        let chunk: Vec<InboundMessage> = remaining.by_ref().take(size).collect();
        let names: Vec<String> = chunk
            .iter()
            .map(|message| format!("{} from {}", message.control_id, message.sender))
            .collect();
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO messages (channel, sender, control_id, hash, received, facility, \
             message_type, patient, state, reason, ack, raw) ",
        );
        query.push_values(chunk, |mut row, message| {
            row.push_bind(message.channel)
                .push_bind(message.sender)
                .push_bind(message.control_id)
                .push_bind(message.hash)
                .push_bind(message.received)
                .push_bind(message.facility)
                .push_bind(message.message_type)
                .push_bind(message.patient)
                .push_bind(message.state.as_str())
                .push_bind(message.reason)
                .push_bind(message.ack)
                .push_bind(message.raw);
        });
        query
            .build()
            .execute(&mut *connection)
            .await
            .map_err(|error| match &error {
                sqlx::Error::Database(database) if database.is_unique_violation() => {
                    StoreError::Invalid(format!(
                        "a message is already logged (one of {})",
                        names.join(", ")
                    ))
                }
                _ => db_error(error),
            })?;
    }
    Ok(())
}

/// Messages per insert statement (12 values each).
const MESSAGE_CHUNK: usize = 128;

/// Changes a logged message's state; an unknown sequence number fails the batch.
pub(crate) async fn set_state(
    connection: &mut SqliteConnection,
    seq: i64,
    state: MessageState,
    reason: &str,
) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE messages SET state = ?1, reason = ?2 WHERE seq = ?3")
        .bind(state.as_str())
        .bind(reason)
        .bind(seq)
        .execute(&mut *connection)
        .await
        .map_err(db_error)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::Invalid(format!("message {seq} is not logged")));
    }
    Ok(())
}

fn from_row(row: &SqliteRow) -> Result<InboundMessage, StoreError> {
    let state: String = row.try_get("state").map_err(db_error)?;
    Ok(InboundMessage {
        seq: row.try_get("seq").map_err(db_error)?,
        channel: row.try_get("channel").map_err(db_error)?,
        sender: row.try_get("sender").map_err(db_error)?,
        control_id: row.try_get("control_id").map_err(db_error)?,
        hash: row.try_get("hash").map_err(db_error)?,
        received: row.try_get("received").map_err(db_error)?,
        facility: row.try_get("facility").map_err(db_error)?,
        message_type: row.try_get("message_type").map_err(db_error)?,
        patient: row.try_get("patient").map_err(db_error)?,
        state: MessageState::parse(&state)
            .ok_or_else(|| StoreError::Database(format!("unknown message state {state:?}")))?,
        reason: row.try_get("reason").map_err(db_error)?,
        ack: row.try_get("ack").map_err(db_error)?,
        raw: row.try_get("raw").map_err(db_error)?,
    })
}

#[async_trait::async_trait]
impl MessageLog for SqliteStore {
    async fn logged_message(
        &self,
        sender: &str,
        control_id: &str,
    ) -> Result<Option<InboundMessage>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE sender = ?1 AND control_id = ?2 \
             AND state <> 'conflict'"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sender)
            .bind(control_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(from_row).transpose()
    }

    async fn logged_messages(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<InboundMessage>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<[&str; 2]> = keys
            .iter()
            .map(|(sender, control_id)| [sender.as_str(), control_id.as_str()])
            .collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE state <> 'conflict' AND (sender, control_id) IN \
             (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1))"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(
                serde_json::to_string(&pairs)
                    .map_err(|error| StoreError::Invalid(error.to_string()))?,
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(from_row).collect()
    }

    async fn message(&self, seq: i64) -> Result<Option<InboundMessage>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM messages WHERE seq = ?1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(seq)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(from_row).transpose()
    }

    async fn messages(
        &self,
        states: &[MessageState],
        after: i64,
        limit: usize,
    ) -> Result<Vec<InboundMessage>, StoreError> {
        let states: Vec<&str> = states.iter().map(|state| state.as_str()).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE state IN (SELECT value FROM json_each(?1)) \
             AND seq > ?2 ORDER BY seq LIMIT ?3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(crate::json_list(&states))
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(from_row).collect()
    }
}
