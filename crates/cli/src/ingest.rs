//! `tsunagi ingest ssmix2` and `tsunagi ingest extended`: one pull of SS-MIX2 standardized or
//! extended storage, the hospital registered on its first pull, and the summary a pull prints
//! (also `tsunagi run`'s).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use tsunagi_adapter::{PullAdapter, PullReport};
use tsunagi_adapter_mml::MmlConfig;
use tsunagi_adapter_ssmix2::Ssmix2Config;
use tsunagi_adapter_ssmix2_extended::ExtendedConfig;
use tsunagi_core::{
    FacilityId,
    clock::{Clock, SystemClock},
};
use tsunagi_store::Backend;

use crate::{
    open::{context, open_store},
    progress::TerminalProgress,
    registry, tables,
};

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

/// The flags every `tsunagi ingest <storage>` takes.
#[derive(Debug, clap::Args)]
pub(crate) struct StorageFlags {
    /// Database URL: sqlite://<path> (created if missing) or postgres://user@host:port/database.
    #[arg(long)]
    pub(crate) db: String,
    /// The facility's 10-digit medical-institution code.
    #[arg(long)]
    pub(crate) facility: String,
    /// The facility's name (for the summary).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Ignore the checkpoint and read everything again (writes stay idempotent).
    #[arg(long)]
    pub(crate) full: bool,
    /// Storage roots.
    #[arg(required = true)]
    pub(crate) roots: Vec<PathBuf>,
}

/// `tsunagi ingest ssmix2`: `mappings` is the code tables folder (default: built in),
/// `workers` the mapping threads (0: automatic).
pub(crate) async fn ingest_ssmix2(
    flags: StorageFlags,
    mappings: Option<PathBuf>,
    workers: usize,
) -> anyhow::Result<()> {
    let StorageFlags {
        db,
        facility,
        name,
        json,
        full,
        roots,
    } = flags;
    let (db, facility) = (db.as_str(), facility.as_str());
    let store = open_store(db).await?;
    let mut config = ssmix2_config(facility, name.clone(), roots, mappings.as_deref(), full)?;
    register_hospital(store.as_ref(), facility, name.as_deref(), json).await?;
    config.workers = workers;
    let adapter = registry::pull(registry::Source::Ssmix2(config));
    pull_and_report(store, adapter, facility, name.as_deref(), json).await
}

/// The configuration of an extended-storage pull (`batch_resources` and `max_document_bytes`
/// at their defaults unless given).
pub(crate) fn extended_config(
    facility: &str,
    name: Option<String>,
    roots: Vec<PathBuf>,
    batch_resources: Option<usize>,
    max_document_bytes: Option<u64>,
) -> anyhow::Result<ExtendedConfig> {
    Ok(ExtendedConfig {
        facility: FacilityId::parse(facility)?,
        name,
        roots,
        batch_resources: batch_resources.unwrap_or(DEFAULT_BATCH_RESOURCES),
        batch_bytes: tsunagi_adapter_ssmix2_extended::DEFAULT_BATCH_BYTES,
        max_document_bytes: max_document_bytes
            .unwrap_or(tsunagi_adapter_ssmix2_extended::DEFAULT_MAX_DOCUMENT_BYTES),
        full: false,
    })
}

/// The configuration of an MML export pull (`batch_resources` and `max_file_bytes` at their
/// defaults unless given).
pub(crate) fn mml_config(
    facility: &str,
    name: Option<String>,
    roots: Vec<PathBuf>,
    batch_resources: Option<usize>,
    max_file_bytes: Option<u64>,
) -> anyhow::Result<MmlConfig> {
    Ok(MmlConfig {
        facility: FacilityId::parse(facility)?,
        name,
        roots,
        batch_resources: batch_resources.unwrap_or(DEFAULT_BATCH_RESOURCES),
        max_file_bytes: max_file_bytes.unwrap_or(tsunagi_adapter_mml::DEFAULT_MAX_FILE_BYTES),
        full: false,
    })
}

/// `tsunagi ingest mml`: one pull of a hospital EHR's MML 4.0 export folders, reading files of
/// at most `max_file_bytes`.
pub(crate) async fn ingest_mml(flags: StorageFlags, max_file_bytes: u64) -> anyhow::Result<()> {
    let facility = flags.facility.as_str();
    let mut config = mml_config(
        facility,
        flags.name.clone(),
        flags.roots,
        None,
        Some(max_file_bytes),
    )?;
    config.full = flags.full;
    let store = open_store(&flags.db).await?;
    register_hospital(store.as_ref(), facility, flags.name.as_deref(), flags.json).await?;
    let adapter = registry::pull(registry::Source::Mml(config));
    pull_and_report(store, adapter, facility, flags.name.as_deref(), flags.json).await
}

/// One pull of a synthetic hospital's extended storage (the demo's, the benchmark's).
pub(crate) async fn pull_synthetic_extended(
    store: Arc<dyn tsunagi_store::Store>,
    facility: &tsunagi_synth::FacilityReport,
) -> anyhow::Result<PullReport> {
    let config = extended_config(
        &facility.code,
        Some(facility.name.clone()),
        vec![facility.root.clone()],
        None,
        None,
    )?;
    let adapter = registry::pull(registry::Source::Ssmix2Extended(config));
    Ok(adapter
        .pull(&context(store, Arc::new(tsunagi_adapter::NoProgress)))
        .await?)
}

/// `tsunagi ingest extended`: one pull of SS-MIX2 extended storage, reading main documents
/// of at most `max_document_bytes`.
pub(crate) async fn ingest_extended(
    flags: StorageFlags,
    max_document_bytes: u64,
) -> anyhow::Result<()> {
    let facility = flags.facility.as_str();
    let mut config = extended_config(
        facility,
        flags.name.clone(),
        flags.roots,
        None,
        Some(max_document_bytes),
    )?;
    config.full = flags.full;
    let store = open_store(&flags.db).await?;
    register_hospital(store.as_ref(), facility, flags.name.as_deref(), flags.json).await?;
    let adapter = registry::pull(registry::Source::Ssmix2Extended(config));
    pull_and_report(store, adapter, facility, flags.name.as_deref(), flags.json).await
}

/// Runs one pull with a progress line and prints its summary (or JSON).
pub(crate) async fn pull_and_report(
    store: Arc<dyn Backend>,
    adapter: Arc<dyn PullAdapter>,
    facility: &str,
    name: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
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
        print_summary(&report, name, seconds);
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
    let extended = matches!(
        report.adapter.as_str(),
        "ssmix2-extended" | "mml" | "dicomweb"
    );
    println!(
        "{}ingest of {}{}",
        match report.adapter.as_str() {
            "ssmix2-extended" => "SS-MIX2 extended-storage ",
            "mml" => "MML export ",
            "dicomweb" => "DICOMweb PACS ",
            _ => "SS-MIX2 ",
        },
        report.facility,
        name.map(|n| format!(" {n}")).unwrap_or_default()
    );
    println!(
        "  {:<10} {} seen, {} read, {} skipped as unchanged, {} rejected",
        match report.adapter.as_str() {
            "ssmix2-extended" => "documents",
            "dicomweb" => "studies",
            _ => "files",
        },
        report.files_seen,
        report.files_read,
        report.files_skipped_unchanged,
        report.rejected.len()
    );
    if extended {
        println!("  warnings   {}", report.warning_count);
    } else {
        println!(
            "  messages   {} mapped, {} records deleted by the source, {} warnings",
            report.messages, report.records_deleted, report.warning_count
        );
    }
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
