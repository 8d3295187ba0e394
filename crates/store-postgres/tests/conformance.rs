//! The shared store conformance suite against a real PostgreSQL server
//! (`TSUNAGI_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`, as on CI
//! machines). Each test runs in its own schema, named after its process (nextest runs every
//! test in a process of its own); schemas of processes that have ended are dropped first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use sqlx::Connection;
use tsunagi_core::clock::FixedClock;
use tsunagi_store_postgres::{PostgresEngine, PostgresStore};

const PREFIX: &str = "tsunagi_t_";

fn url() -> String {
    std::env::var("TSUNAGI_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Drops the schemas of test processes that no longer run.
async fn drop_stale_schemas() {
    let mut connection = sqlx::PgConnection::connect(&url())
        .await
        .expect("PostgreSQL at TSUNAGI_TEST_POSTGRES (default 127.0.0.1:5432, database test)");
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tsunagi\\_t\\_%'",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    for schema in schemas {
        let pid = schema
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            // Another test process may be dropping it too.
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut connection)
            .await;
        }
    }
}

async fn fresh() -> PostgresStore {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    drop_stale_schemas().await;
    let schema = format!(
        "{PREFIX}{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut connection = sqlx::PgConnection::connect(&url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut connection)
    .await
    .unwrap();
    let engine = PostgresEngine::connect_in_schema(
        &url(),
        Some(&schema),
        Arc::new(FixedClock(1_700_000_000_000_000)),
    )
    .await
    .unwrap();
    PostgresStore::with_engine(engine).await.unwrap()
}

tsunagi_store::store_conformance_suite!(fresh());

tsunagi_store::store_access_suite!(fresh());
