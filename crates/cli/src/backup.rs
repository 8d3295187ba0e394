//! `tsunagi admin backup` and `tsunagi admin restore`: an online copy of an embedded (SQLite)
//! store — its audit journal imported into it first, then the database copied as of one
//! instant (`VACUUM INTO`) while the server and the pulls go on — into a new folder with a
//! manifest (the file's size and SHA-256, the schema, when); and that copy brought back into a
//! new place, checked against its manifest and by SQLite's integrity check, then opened (and
//! migrated, if this build is newer). A backup never creates or migrates the live database: a
//! binary whose schema is not the database's refuses. PostgreSQL is backed up with its own tools (the README's
//! procedure).

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tsunagi_core::clock::{Clock, SystemClock};
use tsunagi_store_sqlite::SqliteStore;

/// The database file's name inside a backup folder.
const DATABASE: &str = "tsunagi.db";
/// The manifest's name.
const MANIFEST: &str = "manifest.json";

/// The database file a URL names (parsed as the store parses it); PostgreSQL is refused with
/// what to use instead.
fn sqlite_path(url: &str, what: &str) -> anyhow::Result<PathBuf> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        bail!(
            "{what} of PostgreSQL is done with its own tools: pg_dump --format=custom (or \
             pg_basebackup for the whole cluster), and pg_restore; see the README's \"Backups\""
        );
    }
    tsunagi_store_sqlite::database_file(url)
        .with_context(|| format!("{url:?}: expected sqlite://<path>"))
}

/// The SHA-256 of a file, read in parts, and its size.
fn digest(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, size))
}

/// `tsunagi admin backup --db sqlite://… --out <folder>`.
pub(crate) async fn backup(db: &str, out: &Path) -> anyhow::Result<()> {
    let path = sqlite_path(db, "a backup")?;
    // The live database as it is: never created, and never migrated by a binary of another
    // version (that would upgrade it under the server that runs on it).
    let path = path
        .canonicalize()
        .with_context(|| format!("{}: no such database", path.display()))?;
    if let Some(reason) = tsunagi_store_sqlite::schema_of_file(&path).await? {
        bail!(
            "{}: {reason}; back it up with the tsunagi binary its server runs",
            path.display()
        );
    }
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!(
            "{} is not empty: a backup goes into a new folder",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let began = SystemClock.now_micros();
    let url = format!("sqlite://{}", path.display());
    let store = SqliteStore::open(&url, Arc::new(SystemClock))
        .await
        .with_context(|| format!("cannot open {url}"))?;
    let target = out.join(DATABASE);
    store
        .engine()
        .backup_into(&target)
        .await
        .with_context(|| format!("copying {}", path.display()))?;
    store.engine().close().await;
    let (sha256, bytes) = digest(&target)?;
    let manifest = json!({
        "format": "tsunagi-backup-1",
        "source": path,
        "began": tsunagi_core::time::format_instant_jst(began),
        "database": {"file": DATABASE, "bytes": bytes, "sha256": sha256},
        "note": "the audit journal was imported before the copy: every access answered before the backup began is in the database"
    });
    std::fs::write(out.join(MANIFEST), serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("cannot write {}", out.join(MANIFEST).display()))?;
    println!(
        "backup of {} in {}: {DATABASE}, {bytes} bytes, sha256 {sha256}",
        path.display(),
        out.display()
    );
    Ok(())
}

/// What SQLite keeps beside a database file (`-wal` and `-shm` would be replayed into a file
/// put in its place), and the audit journal's files.
fn leftovers(path: &Path) -> Vec<PathBuf> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let directory = path.parent().filter(|p| !p.as_os_str().is_empty());
    let directory = directory.unwrap_or(Path::new("."));
    let mut found: Vec<PathBuf> = ["-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| directory.join(format!("{name}{suffix}")))
        .filter(|candidate| candidate.exists())
        .collect();
    if let Ok(entries) = std::fs::read_dir(directory) {
        found.extend(entries.flatten().map(|entry| entry.path()).filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}.audit-")))
        }));
    }
    found
}

/// `tsunagi admin restore --from <folder> --db sqlite://…` (a database that does not exist yet).
pub(crate) async fn restore(from: &Path, db: &str) -> anyhow::Result<()> {
    let path = sqlite_path(db, "a restore")?;
    if path.exists() {
        bail!(
            "{} exists: restore into a new place (stop the server, move the old database and \
             everything beside it named after it — -wal, -shm, .audit-* — aside, then restore)",
            path.display()
        );
    }
    let left = leftovers(&path);
    if !left.is_empty() {
        bail!(
            "{} are left beside {}: SQLite would apply an old -wal to the restored file; move \
             them aside first",
            left.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            path.display()
        );
    }
    let manifest_path = from.join(MANIFEST);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?,
    )
    .with_context(|| format!("{} is not a backup manifest", manifest_path.display()))?;
    if manifest["format"] != "tsunagi-backup-1" {
        bail!("{}: not a Tsunagi backup manifest", manifest_path.display());
    }
    let source = from.join(DATABASE);
    let (sha256, bytes) = digest(&source)?;
    if manifest["database"]["sha256"] != sha256.as_str() || manifest["database"]["bytes"] != bytes {
        bail!(
            "{}: its size or SHA-256 is not the manifest's: the backup is damaged",
            source.display()
        );
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // Copied under a temporary name and checked there (SQLite's integrity check, read-only);
    // only a whole copy is renamed into place, so a restore cut short or refused leaves nothing
    // that looks like a database.
    let mut partial = path.clone().into_os_string();
    partial.push(".restoring");
    let partial = PathBuf::from(partial);
    let copied = async {
        std::fs::copy(&source, &partial)
            .with_context(|| format!("cannot copy to {}", partial.display()))?;
        std::fs::File::open(&partial)?.sync_all()?;
        if let Some(problem) = tsunagi_store_sqlite::integrity_of_file(&partial).await? {
            bail!("the copy fails SQLite's integrity check: {problem}");
        }
        std::fs::rename(&partial, &path)
            .with_context(|| format!("cannot rename to {}", path.display()))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent)?.sync_all()?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(error) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    let url = format!("sqlite://{}", path.display());
    let store = SqliteStore::open(&url, Arc::new(SystemClock))
        .await
        .with_context(|| format!("cannot open the restored {url}"))?;
    let counts = tsunagi_store::Store::count_current(&store).await?;
    store.engine().close().await;
    let resources: u64 = counts.values().sum();
    println!(
        "restored {} from {} (taken {}): {resources} resources",
        path.display(),
        from.display(),
        manifest["began"].as_str().unwrap_or("?")
    );
    Ok(())
}
