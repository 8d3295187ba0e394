//! The store both SQL databases share. Everything a backend does that is the same on SQLite and
//! PostgreSQL but for spelling is here, once, generic over a [`Dialect`]: the read side
//! ([`reads`]), search ([`plan`] writes the SQL, [`search`] runs it), governance and the audit,
//! the outbox and the message log, and the consent guard ([`guard`]) that every read of
//! clinical data carries. [`SqlStore`] implements the store's traits over an [`Engine`], which
//! is what each backend crate keeps: opening and migrations, the tuned bulk write path, how a
//! writing transaction starts, and SQLite's audit journal.

pub mod audit;
pub mod blobs;
mod changes;
pub mod dialect;
pub mod governance;
pub mod guard;
pub mod hot;
pub mod messages;
pub mod migrations;
pub mod outbox;
pub mod paging;
pub mod plan;
pub mod reads;
pub mod search;
pub mod standing;
pub mod store;

pub use dialect::{Bound, Cells, Dialect, Stmt, db_error, stmt};
pub use guard::{guard, push_guard, viewer};
pub use plan::*;
pub use store::{Engine, SqlStore};

use tsunagi_store::{Backend, StoreError};

#[async_trait::async_trait]
impl<E: Engine> Backend for SqlStore<E> {
    async fn start_serving(&self) -> Result<(), StoreError> {
        self.engine().start_serving().await
    }
}

/// Rows up to which a multi-row statement is sized exactly rather than split in powers of two.
pub const EXACT_TAIL: usize = 16;

/// Chunk sizes for `len` rows: powers of two, at most `max`, and a last chunk of at most
/// [`EXACT_TAIL`] rows sized exactly. Multi-row statements so come in a few dozen shapes whose
/// prepared statements stay cached, and a small batch (a stop-and-wait feed's group) takes one
/// statement per table rather than one per bit of its row count.
pub fn pow2_sizes(len: usize, max: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut rest = len;
    while rest > 0 {
        if rest <= EXACT_TAIL.min(max) {
            sizes.push(rest);
            break;
        }
        let mut size = max.min(rest).next_power_of_two();
        if size > rest || size > max {
            size /= 2;
        }
        let size = size.max(1);
        sizes.push(size);
        rest -= size;
    }
    sizes
}
