//! Token standings on several nodes of one PostgreSQL (`TSUNAGI_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`): a serving node's standing epoch is known once it
//! listens, and moves when another node changes what tokens stand on — the notification is
//! sent inside the change's transaction and heard when it commits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tsunagi_core::clock::SystemClock;
use tsunagi_store::{Backend, Governance, governance::Facility};
use tsunagi_store_postgres::{PostgresEngine, PostgresStore};

fn url() -> String {
    std::env::var("TSUNAGI_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

async fn node(schema: &str) -> PostgresStore {
    let engine = PostgresEngine::connect_in_schema(&url(), Some(schema), Arc::new(SystemClock))
        .await
        .unwrap();
    PostgresStore::with_engine(engine).await.unwrap()
}

/// Waits up to 5 s for `done`.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_change_on_one_node_moves_the_others_standing_epoch() {
    let schema = format!("tsunagi_standing_{}", std::process::id());
    PostgresEngine::drop_schema(&url(), &schema).await.unwrap();
    let writer = node(&schema).await;
    let server = node(&schema).await;
    assert_eq!(
        server.standing_epoch(),
        None,
        "before it serves, a node reads standings every time"
    );
    server.start_serving().await.unwrap();
    until("the server's listener never connected", || {
        server.standing_epoch().is_some()
    })
    .await;
    let before = server.standing_epoch().unwrap();
    writer
        .put_facility(&Facility {
            code: "0610100010".to_owned(),
            name: "荘内病院".to_owned(),
            kind: "hospital".to_owned(),
            active: false,
        })
        .await
        .unwrap();
    until("the server never heard of the change", || {
        server.standing_epoch().is_some_and(|now| now > before)
    })
    .await;
    drop(server);
    drop(writer);
    PostgresEngine::drop_schema(&url(), &schema).await.unwrap();
}
