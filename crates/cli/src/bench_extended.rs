//! `tsunagi bench extended`: generate extended storage (many documents per patient), measure the
//! machine's floor — reading and hashing (SHA-256) every document file — then pull it into a
//! fresh SQLite store and pull it again unchanged; print documents/s and MB/s beside the floor,
//! the skip rate beside its own floor (listing and stat'ing every file, opening none) and peak
//! RSS, against the targets. Use a release build.

use std::{path::Path, sync::Arc, time::Instant};

use sha2::{Digest, Sha256};
use tsunagi_adapter::PullReport;

use crate::{
    bench::{reset_peak_rss, status_kib},
    open,
};

const TARGET_DOCUMENTS_PER_SECOND: f64 = 1_000.0;
const TARGET_MB_PER_SECOND: f64 = 100.0;
const TARGET_SKIPS_PER_SECOND: f64 = 50_000.0;
const TARGET_PEAK_RSS_MB: f64 = 200.0;

/// Calls `file` on every file under `dir` (folders walked, never followed).
fn each_file(
    dir: &Path,
    file: &mut dyn FnMut(&std::fs::DirEntry) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                file(&entry)?;
            }
        }
    }
    Ok(())
}

/// Every file under `dir`, read and hashed: (files, bytes).
fn read_and_hash(dir: &Path) -> std::io::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0u64, 0u64);
    each_file(dir, &mut |entry| {
        let content = std::fs::read(entry.path())?;
        std::hint::black_box(Sha256::digest(&content));
        files += 1;
        bytes += content.len() as u64;
        Ok(())
    })?;
    Ok((files, bytes))
}

/// Every file under `dir`, listed and stat'ed (size and time, as a re-pull must): files. The
/// floor of an unchanged re-pull, which opens nothing.
fn walk_and_stat(dir: &Path) -> std::io::Result<u64> {
    let mut files = 0u64;
    each_file(dir, &mut |entry| {
        std::hint::black_box(entry.metadata()?.modified()?);
        files += 1;
        Ok(())
    })?;
    Ok(files)
}

async fn pull_all(
    report: &tsunagi_synth::ExtendedReport,
    store: Arc<dyn tsunagi_store::Store>,
) -> anyhow::Result<Vec<PullReport>> {
    let mut reports = Vec::new();
    for facility in &report.facilities {
        reports.push(crate::ingest::pull_synthetic_extended(store.clone(), facility).await?);
    }
    Ok(reports)
}

/// The second corpus: `count` scanned PDFs of [`LARGE_BYTES`] each over ten patients' extended
/// storage, pulled into a fresh store beside the floor of reading and hashing them: MB/s and
/// peak RSS where document bytes, not files, dominate.
async fn large_documents(count: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("extended");
    let data_type = "SC01^スキャン文書^99ZZZ^^^";
    let pdf = crate::bench_documents::big_pdf(LARGE_BYTES);
    for index in 0..count {
        let pid = format!("{:010}", 9_000_000_000u64 + (index % 10) as u64);
        // Each file differs (its own bytes, its own blob), as scans do.
        let mut bytes = pdf.clone();
        bytes.extend_from_slice(format!("\n%{index}\n").as_bytes());
        let folder = root
            .join(&pid[..3])
            .join(&pid[3..6])
            .join(&pid)
            .join("20240501")
            .join(data_type)
            .join(format!(
                "{pid}_20240501_SC01_SC{index:04}_20240501120000000_01_1"
            ));
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join("main_document.pdf"), bytes)?;
    }
    read_and_hash(&root)?;
    let started = Instant::now();
    let (files, bytes) = read_and_hash(&root)?;
    let floor = started.elapsed().as_secs_f64();
    let store = open::open_store(&format!(
        "sqlite://{}",
        dir.path().join("large.db").display()
    ))
    .await?;
    let config =
        crate::ingest::extended_config(BENCH_LARGE_FACILITY, None, vec![root.clone()], None, None)?;
    let adapter = crate::registry::pull(crate::registry::Source::Ssmix2Extended(config));
    reset_peak_rss();
    // What the process held before (the first corpus's store stays open for the API half).
    let baseline_mb = status_kib("VmRSS:").unwrap_or(0) as f64 / 1024.0;
    let started = Instant::now();
    let report = adapter
        .pull(&crate::open::context(
            store,
            Arc::new(tsunagi_adapter::NoProgress),
        ))
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let peak_mb = status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0;
    if report.files_read != files || !report.rejected.is_empty() {
        anyhow::bail!(
            "large documents: {} of {files} read, {:?}",
            report.files_read,
            report.rejected
        );
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "large documents: {files} PDFs of {:.1} MB ({mb:.0} MB), pulled into SQLite",
        LARGE_BYTES as f64 / 1e6
    );
    println!(
        "  MB/s of documents     {:>10.1}   {:>12.1}            {:>5.2}   ≥ {TARGET_MB_PER_SECOND:.0} (×{:.2})",
        mb / seconds,
        mb / floor,
        floor / seconds,
        mb / seconds / TARGET_MB_PER_SECOND
    );
    println!(
        "  peak RSS (pull)       {peak_mb:>10.1} MB ({baseline_mb:.1} MB before it: the pull's own {:.1} MB)   ≤ {TARGET_PEAK_RSS_MB:.0} (×{:.2})",
        peak_mb - baseline_mb,
        (peak_mb - baseline_mb) / TARGET_PEAK_RSS_MB
    );
    Ok(())
}

/// Bytes of each document of the large corpus.
const LARGE_BYTES: usize = 5 * 1024 * 1024;

/// The hospital the large corpus is filed under.
const BENCH_LARGE_FACILITY: &str = "0610100010";

/// Runs the extended-storage benchmark.
pub(crate) async fn extended(
    patients: usize,
    documents: u64,
    large: usize,
    seed: u64,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    println!(
        "generating extended storage: {patients} people, at least {documents} progress notes per chart…"
    );
    let generated = tsunagi_synth::generate_extended_with(dir.path(), patients, seed, documents)?;
    let root = dir.path().join("extended");
    // The floor: the same files read and hashed, nothing else (after a first read that warms
    // the page cache for both measurements alike).
    read_and_hash(&root)?;
    let started = Instant::now();
    let (files, bytes) = read_and_hash(&root)?;
    let floor = started.elapsed().as_secs_f64();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = open::open_store(&url).await?;
    reset_peak_rss();
    let started = Instant::now();
    let reports = pull_all(&generated, store.clone()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let peak_mb = status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0;
    let read: u64 = reports.iter().map(|r| r.files_read).sum();
    let rejected: usize = reports.iter().map(|r| r.rejected.len()).sum();
    let started = Instant::now();
    let again = pull_all(&generated, store.clone()).await?;
    let reseconds = started.elapsed().as_secs_f64();
    let skipped: u64 = again.iter().map(|r| r.files_skipped_unchanged).sum();
    let started = Instant::now();
    let walked = walk_and_stat(&root)?;
    let walk_floor = walked as f64 / started.elapsed().as_secs_f64();
    let mb = bytes as f64 / 1e6;
    println!(
        "{} documents ({read} read, {rejected} rejected), {mb:.1} MB, in {} storages, into SQLite",
        generated.files,
        generated.facilities.len()
    );
    println!("  measure                  this run      floor (read + SHA-256)   ratio   target");
    let docs_per_second = read as f64 / seconds;
    let floor_docs = files as f64 / floor;
    println!(
        "  documents/s           {docs_per_second:>10.0}   {floor_docs:>12.0}            {:>5.2}   ≥ {TARGET_DOCUMENTS_PER_SECOND:.0} (×{:.2})",
        docs_per_second / floor_docs,
        docs_per_second / TARGET_DOCUMENTS_PER_SECOND
    );
    let mb_per_second = mb / seconds;
    let floor_mb = mb / floor;
    println!(
        "  MB/s of documents     {mb_per_second:>10.1}   {floor_mb:>12.1}            {:>5.2}   ≥ {TARGET_MB_PER_SECOND:.0} (×{:.2})",
        mb_per_second / floor_mb,
        mb_per_second / TARGET_MB_PER_SECOND
    );
    let skips = skipped as f64 / reseconds;
    println!(
        "  unchanged re-pull     {skips:>10.0}   {walk_floor:>12.0} (walk + stat)   {:>5.2}   ≥ {TARGET_SKIPS_PER_SECOND:.0} skipped files/s (×{:.2})",
        skips / walk_floor,
        skips / TARGET_SKIPS_PER_SECOND
    );
    println!(
        "  peak RSS (pull)       {peak_mb:>10.1} MB                                    ≤ {TARGET_PEAK_RSS_MB:.0} (×{:.2})",
        peak_mb / TARGET_PEAK_RSS_MB
    );
    if large > 0 {
        large_documents(large).await?;
    }
    let region = crate::bench_search::Region::serve(dir, store, patients).await?;
    crate::bench_documents::documents_through_the_api(&region).await
}
