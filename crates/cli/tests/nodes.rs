//! Several nodes running one configuration on one database (issue 22): `tsunagi run` on two
//! nodes pulls each scheduled tick of a source once — the tick is claimed in the database, and
//! the node that does not get it says so. On SQLite (two processes on one file) and on
//! PostgreSQL. `tsunagi run --metrics` counts each source's pulls, files and resources.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::Duration,
};

use support::{PostgresSchema, free_port, ok};

#[test]
fn two_nodes_pull_each_scheduled_tick_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    two_nodes_pull_each_scheduled_tick_once(dir.path(), &db);
}

#[test]
fn two_nodes_pull_each_scheduled_tick_once_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let schema = PostgresSchema::new("run");
    two_nodes_pull_each_scheduled_tick_once(dir.path(), &schema.url);
}

/// A region of 4 people (`seed`) in `<dir>/region`, and `<dir>/tsunagi.toml` pulling its
/// first hospital's storage into `db` every second. The region's folder and the config.
fn pulled_every_second(
    dir: &std::path::Path,
    db: &str,
    seed: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let region = dir.join("region");
    ok(&[
        "generate",
        "region",
        "--out",
        region.to_str().unwrap(),
        "--patients",
        "4",
        "--seed",
        seed,
    ]);
    let config = dir.join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\n[store]\nurl = \"{db}\"\n[[source]]\nkind = \"ssmix2\"\nfacility = \"0610100010\"\nroots = [\"{}\"]\nschedule = \"* * * * * *\"\n",
            region.join("0610100010").display()
        ),
    )
    .unwrap();
    (region, config)
}

fn two_nodes_pull_each_scheduled_tick_once(dir: &std::path::Path, db: &str) {
    let (region, config) = pulled_every_second(dir, db, "2");
    // The schema made once, before both start.
    ok(&[
        "ingest",
        "ssmix2",
        "--db",
        db,
        "--facility",
        "0610100010",
        "--json",
        region.join("0610100010").to_str().unwrap(),
    ]);
    let nodes: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            Command::new(env!("CARGO_BIN_EXE_tsunagi"))
                .env("TSUNAGI_NODE", name)
                .args(["run", "--config", config.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(4500));
    let mut claimed: BTreeMap<String, usize> = BTreeMap::new();
    let mut declined = 0;
    for mut node in nodes {
        let _ = node.kill();
        let output = node.wait_with_output().unwrap();
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            let Some(rest) = line.strip_prefix("pull ssmix2:0610100010 at ") else {
                continue;
            };
            let (tick, what) = rest.split_once(": ").unwrap();
            if what.starts_with("claimed by") {
                *claimed.entry(tick.to_owned()).or_default() += 1;
            } else if what.starts_with("another node pulls it") {
                declined += 1;
            }
        }
    }
    assert!(claimed.len() >= 2, "ticks pulled: {claimed:?}");
    assert!(
        claimed.values().all(|count| *count == 1),
        "a tick pulled twice: {claimed:?}"
    );
    assert!(
        declined >= 1,
        "no node ever found a tick taken: {claimed:?}"
    );
}

/// A child process killed (and reaped) when the test is done with it, whatever happened.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the one series of `metrics` (the text format) named `series` exactly.
fn series(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    })
}

fn get_metrics(port: u16) -> Option<String> {
    match support::http(
        &format!("127.0.0.1:{port}"),
        "GET",
        "/metrics",
        "",
        None,
        b"",
    )? {
        (200, answer) => Some(answer),
        _ => None,
    }
}

#[test]
fn run_counts_its_pulls_at_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let (region, config) = pulled_every_second(dir.path(), &db, "3");
    // What a single pull of the same files writes: the reference for the counters.
    let reference = tempfile::tempdir().unwrap();
    let output = ok(&[
        "ingest",
        "ssmix2",
        "--db",
        &format!("sqlite://{}", reference.path().join("r.db").display()),
        "--facility",
        "0610100010",
        "--json",
        region.join("0610100010").to_str().unwrap(),
    ]);
    let summary: serde_json::Value = serde_json::from_str(&output).unwrap();
    let total = |change: &str| -> f64 {
        summary[change]
            .as_object()
            .unwrap_or_else(|| panic!("{change} in {summary}"))
            .values()
            .map(|count| count.as_f64().unwrap())
            .sum()
    };
    let (created, updated) = (total("created"), total("updated"));
    assert!(created > 0.0, "{summary}");
    let port = free_port();
    let mut node = Killed(
        Command::new(env!("CARGO_BIN_EXE_tsunagi"))
            .args([
                "run",
                "--config",
                config.to_str().unwrap(),
                "--metrics",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let source = r#"source="ssmix2:0610100010""#;
    let started = std::time::Instant::now();
    let metrics = loop {
        if let Some(metrics) = get_metrics(port)
            && series(
                &metrics,
                &format!(r#"tsunagi_pulls_total{{{source},result="ok"}}"#),
            )
            .is_some_and(|pulls| pulls >= 2.0)
        {
            break metrics;
        }
        if node.0.try_wait().unwrap().is_some() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut node.0.stderr.take().unwrap(), &mut stderr).unwrap();
            panic!("tsunagi run exited: {stderr}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no second pull counted at /metrics"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(node);
    let value = |name: &str, label: &str| {
        series(&metrics, &format!("{name}{{{source},{label}}}"))
            .unwrap_or_else(|| panic!("{name} {label} missing:\n{metrics}"))
    };
    // The first pull wrote what a single ingest writes; later ones found nothing changed.
    assert_eq!(
        value("tsunagi_pull_resources_total", r#"change="created""#),
        created
    );
    assert_eq!(
        value("tsunagi_pull_resources_total", r#"change="updated""#),
        updated
    );
    assert_eq!(
        value("tsunagi_pull_files_total", r#"outcome="rejected""#),
        0.0
    );
    assert!(value("tsunagi_pull_files_total", r#"outcome="read""#) > 0.0);
    assert!(value("tsunagi_pull_files_total", r#"outcome="skipped""#) > 0.0);
    let failed = format!(r#"tsunagi_pulls_total{{{source},result="failed"}}"#);
    assert_eq!(series(&metrics, &failed).unwrap_or(0.0), 0.0);
    let succeeded = series(
        &metrics,
        &format!("tsunagi_pull_last_success_timestamp_seconds{{{source}}}"),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - succeeded).abs() < 60.0, "{succeeded} vs {now}");
}
