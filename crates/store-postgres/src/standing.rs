//! The standing epoch on PostgreSQL, shared by every node: a change to what tokens stand on
//! (a facility, participant or client written, a revocation) notifies channel
//! [`CHANNEL`] with its schema's name inside its own transaction, so PostgreSQL delivers it
//! to every listening node exactly when the change commits. A serving node listens on a
//! connection of its own and moves its epoch on each notification of its schema, so the
//! server reads a token's records again only after something changed, as on SQLite.
//!
//! While the listener is not connected the epoch is `None`, and every request reads the
//! records. The epoch also moves every [`REFRESH`], so a listener whose connection stalls
//! without failing still forgets what it remembered within that time.

use std::{
    sync::{
        Arc, OnceLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

use sqlx::{
    PgConnection,
    postgres::{PgListener, PgPool, PgPoolOptions},
};
use tsunagi_store::StoreError;
use tsunagi_store_sql::db_error;

/// The notification channel (the payload names the schema: regions sharing a database keep
/// apart).
pub(crate) const CHANNEL: &str = "tsunagi_standing";

/// The longest a node remembers a standing without hearing from the database.
const REFRESH: Duration = Duration::from_secs(10);

/// Notifies every node, when the caller's transaction commits, that standings may have changed.
pub(crate) async fn notify(connection: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, current_schema())")
        .bind(CHANNEL)
        .execute(connection)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// This node's epoch, moved by the notifications it hears.
#[derive(Debug, Default)]
pub(crate) struct ListenedEpoch {
    value: AtomicU64,
    live: AtomicBool,
    /// Set when listening starts; dropped with the epoch, which stops the listening tasks.
    stop: OnceLock<watch::Sender<()>>,
}

impl ListenedEpoch {
    /// The epoch now; `None` while no listener is connected.
    pub(crate) fn read(&self) -> Option<u64> {
        self.live
            .load(Ordering::SeqCst)
            .then(|| self.value.load(Ordering::SeqCst))
    }

    /// Moves the epoch on: every standing remembered under the last one is read again.
    pub(crate) fn forget(&self) {
        self.value.fetch_add(1, Ordering::SeqCst);
    }

    /// Starts listening (once) on a connection of its own made as `pool`'s are; the tasks end
    /// when this epoch is dropped.
    pub(crate) fn start(self: &Arc<Self>, pool: &PgPool) {
        let (stop, stopped) = watch::channel(());
        if self.stop.set(stop).is_err() {
            return;
        }
        let options = (*pool.connect_options()).clone();
        let own = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let epoch = Arc::downgrade(self);
        let mut until_stopped = stopped.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    // Whatever ended the last listener, nothing heard meanwhile can be trusted.
                    _ = listen(&epoch, &own) => {}
                    _ = until_stopped.changed() => return,
                }
                match epoch.upgrade() {
                    Some(epoch) => epoch.live.store(false, Ordering::SeqCst),
                    None => return,
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let epoch = Arc::downgrade(self);
        let mut until_stopped = stopped;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(REFRESH) => {}
                    _ = until_stopped.changed() => return,
                }
                let Some(epoch) = epoch.upgrade() else {
                    return;
                };
                epoch.forget();
            }
        });
    }
}

/// Listens until the connection is lost or fails (or the epoch is gone).
async fn listen(epoch: &Weak<ListenedEpoch>, pool: &PgPool) -> Result<(), sqlx::Error> {
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(pool)
        .await?;
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection ends this listener: the caller starts a fresh one, and the epoch is
    // `None` until it listens again.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    match epoch.upgrade() {
        Some(epoch) => {
            epoch.forget();
            epoch.live.store(true, Ordering::SeqCst);
        }
        None => return Ok(()),
    }
    while let Some(notification) = listener.try_recv().await? {
        if notification.payload() == schema {
            match epoch.upgrade() {
                Some(epoch) => epoch.forget(),
                None => return Ok(()),
            }
        }
    }
    Ok(())
}
