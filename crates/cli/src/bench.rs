//! `tsunagi bench ingest`: generate a region, ingest it into a fresh database, ingest it again,
//! and print the figures against the targets. Use a release build.

use std::{path::PathBuf, sync::Arc, time::Instant};

use anyhow::Context;
use tsunagi_adapter::{AdapterContext, NoProgress, PullReport};
use tsunagi_core::clock::SystemClock;

use crate::{open, registry, tables};

/// Target: resources per second, end to end.
const TARGET_RESOURCES_PER_SECOND: f64 = 30_000.0;
/// Target: unchanged files skipped per second.
const TARGET_SKIPS_PER_SECOND: f64 = 50_000.0;
/// Target: peak resident set size.
const TARGET_PEAK_RSS_MB: f64 = 200.0;

pub(crate) fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
}

/// Resets the kernel's peak-RSS counter (Linux ≥ 4.0), so generation does not count.
pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub(crate) async fn pull_all(
    region: &std::path::Path,
    store: Arc<dyn tsunagi_store::Store>,
) -> anyhow::Result<Vec<PullReport>> {
    let mut reports = Vec::new();
    for hospital in tsunagi_synth::HOSPITALS {
        let config = tsunagi_adapter_ssmix2::Ssmix2Config {
            facility: tsunagi_core::FacilityId::parse(hospital.code)?,
            name: Some(hospital.name.to_owned()),
            roots: vec![region.join(hospital.code)],
            tables: Arc::new(tables::load(hospital.code, None)?),
            batch_resources: 2000,
            workers: 0,
            full: false,
        };
        let adapter = registry::pull(registry::Source::Ssmix2(config));
        let context = AdapterContext {
            store: store.clone(),
            clock: Arc::new(SystemClock),
            progress: Arc::new(NoProgress),
        };
        reports.push(adapter.pull(&context).await?);
    }
    Ok(reports)
}

/// Runs the ingest benchmark.
pub(crate) async fn ingest(
    patients: usize,
    seed: u64,
    keep: Option<PathBuf>,
    postgres: Option<String>,
) -> anyhow::Result<()> {
    check_postgres_url(postgres.as_deref())?;
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; measure with `cargo run --release -- bench ingest …`"
        );
    }
    let temporary = tempfile::tempdir()?;
    let base = keep.unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let region = base.join("region");
    let db = base.join("bench.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }

    let started = Instant::now();
    let generated = tsunagi_synth::generate_region(&region, patients, seed)?;
    let generate_seconds = started.elapsed().as_secs_f64();
    println!(
        "generated {} people, {} charts, {} files ({:.1} MB) in {generate_seconds:.1} s",
        generated.people,
        generated
            .facilities
            .iter()
            .map(|f| f.patients)
            .sum::<usize>(),
        generated.files,
        generated.bytes as f64 / 1e6
    );

    // Production storage is at rest when a pull starts; flush the freshly generated files so the
    // kernel's write-back of them does not run during the measurement.
    let _ = std::process::Command::new("sync").status();
    reset_peak_rss();
    let rss_before = status_kib("VmRSS:").unwrap_or(0);
    let store = open::open_store(&format!("sqlite://{}", db.display())).await?;
    let started = Instant::now();
    let first = pull_all(&region, store.clone()).await?;
    let ingest_seconds = started.elapsed().as_secs_f64();
    let written: u64 = first.iter().map(PullReport::resources_written).sum();
    let files: u64 = first.iter().map(|r| r.files_seen).sum();
    let rejected: usize = first.iter().map(|r| r.rejected.len()).sum();

    let started = Instant::now();
    let second = pull_all(&region, store.clone()).await?;
    let reingest_seconds = started.elapsed().as_secs_f64();
    let skipped: u64 = second.iter().map(|r| r.files_skipped_unchanged).sum();
    let reread: u64 = second.iter().map(|r| r.files_read).sum();
    let peak_mb = status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0;

    let resources_per_second = written as f64 / ingest_seconds;
    let skips_per_second = skipped as f64 / reingest_seconds;
    println!(
        "\ningest (fresh SQLite database, {} cores)",
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    );
    println!("  resources written     {written}");
    println!("  files                 {files} ({rejected} rejected)");
    println!("  time                  {ingest_seconds:.2} s");
    println!(
        "  resources/s           {resources_per_second:.0}   target ≥ {TARGET_RESOURCES_PER_SECOND:.0}   ratio {:.2}",
        resources_per_second / TARGET_RESOURCES_PER_SECOND
    );
    println!(
        "  files/s               {:.0}",
        files as f64 / ingest_seconds
    );
    println!("\nre-ingest of the unchanged storage");
    println!(
        "  files skipped         {skipped} of {} ({} re-read)",
        second.iter().map(|r| r.files_seen).sum::<u64>(),
        reread
    );
    println!("  time                  {reingest_seconds:.3} s");
    println!(
        "  skipped files/s       {skips_per_second:.0}   target ≥ {TARGET_SKIPS_PER_SECOND:.0}   ratio {:.2}",
        skips_per_second / TARGET_SKIPS_PER_SECOND
    );
    println!("\nmemory");
    println!(
        "  RSS before ingest     {:.1} MB",
        rss_before as f64 / 1024.0
    );
    println!(
        "  peak RSS (ingest)     {peak_mb:.1} MB   target ≤ {TARGET_PEAK_RSS_MB:.0}   ratio {:.2}",
        peak_mb / TARGET_PEAK_RSS_MB
    );
    if let Some(db) = postgres {
        ingest_postgres(&db, &region, written, resources_per_second).await?;
    }
    Ok(())
}

/// Refuses a `--db` that is not a PostgreSQL URL, before a benchmark begins.
pub(crate) fn check_postgres_url(db: Option<&str>) -> anyhow::Result<()> {
    if let Some(db) = db
        && !(db.starts_with("postgres://") || db.starts_with("postgresql://"))
    {
        anyhow::bail!("--db must be a postgres:// URL (SQLite is always measured)");
    }
    Ok(())
}

/// Runs `measure` with the URL of a fresh schema of its own (`tsunagi_bench_<tag>_<pid>`) on the
/// PostgreSQL at `db`, and drops the schema after, whatever the outcome.
pub(crate) async fn in_fresh_schema<T, F, Fut>(db: &str, tag: &str, measure: F) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let schema = format!("tsunagi_bench_{tag}_{}", std::process::id());
    tsunagi_store_postgres::PostgresEngine::drop_schema(db, &schema).await?;
    drop(
        tsunagi_store_postgres::PostgresEngine::connect_in_schema(
            db,
            Some(&schema),
            Arc::new(SystemClock),
        )
        .await?,
    );
    let separator = if db.contains('?') { '&' } else { '?' };
    let outcome = measure(format!(
        "{db}{separator}options=-c%20search_path%3D{schema}"
    ))
    .await;
    tsunagi_store_postgres::PostgresEngine::drop_schema(db, &schema).await?;
    outcome
}

/// PostgreSQL ingest is at least half SQLite's rate on the same corpus (issue 22).
const TARGET_POSTGRES_SHARE: f64 = 0.5;

/// The same region pulled into a schema of its own on the PostgreSQL at `db` (dropped after),
/// beside SQLite's rate of this run.
async fn ingest_postgres(
    db: &str,
    region: &std::path::Path,
    sqlite_written: u64,
    sqlite_rate: f64,
) -> anyhow::Result<()> {
    let (written, seconds) = in_fresh_schema(db, "ingest", |url| async move {
        let store = open::open_store(&url).await?;
        let started = Instant::now();
        let reports = pull_all(region, store.clone()).await?;
        let seconds = started.elapsed().as_secs_f64();
        let written: u64 = reports.iter().map(PullReport::resources_written).sum();
        anyhow::Ok((written, seconds))
    })
    .await?;
    let rate = written as f64 / seconds;
    println!(
        "
ingest of the same region into PostgreSQL (a fresh schema)"
    );
    println!("  resources written     {written} (SQLite: {sqlite_written})");
    println!("  time                  {seconds:.2} s");
    println!(
        "  resources/s           {rate:.0}   SQLite in this run {sqlite_rate:.0}   ratio {:.2}   target ≥ {TARGET_POSTGRES_SHARE:.2} {}",
        rate / sqlite_rate,
        if rate / sqlite_rate >= TARGET_POSTGRES_SHARE {
            "✔"
        } else {
            "✘"
        }
    );
    Ok(())
}
