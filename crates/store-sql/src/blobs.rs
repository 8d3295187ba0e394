//! The bytes of documents on either database: `blobs` names each content (SHA-256) and its
//! size, `blob_parts` holds it in parts of at most [`BLOB_PART_BYTES`], keyed by the offset of
//! their first byte. A content is written once, in the batch that stores the Binary naming it,
//! and read part by part (a reader holds one part, never the document). Who may read a content
//! is decided on the Binary, never here.

use sqlx::Database;

use crate::hot::Connections;
use tsunagi_store::{BLOB_PART_BYTES, StoreError};

use crate::dialect::{Cells, Dialect, stmt};

type Connection<D> = <D as Database>::Connection;

/// Stores `bytes` under their SHA-256 unless the same content is already there.
pub async fn insert<D: Dialect>(
    connection: &mut Connection<D>,
    sha256: &[u8; 32],
    bytes: Vec<u8>,
) -> Result<(), StoreError> {
    let size = i64::try_from(bytes.len())
        .map_err(|_| StoreError::Invalid("a blob larger than the database allows".to_owned()))?;
    let added =
        stmt("INSERT INTO blobs (sha256, size) VALUES (?1, ?2) ON CONFLICT (sha256) DO NOTHING")
            .arg(sha256.as_slice())
            .arg(size)
            .execute::<D>(connection)
            .await?;
    if added == 0 {
        return Ok(());
    }
    let mut first = 0usize;
    // An empty content is one empty part, so that every stored content has its part 0.
    loop {
        let end = bytes.len().min(first + BLOB_PART_BYTES);
        let part = bytes.get(first..end).unwrap_or_default().to_vec();
        stmt("INSERT INTO blob_parts (sha256, first_byte, bytes) VALUES (?1, ?2, ?3)")
            .arg(sha256.as_slice())
            .arg(i64::try_from(first).unwrap_or(i64::MAX))
            .arg(part)
            .execute::<D>(connection)
            .await?;
        first = end;
        if first >= bytes.len() {
            return Ok(());
        }
    }
}

/// The size of the content under `sha256`.
pub async fn size<D: Dialect>(
    pool: &Connections<D>,
    sha256: &[u8; 32],
) -> Result<Option<u64>, StoreError> {
    let row = stmt("SELECT size FROM blobs WHERE sha256 = ?1")
        .arg(sha256.as_slice())
        .fetch_optional_in::<D>(pool)
        .await?;
    row.map(|row| {
        let size = row.int("size")?;
        u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("blob size {size}")))
    })
    .transpose()
}

/// The part of the content under `sha256` that holds byte `at`: (its first byte's offset, its
/// bytes); `None` past the end (and for an empty content, which holds no byte).
pub async fn part<D: Dialect>(
    pool: &Connections<D>,
    sha256: &[u8; 32],
    at: u64,
) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    let Ok(at) = i64::try_from(at) else {
        return Ok(None);
    };
    let row = stmt(
        "SELECT first_byte, bytes FROM blob_parts WHERE sha256 = ?1 AND first_byte <= ?2 \
         ORDER BY first_byte DESC LIMIT 1",
    )
    .arg(sha256.as_slice())
    .arg(at)
    .fetch_optional_in::<D>(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let first = row.int("first_byte")?;
    let first =
        u64::try_from(first).map_err(|_| StoreError::Corrupt(format!("blob part at {first}")))?;
    let bytes = row.bytes("bytes")?;
    Ok((first + bytes.len() as u64 > at as u64).then_some((first, bytes)))
}
