//! The shared store conformance suites (storage semantics and the access policy matrix) against a
//! real SQLite database file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use tsunagi_core::clock::FixedClock;
use tsunagi_store_sqlite::SqliteStore;

async fn fresh() -> SqliteStore {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    // Keep the directory alive for the test's duration.
    std::mem::forget(dir);
    SqliteStore::open(
        &format!("sqlite://{}", path.display()),
        Arc::new(FixedClock(1_700_000_000_000_000)),
    )
    .await
    .unwrap()
}

tsunagi_store::store_conformance_suite!(fresh());

tsunagi_store::store_access_suite!(fresh());
