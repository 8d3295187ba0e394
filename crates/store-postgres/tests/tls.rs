//! The PostgreSQL store over TLS, against the real test server (`TSUNAGI_TEST_POSTGRES`,
//! default `postgres://postgres@127.0.0.1:5432/test`), whose `ssl = on` with Debian's
//! self-signed certificate: `sslmode=verify-ca` with that certificate as the root connects
//! encrypted; `verify-full` to `127.0.0.1`, an address the certificate does not name, is refused
//! by name; `sslmode=disable` stays in clear. (The server must offer TLS: the test says so when
//! it does not.)
//!
//! Not tested here: a root that did not sign the server's certificate. sqlx adds
//! `sslrootcert` to the system's roots (libpq would use it alone), and Debian's
//! `/etc/ssl/certs` holds the snake-oil certificate itself, so it is trusted anyway.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use sqlx::Connection;
use tsunagi_core::clock::SystemClock;
use tsunagi_store_postgres::PostgresEngine;

/// The schema the test's stores open (this process's own; dropped at the end).
fn schema() -> String {
    format!("tsunagi_tls_{}", std::process::id())
}

fn url() -> String {
    std::env::var("TSUNAGI_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn with(parameters: &str) -> String {
    let url = url();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{parameters}")
}

/// The server's certificate file, as its settings name it (the test server must offer TLS).
async fn server_certificate() -> String {
    let mut connection = sqlx::PgConnection::connect(&with("sslmode=disable"))
        .await
        .unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        ssl, "on",
        "the test PostgreSQL must offer TLS (Debian's package does, with its snake-oil certificate)"
    );
    sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&mut connection)
        .await
        .unwrap()
}

async fn connect(url: &str) -> Result<PostgresEngine, tsunagi_store::StoreError> {
    PostgresEngine::connect_in_schema(url, Some(&schema()), Arc::new(SystemClock)).await
}

#[tokio::test]
async fn the_store_connects_over_verified_tls_and_refuses_a_name_the_certificate_lacks() {
    let certificate = server_certificate().await;
    let clear = connect(&with("sslmode=disable")).await.unwrap();
    assert!(!clear.uses_tls().await.unwrap(), "disable is in clear");
    clear.close().await;

    // The chain checked against the server's own certificate as the root (the name is not).
    let verified = connect(&with(&format!(
        "sslmode=verify-ca&sslrootcert={certificate}"
    )))
    .await
    .unwrap();
    assert!(verified.uses_tls().await.unwrap(), "verify-ca is encrypted");
    verified.close().await;

    // A self-signed server certificate names a host, never the address 127.0.0.1.
    if url().contains("@127.0.0.1:") {
        let error = connect(&with(&format!(
            "sslmode=verify-full&sslrootcert={certificate}"
        )))
        .await
        .expect_err("verify-full checks the name")
        .to_string();
        assert!(error.contains("not valid for name"), "{error}");
    }
    drop_schema().await;
}

async fn drop_schema() {
    PostgresEngine::drop_schema(&with("sslmode=disable"), &schema())
        .await
        .unwrap();
}
