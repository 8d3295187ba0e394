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
        let shown = without_password(url);
        let store = PostgresStore::open(url, Arc::new(SystemClock))
            .await
            .with_context(|| format!("cannot open {shown}"))?;
        let mode = ssl_mode(url);
        match store.engine().uses_tls().await {
            Ok(true) if mode == "verify-full" => {
                tracing::info!(target: "tsunagi::store", url = %shown, "PostgreSQL over TLS, certificate and name verified");
            }
            Ok(true) => tracing::warn!(
                target: "tsunagi::store", url = %shown, sslmode = %mode,
                "PostgreSQL over TLS, but the server's name is not verified: use sslmode=verify-full&sslrootcert=<CA file>"
            ),
            Ok(false) => tracing::warn!(
                target: "tsunagi::store", url = %shown,
                "PostgreSQL without TLS: outside a private network, add sslmode=verify-full&sslrootcert=<CA file> to the URL"
            ),
            // A server without `pg_stat_ssl` (a compatible one) still opens.
            Err(error) => tracing::warn!(
                target: "tsunagi::store", url = %shown, %error,
                "could not tell whether the PostgreSQL connection is encrypted"
            ),
        }
        return Ok(Arc::new(store));
    }
    bail!(
        "unsupported database url {url:?}: expected sqlite://<path> or postgres://user@host:port/database"
    )
}

/// `url` with its password (of the user part, or a `password=` parameter) replaced by `***`,
/// for messages and logs. The user part ends at the URL's last `@`: a password holding `/`,
/// `?`, `#` or `@` unescaped is hidden too (an `@` further on hides more, never less).
pub(crate) fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (user, tail) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let user = match user {
        Some(user) if user.contains(':') => {
            format!("{}:***@", user.split(':').next().unwrap_or_default())
        }
        Some(user) => format!("{user}@"),
        None => String::new(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let parameters: Vec<String> = query
                .split('&')
                .map(|parameter| match parameter.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => parameter.to_owned(),
                })
                .collect();
            format!("{path}?{}", parameters.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{user}{tail}")
}

/// The `sslmode` a PostgreSQL URL asks for (`prefer` when it names none, as libpq).
fn ssl_mode(url: &str) -> String {
    url.split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default()
        .split('&')
        .find_map(|parameter| {
            parameter
                .split_once('=')
                .filter(|(key, _)| key.eq_ignore_ascii_case("sslmode"))
                .map(|(_, mode)| mode.to_ascii_lowercase())
        })
        .unwrap_or_else(|| "prefer".to_owned())
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

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn passwords_are_not_shown() {
        for (url, shown) in [
            (
                "postgres://gw:s3cret@db.example:5432/region?sslmode=verify-full",
                "postgres://gw:***@db.example:5432/region?sslmode=verify-full",
            ),
            (
                "postgres://gw@db/region?password=s3cret&sslmode=require",
                "postgres://gw@db/region?password=***&sslmode=require",
            ),
            ("postgres://gw@db/region", "postgres://gw@db/region"),
            (
                "sqlite:///var/lib/tsunagi/a.db",
                "sqlite:///var/lib/tsunagi/a.db",
            ),
            ("postgres://p:a@b@db/x", "postgres://p:***@db/x"),
            ("postgres://gw:ab/cd@db/x", "postgres://gw:***@db/x"),
            ("postgres://gw:ab?cd@db", "postgres://gw:***@db"),
            ("postgres://gw:ab#c/d@db/x", "postgres://gw:***@db/x"),
        ] {
            assert_eq!(without_password(url), shown);
        }
    }

    #[test]
    fn the_ssl_mode_is_read_as_libpq_would() {
        assert_eq!(super::ssl_mode("postgres://db/x"), "prefer");
        assert_eq!(
            super::ssl_mode("postgres://db/x?sslmode=Verify-Full&sslrootcert=/a"),
            "verify-full"
        );
    }
}
