//! The commands: ingest, export, generate, run (`demo` and `serve` have files of their own).

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Instant,
};

use anyhow::{Context, bail};
use tsunagi_adapter::{AdapterContext, NoProgress, PullAdapter, PullReport};
use tsunagi_adapter_ssmix2::Ssmix2Config;
use tsunagi_core::{
    FacilityId,
    clock::{Clock, SystemClock},
};
use tsunagi_store::Backend;
use tsunagi_store::Store;
use tsunagi_store_postgres::PostgresStore;
use tsunagi_store_sqlite::SqliteStore;

use crate::{config::Config, progress::TerminalProgress, registry, tables};

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

pub(crate) fn ssmix2_config(
    facility: &str,
    name: Option<String>,
    roots: Vec<PathBuf>,
    mappings: Option<&Path>,
    full: bool,
) -> anyhow::Result<Ssmix2Config> {
    let facility_id = FacilityId::parse(facility)?;
    let tables = tables::load(facility, mappings)?;
    Ok(Ssmix2Config {
        facility: facility_id,
        name,
        roots,
        tables: Arc::new(tables),
        batch_resources: DEFAULT_BATCH_RESOURCES,
        workers: 0,
        full,
    })
}

/// Resources per store transaction of an SS-MIX2 pull (an ssmix2 source's `batch_resources`).
pub(crate) const DEFAULT_BATCH_RESOURCES: usize = 2000;

/// The flags of `tsunagi ingest ssmix2`.
pub(crate) struct Ssmix2Ingest {
    /// Database URL.
    pub(crate) db: String,
    /// 10-digit facility code.
    pub(crate) facility: String,
    /// Facility name for the summary.
    pub(crate) name: Option<String>,
    /// Storage roots.
    pub(crate) roots: Vec<PathBuf>,
    /// Code tables folder (default: built in).
    pub(crate) mappings: Option<PathBuf>,
    /// Print the summary as JSON.
    pub(crate) json: bool,
    /// Ignore the checkpoint.
    pub(crate) full: bool,
    /// Mapping worker threads (0 = automatic).
    pub(crate) workers: usize,
}

/// `tsunagi ingest ssmix2`.
pub(crate) async fn ingest_ssmix2(flags: Ssmix2Ingest) -> anyhow::Result<()> {
    let Ssmix2Ingest {
        db,
        facility,
        name,
        roots,
        mappings,
        json,
        full,
        workers,
    } = flags;
    let (db, facility) = (db.as_str(), facility.as_str());
    let store = open_store(db).await?;
    let mut config = ssmix2_config(facility, name.clone(), roots, mappings.as_deref(), full)?;
    register_hospital(store.as_ref(), facility, name.as_deref(), json).await?;
    config.workers = workers;
    let adapter = registry::pull(registry::Source::Ssmix2(config));
    let label = format!("ingest {facility}");
    let (progress, drawer) = TerminalProgress::start(label, !json);
    let started = Instant::now();
    let result = adapter.pull(&context(store, progress.clone())).await;
    progress.finish(drawer);
    let report = result?;
    let seconds = started.elapsed().as_secs_f64();
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["name"] = serde_json::json!(name);
        value["seconds"] = serde_json::json!(seconds);
        println!("{}", serde_json::to_string(&value)?);
    } else {
        print_summary(&report, name.as_deref(), seconds);
    }
    Ok(())
}

/// A hospital pulled for the first time joins the directory (kind hospital, named by `--name`),
/// so that consents, clients and deliveries can name it; one already registered is left as is.
pub(crate) async fn register_hospital(
    store: &dyn Backend,
    facility: &str,
    name: Option<&str>,
    quiet: bool,
) -> anyhow::Result<()> {
    if store
        .facilities()
        .await?
        .iter()
        .any(|known| known.code == facility)
    {
        return Ok(());
    }
    let hospital = tsunagi_store::governance::Facility {
        code: facility.to_owned(),
        name: name.unwrap_or(facility).to_owned(),
        kind: "hospital".to_owned(),
        active: true,
    };
    let record = crate::admin::act(
        tsunagi_store::operator::Act::FacilityAdd,
        facility,
        None,
        SystemClock.now_micros(),
    );
    store
        .change(
            tsunagi_store::governance::Change::Facility(hospital),
            Some(&record),
        )
        .await?;
    if !quiet {
        println!(
            "facility {facility} registered as a hospital ({}); `tsunagi admin facility add` changes it",
            name.unwrap_or(facility)
        );
    }
    Ok(())
}

pub(crate) fn total(map: &BTreeMap<String, u64>) -> u64 {
    map.values().sum()
}

/// Prints a human summary of one pull.
pub(crate) fn print_summary(report: &PullReport, name: Option<&str>, seconds: f64) {
    println!(
        "SS-MIX2 ingest of {}{}",
        report.facility,
        name.map(|n| format!(" {n}")).unwrap_or_default()
    );
    println!(
        "  files      {} seen, {} read, {} skipped as unchanged, {} rejected",
        report.files_seen,
        report.files_read,
        report.files_skipped_unchanged,
        report.rejected.len()
    );
    println!(
        "  messages   {} mapped, {} records deleted by the source, {} warnings",
        report.messages, report.records_deleted, report.warning_count
    );
    println!(
        "  resources  {} written: {} created, {} updated, {} unchanged, {} deleted",
        report.resources_written(),
        total(&report.created),
        total(&report.updated),
        total(&report.unchanged),
        total(&report.deleted)
    );
    let mut types: Vec<&String> = report
        .created
        .keys()
        .chain(report.updated.keys())
        .chain(report.deleted.keys())
        .collect();
    types.sort();
    types.dedup();
    for resource_type in types {
        let get = |map: &BTreeMap<String, u64>| map.get(resource_type).copied().unwrap_or(0);
        println!(
            "    {:<26} {:>8} created {:>7} updated {:>7} deleted",
            resource_type,
            get(&report.created),
            get(&report.updated),
            get(&report.deleted)
        );
    }
    if !report.rejected.is_empty() {
        println!("  rejected:");
        for rejection in &report.rejected {
            println!("    {}: {}", rejection.source, rejection.reason);
        }
    }
    if !report.warning_kinds.is_empty() {
        println!("  warnings, by kind:");
        for kind in &report.warning_kinds {
            println!("    {} × {}", kind.count, kind.kind);
            for source in &kind.first {
                println!("        {source}");
            }
            if kind.count > kind.first.len() as u64 {
                println!(
                    "        … and {} more",
                    kind.count - kind.first.len() as u64
                );
            }
        }
    }
    println!(
        "  time       {seconds:.2} s ({:.0} resources/s, {:.0} files/s)",
        report.resources_written() as f64 / seconds.max(1e-9),
        report.files_seen as f64 / seconds.max(1e-9)
    );
}

/// `tsunagi export ndjson`.
pub(crate) async fn export_ndjson(db: &str, out: &Path) -> anyhow::Result<()> {
    let store = open_store(db).await?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut current: Option<(String, std::io::BufWriter<std::fs::File>)> = None;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let out_dir = out.to_path_buf();
    store
        .for_each_current(&mut |resource| {
            let store_error = |error: std::io::Error| {
                tsunagi_store::StoreError::Invalid(format!("cannot write the export: {error}"))
            };
            if current
                .as_ref()
                .map(|(kind, _)| kind != &resource.resource_type)
                .unwrap_or(true)
            {
                if let Some((_, mut writer)) = current.take() {
                    writer.flush().map_err(store_error)?;
                }
                let path = out_dir.join(format!("{}.ndjson", resource.resource_type));
                let file = std::fs::File::create(&path).map_err(store_error)?;
                current = Some((
                    resource.resource_type.clone(),
                    std::io::BufWriter::new(file),
                ));
            }
            let Some(bytes) = resource.to_json_bytes()? else {
                return Ok(());
            };
            if let Some((_, writer)) = current.as_mut() {
                writer.write_all(&bytes).map_err(store_error)?;
                writer.write_all(b"\n").map_err(store_error)?;
            }
            *counts.entry(resource.resource_type.clone()).or_default() += 1;
            Ok(())
        })
        .await?;
    if let Some((_, mut writer)) = current.take() {
        writer.flush()?;
    }
    let total: u64 = counts.values().sum();
    println!("exported {total} resources to {}", out.display());
    for (resource_type, count) in counts {
        println!("  {resource_type}.ndjson  {count}");
    }
    Ok(())
}

/// `tsunagi generate region`.
pub(crate) fn generate_region(out: &Path, patients: usize, seed: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let report = tsunagi_synth::generate_region(out, patients, seed)
        .with_context(|| format!("cannot generate into {}", out.display()))?;
    println!(
        "generated {} people ({} with records in two hospitals): {} files, {:.1} MB in {:.1} s",
        report.people,
        report.shared,
        report.files,
        report.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    for facility in &report.facilities {
        println!(
            "  {} {}  {} patients, {} files  {}",
            facility.code,
            facility.name,
            facility.patients,
            facility.files,
            facility.root.display()
        );
    }
    println!("manifest: {}", out.join("region.json").display());
    Ok(())
}

/// `tsunagi demo`.
/// `tsunagi run`: cron-scheduled pulls.
pub(crate) async fn run(path: &Path, once: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let store = open_store(&config.store.url).await?;
    let mut jobs: Vec<(cron::Schedule, Arc<dyn PullAdapter>, Option<String>)> = Vec::new();
    for source in config.ssmix2 {
        let schedule = cron::Schedule::from_str(&source.schedule)?;
        let mut ssmix2 = ssmix2_config(
            &source.facility,
            source.name.clone(),
            source.roots,
            source.mappings.as_deref(),
            false,
        )?;
        if let Some(batch) = source.batch_resources {
            ssmix2.batch_resources = batch;
        }
        if let Some(workers) = source.workers {
            ssmix2.workers = workers;
        }
        jobs.push((
            schedule,
            registry::pull(registry::Source::Ssmix2(ssmix2)),
            source.name,
        ));
    }
    if jobs.is_empty() {
        bail!(
            "{} configures no sources (adapters known to this build: {})",
            path.display(),
            registry::SOURCE_KINDS.join(", ")
        );
    }
    if once {
        for (_, adapter, name) in &jobs {
            let started = Instant::now();
            let report = adapter
                .pull(&context(store.clone(), Arc::new(NoProgress)))
                .await?;
            print_summary(&report, name.as_deref(), started.elapsed().as_secs_f64());
        }
        return Ok(());
    }
    let mut tasks = Vec::new();
    for (schedule, adapter, name) in jobs {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(next) = schedule.upcoming(chrono::Utc).next() else { return };
                let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                let started = Instant::now();
                let info = adapter.describe();
                match adapter.pull(&context(store.clone(), Arc::new(NoProgress))).await {
                    Ok(report) => eprintln!(
                        "pull {} {}: {} files seen, {} read, {} rejected, {} resources written in {:.2} s",
                        info.kind,
                        name.as_deref().unwrap_or(&info.facility),
                        report.files_seen,
                        report.files_read,
                        report.rejected.len(),
                        report.resources_written(),
                        started.elapsed().as_secs_f64()
                    ),
                    Err(error) => eprintln!("pull {} {} failed: {error}", info.kind, info.facility),
                }
            }
        }));
    }
    eprintln!("running {} scheduled pull(s); Ctrl-C stops", tasks.len());
    tokio::signal::ctrl_c().await?;
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// `tsunagi config check`: parses the file, names what it configures, and for a version-1 file
/// says what to change (it is still read as it is).
pub(crate) fn check_config(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    // What `run` and `serve` build from it, built now: mapping tables, address ranges.
    for source in &config.ssmix2 {
        ssmix2_config(
            &source.facility,
            source.name.clone(),
            source.roots.clone(),
            source.mappings.as_deref(),
            false,
        )
        .with_context(|| format!("{}: ssmix2 source {}", path.display(), source.facility))?;
    }
    crate::serve::feeds_from_config(Some(&config))
        .with_context(|| format!("{}: hl7v2 sources", path.display()))?;
    println!(
        "{}: config version {}, valid",
        path.display(),
        config.version
    );
    let mut kinds: Vec<String> = Vec::new();
    if !config.ssmix2.is_empty() {
        kinds.push(format!("{} ssmix2", config.ssmix2.len()));
    }
    if !config.hl7v2.is_empty() {
        kinds.push(format!("{} hl7v2", config.hl7v2.len()));
    }
    println!(
        "sources: {} (kinds this build knows: {})",
        if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds.join(", ")
        },
        registry::SOURCE_KINDS.join(", ")
    );
    println!(
        "destinations: {} (kinds this build knows: {})",
        config.outbound.len(),
        registry::DESTINATION_KINDS.join(", ")
    );
    let notes = config.upgrade_notes();
    if !notes.is_empty() {
        println!("version 1 is still read; to write it as version 2:");
        for note in notes {
            println!("  - {note}");
        }
    }
    Ok(())
}
