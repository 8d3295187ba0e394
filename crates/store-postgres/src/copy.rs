//! Rows sent with `COPY … FROM STDIN (FORMAT binary)`: the encoder of PostgreSQL's binary copy
//! format and the one call that streams it, for the batch writer's fresh rows.
//!
//! Binary COPY is the cheapest way into a table: no statement to plan, no arrays to build and
//! take apart, and the heap is filled many rows at a time. It has no `ON CONFLICT`, so it is
//! only used for rows that cannot collide: new `rid`s, and index rows whose `rid`'s old rows
//! were deleted first, deduplicated in memory ([`crate::index_rows`]).

use sqlx::PgConnection;
use tsunagi_store::StoreError;
use tsunagi_store_sql::db_error;

/// Bytes handed to the connection at a time.
const SEND_BYTES: usize = 1 << 20;

/// The rows of one `COPY`, encoded as they are added.
pub(crate) struct CopyRows {
    bytes: Vec<u8>,
    columns: i16,
    rows: usize,
}

impl CopyRows {
    /// An empty copy of rows of `columns` fields.
    pub(crate) fn new(columns: i16) -> Self {
        let mut bytes = Vec::with_capacity(64 * 1024);
        bytes.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        bytes.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        bytes.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        Self {
            bytes,
            columns,
            rows: 0,
        }
    }

    /// Starts the next row; its fields follow, in the statement's column order.
    pub(crate) fn row(&mut self) -> &mut Self {
        self.bytes.extend_from_slice(&self.columns.to_be_bytes());
        self.rows += 1;
        self
    }

    fn field(&mut self, value: &[u8]) -> Result<&mut Self, StoreError> {
        let length = i32::try_from(value.len())
            .map_err(|_| StoreError::Invalid("a value over 2 GiB cannot be stored".to_owned()))?;
        self.bytes.extend_from_slice(&length.to_be_bytes());
        self.bytes.extend_from_slice(value);
        Ok(self)
    }

    /// An `int8` field.
    pub(crate) fn int8(&mut self, value: i64) -> &mut Self {
        self.bytes.extend_from_slice(&8i32.to_be_bytes());
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// A nullable `int8` field.
    pub(crate) fn int8_or_null(&mut self, value: Option<i64>) -> &mut Self {
        match value {
            Some(value) => self.int8(value),
            None => self.null(),
        }
    }

    /// A `float8` field.
    pub(crate) fn float8(&mut self, value: f64) -> &mut Self {
        self.bytes.extend_from_slice(&8i32.to_be_bytes());
        self.bytes.extend_from_slice(&value.to_bits().to_be_bytes());
        self
    }

    /// A `bool` field.
    pub(crate) fn boolean(&mut self, value: bool) -> &mut Self {
        self.bytes.extend_from_slice(&1i32.to_be_bytes());
        self.bytes.push(u8::from(value));
        self
    }

    /// A `text` field (UTF-8, the connection's encoding).
    pub(crate) fn text(&mut self, value: &str) -> Result<&mut Self, StoreError> {
        if value.contains('\0') {
            return Err(StoreError::Invalid(
                "text with a NUL character cannot be stored".to_owned(),
            ));
        }
        self.field(value.as_bytes())
    }

    /// A nullable `bytea` field.
    pub(crate) fn bytea_or_null(&mut self, value: Option<&[u8]>) -> Result<&mut Self, StoreError> {
        match value {
            Some(value) => self.field(value),
            None => Ok(self.null()),
        }
    }

    /// A NULL field.
    pub(crate) fn null(&mut self) -> &mut Self {
        self.bytes.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    /// Streams the rows into `COPY <target> FROM STDIN (FORMAT binary)`; nothing when empty.
    pub(crate) async fn send(
        mut self,
        connection: &mut PgConnection,
        target: &str,
    ) -> Result<(), StoreError> {
        if self.rows == 0 {
            return Ok(());
        }
        self.bytes.extend_from_slice(&(-1i16).to_be_bytes());
        let statement = format!("COPY {target} FROM STDIN (FORMAT binary)");
        let mut copy = connection.copy_in_raw(&statement).await.map_err(db_error)?;
        for chunk in self.bytes.chunks(SEND_BYTES) {
            if let Err(error) = copy.send(chunk).await {
                // The transaction is lost either way; the error that counts is the first.
                let _ = copy.abort(error.to_string()).await;
                return Err(db_error(error));
            }
        }
        let copied = copy.finish().await.map_err(db_error)?;
        if copied != self.rows as u64 {
            return Err(StoreError::database(format!(
                "COPY {target} took {copied} rows of {}",
                self.rows
            )));
        }
        Ok(())
    }
}
