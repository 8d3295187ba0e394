//! The bytes of documents on either database (`blobs`): written once per content (SHA-256) in
//! the batch that stores the Binary naming them, and read by hash. Who may read them is decided
//! on the Binary, never here.

use sqlx::Database;
use tsunagi_store::StoreError;

use crate::dialect::{Dialect, stmt};

type Connection<D> = <D as Database>::Connection;

/// Stores `bytes` under their SHA-256 unless the same content is already there.
pub async fn insert<D: Dialect>(
    connection: &mut Connection<D>,
    sha256: &[u8; 32],
    bytes: Vec<u8>,
) -> Result<(), StoreError> {
    let size = i64::try_from(bytes.len())
        .map_err(|_| StoreError::Invalid("a blob larger than the database allows".to_owned()))?;
    stmt("INSERT INTO blobs (sha256, size, bytes) VALUES (?1, ?2, ?3) ON CONFLICT (sha256) DO NOTHING")
        .arg(sha256.as_slice())
        .arg(size)
        .arg(bytes)
        .execute::<D>(connection)
        .await?;
    Ok(())
}
