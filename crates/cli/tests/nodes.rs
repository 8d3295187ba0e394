//! Several nodes running one configuration on one database (issue 22): `tsunagi run` on two
//! nodes pulls each scheduled tick of a source once — the tick is claimed in the database, and
//! the node that does not get it says so. On SQLite (two processes on one file) and on
//! PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::Duration,
};

use support::{PostgresSchema, ok};

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

fn two_nodes_pull_each_scheduled_tick_once(dir: &std::path::Path, db: &str) {
    let region = dir.join("region");
    ok(&[
        "generate",
        "region",
        "--out",
        region.to_str().unwrap(),
        "--patients",
        "4",
        "--seed",
        "2",
    ]);
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
    let config = dir.join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\n[store]\nurl = \"{db}\"\n[[source]]\nkind = \"ssmix2\"\nfacility = \"0610100010\"\nroots = [\"{}\"]\nschedule = \"* * * * * *\"\n",
            region.join("0610100010").display()
        ),
    )
    .unwrap();
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
