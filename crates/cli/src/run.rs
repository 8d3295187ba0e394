//! `tsunagi run`: the config's pulled sources, each on its cron schedule (or once). Each tick of
//! a source is claimed in the database before it is pulled (`Governance::claim_run`), so several
//! nodes running one configuration on one database pull each tick once, and a source by one node
//! at a time (the claimant holds it while it pulls; a dead node's hold runs out).

use std::{path::Path, str::FromStr, sync::Arc, time::Instant};

use anyhow::{Context, bail};
use tsunagi_adapter::{AdapterError, NoProgress, PullAdapter, PullReport};
use tsunagi_core::metrics;

use crate::{
    config::Config,
    ingest::{print_summary, ssmix2_config},
    open::{context, open_store},
    registry,
};

/// How long a claimed pull holds its source (microseconds), renewed every third of it.
const PULL_HOLD: i64 = 60 * 1_000_000;

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts a scheduled pull of `source` in `/metrics` (`tsunagi_pull_*`).
fn count_pull(source: &str, pulled: &Result<PullReport, AdapterError>, seconds: f64) {
    let result = if pulled.is_ok() { "ok" } else { "failed" };
    let pulls = [("source", source), ("result", result)];
    metrics::observe(&metrics::PULL_SECONDS, &[("source", source)], seconds);
    // The pull itself is counted last: a scrape that sees it sees everything it counted.
    let Ok(report) = pulled else {
        metrics::count(&metrics::PULLS, &pulls, 1);
        return;
    };
    let rejected = u64::try_from(report.rejected.len()).unwrap_or(u64::MAX);
    for (outcome, files) in [
        ("read", report.files_read),
        ("skipped", report.files_skipped_unchanged),
        ("rejected", rejected),
    ] {
        metrics::count(
            &metrics::PULL_FILES,
            &[("source", source), ("outcome", outcome)],
            files,
        );
    }
    for (change, counts) in [
        ("created", &report.created),
        ("updated", &report.updated),
        ("unchanged", &report.unchanged),
        ("deleted", &report.deleted),
    ] {
        metrics::count(
            &metrics::PULL_RESOURCES,
            &[("source", source), ("change", change)],
            counts.values().sum(),
        );
    }
    let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
    metrics::set(&metrics::PULL_SUCCEEDED_AT, &[("source", source)], now);
    metrics::count(&metrics::PULLS, &pulls, 1);
}

/// Serves this process's counters at `GET /metrics` on `address` (an operator's port: bind
/// it to loopback or a private network).
async fn serve_metrics(address: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for /metrics on {address}"))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                metrics::render(),
            )
        }),
    );
    eprintln!("metrics at http://{}/metrics", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            eprintln!("the /metrics listener stopped: {error}");
        }
    });
    Ok(())
}

/// `tsunagi run`: cron-scheduled pulls; with `metrics`, their counters at `GET /metrics`.
pub(crate) async fn run(path: &Path, once: bool, metrics: Option<&str>) -> anyhow::Result<()> {
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
    for source in config.extended {
        let schedule = cron::Schedule::from_str(&source.schedule)?;
        let extended = crate::ingest::extended_config(
            &source.facility,
            source.name.clone(),
            source.roots,
            source.batch_resources,
            source.max_document_bytes,
        )?;
        jobs.push((
            schedule,
            registry::pull(registry::Source::Ssmix2Extended(extended)),
            source.name,
        ));
    }
    for source in config.mml {
        let schedule = cron::Schedule::from_str(&source.schedule)?;
        let mml = crate::ingest::mml_config(
            &source.facility,
            source.name.clone(),
            source.roots,
            source.batch_resources,
            source.max_file_bytes,
        )?;
        jobs.push((
            schedule,
            registry::pull(registry::Source::Mml(mml)),
            source.name,
        ));
    }
    let gateway = crate::ingest_dicomweb::gateway_of(config.server.base_url.as_deref());
    for source in config.dicomweb {
        let schedule = cron::Schedule::from_str(&source.schedule)?;
        let mut pacs = crate::ingest_dicomweb::dicomweb_config(&source)?;
        pacs.gateway_url.clone_from(&gateway);
        jobs.push((
            schedule,
            registry::pull(registry::Source::DicomWeb(pacs)),
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
        if metrics.is_some() {
            bail!(
                "--metrics serves a running scheduler's counters; --once exits after one pull of each source"
            );
        }
        for (_, adapter, name) in &jobs {
            let started = Instant::now();
            let report = adapter
                .pull(&context(store.clone(), Arc::new(NoProgress)))
                .await?;
            print_summary(&report, name.as_deref(), started.elapsed().as_secs_f64());
        }
        return Ok(());
    }
    if let Some(address) = metrics {
        serve_metrics(address).await?;
    }
    // Several nodes may run the same schedules on one database: each tick of a source is
    // claimed in the database first, and only its one claimant pulls.
    // The process is part of the claimant's name: two `run` processes of one host are two
    // claimants (a restarted one waits for its previous life's hold to run out).
    let node = format!("{}:{}", tsunagi_adapter::node_name(), std::process::id());
    // Each source's claim key; the claims of sources no longer configured would show a lag
    // growing forever in /metrics.
    let configured: Vec<String> = jobs
        .iter()
        .map(|(_, adapter, _)| {
            let info = adapter.describe();
            format!("{}:{}", info.kind, info.facility)
        })
        .collect();
    match store
        .forget_runs(&configured, chrono::Utc::now().timestamp_micros())
        .await
    {
        Ok(0) => {}
        Ok(forgotten) => {
            eprintln!("forgot the pull claims of {forgotten} source(s) no longer configured");
        }
        Err(error) => eprintln!("the pull claims of removed sources stay: {error}"),
    }
    let mut tasks = Vec::new();
    for ((schedule, adapter, name), source) in jobs.into_iter().zip(configured) {
        let store = store.clone();
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = None;
            loop {
                let Some(next) = schedule.upcoming(chrono::Utc).find(|tick| Some(*tick) != last)
                else {
                    return;
                };
                let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                last = Some(next);
                let info = adapter.describe();
                let now = chrono::Utc::now().timestamp_micros();
                let tick = next.timestamp();
                match store
                    .claim_run(&source, tick, &node, now, now.saturating_add(PULL_HOLD))
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        eprintln!("pull {source} at {next}: another node pulls it");
                        continue;
                    }
                    Err(error) => {
                        eprintln!("pull {source} at {next}: not claimed ({error}); skipped");
                        continue;
                    }
                }
                let started = Instant::now();
                eprintln!("pull {source} at {next}: claimed by {node}");
                // The source is held while the pull runs: no other node starts a later tick
                // beside it; should this node die, the hold runs out and another takes over.
                // The heartbeat stops when this guard drops, however the pull ends.
                let heartbeat = AbortOnDrop({
                    let (store, source) = (store.clone(), source.clone());
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(std::time::Duration::from_micros(
                                u64::try_from(PULL_HOLD / 3).unwrap_or(20_000_000),
                            ))
                            .await;
                            let until = chrono::Utc::now()
                                .timestamp_micros()
                                .saturating_add(PULL_HOLD);
                            match store.renew_run(&source, tick, until).await {
                                Ok(true) => {}
                                Ok(false) => eprintln!(
                                    "pull {source}: its hold is gone (taken over?); another node may pull beside this one"
                                ),
                                Err(error) => {
                                    eprintln!("pull {source}: the hold could not be renewed ({error})");
                                }
                            }
                        }
                    })
                });
                let pulled = adapter.pull(&context(store.clone(), Arc::new(NoProgress))).await;
                drop(heartbeat);
                count_pull(&source, &pulled, started.elapsed().as_secs_f64());
                if let Err(error) = store.finish_run(&source, tick).await {
                    eprintln!("pull {source}: the hold could not be ended ({error}); it runs out");
                }
                match pulled {
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
