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
use tsunagi_store_postgres::PostgresStore;

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
    PostgresStore::open_in_schema(
        &url(),
        Some(&schema),
        Arc::new(FixedClock(1_700_000_000_000_000)),
    )
    .await
    .unwrap()
}

// The storage semantics, includes, compartments and history. FHIR search (and the policy
// matrix, which searches) needs the search planner, not yet ported to PostgreSQL.
tsunagi_store::store_conformance_suite!(@tests fresh();
    create_and_read,
    reapplying_is_a_no_op,
    changes_make_versions_and_keep_history,
    replace_source_deletes_what_it_no_longer_holds,
    delete_then_recreate,
    index_rows_follow_the_current_version,
    checkpoints_commit_with_the_data,
    a_failing_batch_leaves_nothing,
    one_batch_may_touch_a_resource_twice,
    an_existing_resource_updated_twice_in_one_batch,
    export_order_and_counts,
);

tsunagi_store::store_conformance_suite!(@search fresh();
    search_includes_compartments_and_history,
);

// The governance records and their effect on reads (the policy matrix itself searches).
tsunagi_store::store_access_suite!(@tests fresh();
    withdrawal_and_unlinking_take_effect_at_once,
    governance_records_are_checked_and_audit_is_append_only,
);
