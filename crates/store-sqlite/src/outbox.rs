//! The outbound queue in SQLite (`outbox`, schema 7): rows written inside a batch's transaction,
//! and the [`Outbox`] reads.

use sqlx::{Row, SqliteConnection, sqlite::SqliteRow};
use tsunagi_store::{DeliveryState, DeliveryUpdate, OutboundMessage, Outbox, StoreError};

use crate::{SqliteStore, db_error};

const COLUMNS: &str = "seq, destination, resource, task, patient, control_id, payload, state, \
                       attempts, next_attempt, last_error, ack, created, updated";

/// Queues a delivery inside the batch's transaction. A second delivery of the same resource to the
/// same destination fails the statement (and so the batch).
pub(crate) async fn insert(
    connection: &mut SqliteConnection,
    message: &OutboundMessage,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (destination, resource, task, patient, control_id, payload, state, \
         attempts, next_attempt, last_error, ack, created, updated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .bind(&message.destination)
    .bind(&message.resource)
    .bind(&message.task)
    .bind(&message.patient)
    .bind(&message.control_id)
    .bind(&message.payload)
    .bind(message.state.as_str())
    .bind(i64::from(message.attempts))
    .bind(message.next_attempt)
    .bind(&message.last_error)
    .bind(&message.ack)
    .bind(message.created)
    .bind(message.updated)
    .execute(&mut *connection)
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(database) if database.is_unique_violation() => {
            StoreError::Invalid(format!(
                "{} is already queued for {}",
                message.resource, message.destination
            ))
        }
        _ => db_error(error),
    })?;
    Ok(())
}

/// Records an attempt's outcome; an unknown sequence number fails the batch.
pub(crate) async fn update(
    connection: &mut SqliteConnection,
    update: &DeliveryUpdate,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE outbox SET state = ?1, attempts = ?2, next_attempt = ?3, last_error = ?4, \
         ack = ?5, updated = ?6 WHERE seq = ?7",
    )
    .bind(update.state.as_str())
    .bind(i64::from(update.attempts))
    .bind(update.next_attempt)
    .bind(&update.last_error)
    .bind(&update.ack)
    .bind(update.updated)
    .bind(update.seq)
    .execute(&mut *connection)
    .await
    .map_err(db_error)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::Invalid(format!(
            "outbound message {} is not queued",
            update.seq
        )));
    }
    Ok(())
}

fn from_row(row: &SqliteRow) -> Result<OutboundMessage, StoreError> {
    let state: String = row.try_get("state").map_err(db_error)?;
    let attempts: i64 = row.try_get("attempts").map_err(db_error)?;
    Ok(OutboundMessage {
        seq: row.try_get("seq").map_err(db_error)?,
        destination: row.try_get("destination").map_err(db_error)?,
        resource: row.try_get("resource").map_err(db_error)?,
        task: row.try_get("task").map_err(db_error)?,
        patient: row.try_get("patient").map_err(db_error)?,
        control_id: row.try_get("control_id").map_err(db_error)?,
        payload: row.try_get("payload").map_err(db_error)?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::Database(format!("unknown delivery state {state:?}")))?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt: row.try_get("next_attempt").map_err(db_error)?,
        last_error: row.try_get("last_error").map_err(db_error)?,
        ack: row.try_get("ack").map_err(db_error)?,
        created: row.try_get("created").map_err(db_error)?,
        updated: row.try_get("updated").map_err(db_error)?,
    })
}

fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Outbox for SqliteStore {
    async fn outbound(&self, seq: i64) -> Result<Option<OutboundMessage>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM outbox WHERE seq = ?1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(seq)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(from_row).transpose()
    }

    async fn outbound_due(
        &self,
        now: i64,
        count: usize,
    ) -> Result<Vec<OutboundMessage>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM outbox WHERE state = 'pending' AND next_attempt <= ?1 \
             ORDER BY next_attempt, seq LIMIT ?2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit(count))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(from_row).collect()
    }

    async fn outbound_list(
        &self,
        states: &[DeliveryState],
        after: i64,
        count: usize,
    ) -> Result<Vec<OutboundMessage>, StoreError> {
        let states: Vec<&str> = states.iter().map(|state| state.as_str()).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM outbox WHERE state IN (SELECT value FROM json_each(?1)) \
             AND seq > ?2 ORDER BY seq LIMIT ?3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(crate::json_list(&states))
            .bind(after)
            .bind(limit(count))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(from_row).collect()
    }

    async fn outbound_next_due(&self) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT min(next_attempt) FROM outbox WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }
}
