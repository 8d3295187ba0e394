//! A pool that keeps a few connections checked out between statements ([`Connections`]).
//!
//! sqlx tests every connection it takes back with a round trip to the server (a `Sync` on
//! PostgreSQL, a message to the worker thread on SQLite), in a task of its own: off the
//! request's path, but a wake-up of the server and of the node for every statement run on a
//! pooled connection. A statement that ran to its end leaves its connection in a known state,
//! so [`Lease::done`] keeps it here instead, for the next statement, as HikariCP does. A
//! connection whose statement failed, or whose caller stopped waiting, is not kept: it goes back
//! through sqlx, which tests it, as before.
//!
//! At most `keep` connections wait here, fewer than the pool's size, so callers that go to the
//! pool itself (a transaction) have the rest; one that finds none idle there gets the kept ones
//! back first ([`Connections::begin`], [`Connections::make_room`]). A connection idle here for
//! longer than [`PING_WHEN_IDLE`] is pinged (within [`PING_TIMEOUT`]) before it is lent again,
//! so one the server or a proxy dropped is replaced, not handed to a request; one kept for
//! [`MAX_KEPT`] goes back to the pool, whose lifetime limits then apply (after a fail-over, say).

use std::{
    ops::{Deref, DerefMut},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use sqlx::{Connection, Database, Pool, pool::PoolConnection};
use tsunagi_store::StoreError;

use crate::dialect::db_error;

/// How long a connection may stay idle before it is pinged before use (one round trip).
pub const PING_WHEN_IDLE: Duration = Duration::from_secs(1);
/// How long that ping may take: a connection a NAT or proxy dropped silently does not answer.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection may be kept here at a stretch before it goes back to the pool.
pub const MAX_KEPT: Duration = Duration::from_secs(600);

/// A kept connection, since when it is idle, and since when it has been kept.
type Kept<D> = (PoolConnection<D>, Instant, Instant);

/// A sqlx pool and the connections kept checked out between statements.
#[derive(Debug)]
pub struct Connections<D: Database> {
    pool: Pool<D>,
    kept: Mutex<Vec<Kept<D>>>,
    keep: usize,
}

impl<D: Database> Connections<D> {
    /// Keeps up to `keep` of `pool`'s connections between statements (0: none; the pool's
    /// own behaviour).
    pub fn new(pool: Pool<D>, keep: usize) -> Self {
        Self {
            pool,
            kept: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// The pool itself (transactions, and connections that are not given back with
    /// [`Lease::done`]).
    pub fn pool(&self) -> &Pool<D> {
        &self.pool
    }

    /// A connection: the one given back last, else one of the pool.
    pub async fn acquire(&self) -> Result<Lease<'_, D>, StoreError> {
        loop {
            let kept = self
                .kept
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some((mut connection, idle_since, kept_since)) = kept else {
                break;
            };
            if idle_since.elapsed() <= PING_WHEN_IDLE
                || matches!(
                    tokio::time::timeout(PING_TIMEOUT, connection.ping()).await,
                    Ok(Ok(()))
                )
            {
                return Ok(Lease {
                    connection,
                    owner: self,
                    kept_since: Some(kept_since),
                });
            }
            connection.close_on_drop();
        }
        let connection = self.pool.acquire().await.map_err(db_error)?;
        Ok(Lease {
            connection,
            owner: self,
            kept_since: None,
        })
    }

    /// Gives the kept connections back to the pool when it has none idle, so a caller about to
    /// wait for the pool itself does not wait while connections sit here unused.
    pub fn make_room(&self) {
        if self.pool.num_idle() > 0 {
            return;
        }
        let kept = std::mem::take(&mut *self.kept.lock().unwrap_or_else(PoisonError::into_inner));
        drop(kept);
    }

    /// A transaction on a connection of the pool (after [`Connections::make_room`]).
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, D>, StoreError> {
        self.make_room();
        self.pool.begin().await.map_err(db_error)
    }

    /// [`Connections::begin`], opened with `statement` (SQLite's `BEGIN IMMEDIATE`).
    pub async fn begin_with(
        &self,
        statement: &'static str,
    ) -> Result<sqlx::Transaction<'static, D>, StoreError> {
        self.make_room();
        self.pool.begin_with(statement).await.map_err(db_error)
    }

    /// Closes the pool (the kept connections with it).
    pub async fn close(&self) {
        // Closed first: a lease ending meanwhile no longer keeps its connection.
        let closing = self.pool.close();
        let kept = std::mem::take(&mut *self.kept.lock().unwrap_or_else(PoisonError::into_inner));
        drop(kept);
        closing.await;
    }
}

/// A connection lent by [`Connections`]: given back with [`Lease::done`] once what ran on it ran
/// to its end; dropped otherwise (sqlx tests it on its way back to the pool).
#[derive(Debug)]
pub struct Lease<'a, D: Database> {
    connection: PoolConnection<D>,
    owner: &'a Connections<D>,
    /// Since when the connection has been kept, when it came from [`Connections`]' own.
    kept_since: Option<Instant>,
}

impl<D: Database> Lease<'_, D> {
    /// Gives the connection back for the next statement: call it only when everything run on
    /// it ended (no transaction open, no rows left unread).
    pub fn done(self) {
        let Self {
            connection,
            owner,
            kept_since,
        } = self;
        let now = Instant::now();
        let kept_since = kept_since.unwrap_or(now);
        if now.duration_since(kept_since) > MAX_KEPT {
            return;
        }
        let mut kept = owner.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() < owner.keep && !owner.pool.is_closed() {
            kept.push((connection, now, kept_since));
        }
    }
}

impl<D: Database> Deref for Lease<'_, D> {
    type Target = D::Connection;

    fn deref(&self) -> &Self::Target {
        &self.connection
    }
}

impl<D: Database> DerefMut for Lease<'_, D> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.connection
    }
}
