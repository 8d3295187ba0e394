//! Several nodes running one configuration on one database (issue 22): `tsunagi run` on two
//! nodes pulls each scheduled tick of a source once — the tick is claimed in the database, and
//! the node that does not get it says so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::Duration,
};

use support::ok;

#[test]
fn two_nodes_pull_each_scheduled_tick_once() {
    let dir = tempfile::tempdir().unwrap();
    let region = dir.path().join("region");
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
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    // The schema made once, before both start.
    ok(&[
        "ingest",
        "ssmix2",
        "--db",
        &db,
        "--facility",
        "0610100010",
        "--json",
        region.join("0610100010").to_str().unwrap(),
    ]);
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\n[store]\nurl = \"{db}\"\n[[source]]\nkind = \"ssmix2\"\nfacility = \"0610100010\"\nroots = [\"{}\"]\nschedule = \"* * * * * *\"\n",
            region.join("0610100010").display()
        ),
    )
    .unwrap();
    let nodes: Vec<_> = (0..2)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_tsunagi"))
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
