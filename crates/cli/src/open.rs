//! Opening the store a database URL names (`sqlite://…`, `postgres://…`), and the context a
//! pull adapter runs in.

use std::{path::Path, sync::Arc};

use anyhow::{Context, bail};
use tsunagi_adapter::AdapterContext;
use tsunagi_core::clock::SystemClock;
use tsunagi_store::Backend;
use tsunagi_store::Store;
use tsunagi_store_postgres::PostgresStore;
use tsunagi_store_sqlite::SqliteStore;

/// Opens the store named by a database URL: `sqlite://<path>` (created if missing) or
/// `postgres://user@host:port/database` (the schema is created in an empty database).
pub(crate) async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Backend>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            bail!("database url {url:?} names no file: use sqlite://<path>");
        }
        if let Some(parent) = Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let store = SqliteStore::open(url, Arc::new(SystemClock))
            .await
            .with_context(|| format!("cannot open {url}"))?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::open(url, Arc::new(SystemClock))
            .await
            .with_context(|| format!("cannot open {url}"))?;
        return Ok(Arc::new(store));
    }
    bail!(
        "unsupported database url {url:?}: expected sqlite://<path> or postgres://user@host:port/database"
    )
}

pub(crate) fn context(
    store: Arc<dyn Store>,
    progress: Arc<dyn tsunagi_adapter::Progress>,
) -> AdapterContext {
    AdapterContext {
        store,
        clock: Arc::new(SystemClock),
        progress,
    }
}
