//! `tsunagi bench mllp`: the inbound feed's throughput and ACK latency, measured over real
//! sockets into a fresh SQLite store with commit-before-ACK (the target: ≥ 5,000
//! messages/s over 8 connections); with `--db postgres://…` the same messages go into a fresh
//! PostgreSQL schema too, printed beside SQLite's figures of the same run. Use a release build.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tsunagi_adapter::listen::{ListenContext, MllpIntake};
use tsunagi_adapter_hl7v2::Feeds;
use tsunagi_core::clock::SystemClock;
use tsunagi_hl7v2::{Message, ack::read_ack};
use tsunagi_mllp::client::Connection;

use crate::serve;

const TARGET_MESSAGES_PER_SECOND: f64 = 5_000.0;

/// Every message file under `root`, grouped by patient folder, registration (ADT-00) first.
fn messages_by_patient(root: &Path) -> anyhow::Result<BTreeMap<String, Vec<Vec<u8>>>> {
    let mut by_patient: BTreeMap<String, Vec<(bool, String, Vec<u8>)>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default()
                .to_owned();
            let fields: Vec<&str> = name.split('_').collect();
            // Current versions only: what an EHR sends as events happen.
            if fields.len() != 7 || fields[6] != "1" {
                continue;
            }
            let registration = fields[2] == "ADT-00";
            by_patient.entry(fields[0].to_owned()).or_default().push((
                !registration,
                name.clone(),
                std::fs::read(&path)?,
            ));
        }
    }
    Ok(by_patient
        .into_iter()
        .map(|(patient, mut files)| {
            files.sort();
            (
                patient,
                files.into_iter().map(|(_, _, bytes)| bytes).collect(),
            )
        })
        .collect())
}

/// Gives each message a control id of its own (MSH-10; MSH is ASCII).
fn with_control_id(message: &[u8], control_id: &str) -> Vec<u8> {
    let end = message
        .iter()
        .position(|&byte| byte == b'\r')
        .unwrap_or(message.len());
    let mut fields: Vec<&[u8]> = message[..end].split(|&byte| byte == b'|').collect();
    if fields.len() > 9 {
        fields[9] = control_id.as_bytes();
    }
    let mut out = fields.join(&b'|');
    out.extend_from_slice(&message[end..]);
    out
}

struct Run {
    seconds: f64,
    latencies: Vec<Duration>,
    codes: BTreeMap<String, u64>,
}

/// Sends every lane on a connection of its own; each connection keeps at most `window` messages
/// unanswered (1: the usual stop-and-wait sender).
async fn send_all(address: &str, lanes: &[Vec<Vec<u8>>], window: usize) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for lane in lanes {
        let lane = lane.clone();
        let address = address.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::connect(&address).await?;
            let mut latencies = Vec::with_capacity(lane.len());
            let mut codes: BTreeMap<String, u64> = BTreeMap::new();
            let mut sent_at = std::collections::VecDeque::new();
            let mut next = lane.into_iter();
            loop {
                while sent_at.len() < window.max(1) {
                    let Some(message) = next.next() else { break };
                    connection.send(&message).await?;
                    sent_at.push_back(Instant::now());
                }
                let Some(sent) = sent_at.pop_front() else {
                    break;
                };
                let reply = connection.reply(Duration::from_secs(30)).await?;
                latencies.push(sent.elapsed());
                let text = String::from_utf8_lossy(&reply).into_owned();
                let code = Message::parse(&text)
                    .ok()
                    .and_then(|ack| read_ack(&ack).ok())
                    .map_or("unreadable".to_owned(), |ack| ack.code.as_str().to_owned());
                *codes.entry(code).or_default() += 1;
            }
            anyhow::Ok((latencies, codes))
        }));
    }
    let mut run = Run {
        seconds: 0.0,
        latencies: Vec::new(),
        codes: BTreeMap::new(),
    };
    for task in tasks {
        let (latencies, codes) = task.await??;
        run.latencies.extend(latencies);
        for (code, count) in codes {
            *run.codes.entry(code).or_default() += count;
        }
    }
    run.seconds = started.elapsed().as_secs_f64();
    run.latencies.sort();
    Ok(run)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn report(label: &str, run: &Run) {
    let count = run.latencies.len();
    let rate = rate(run);
    println!(
        "  {label:<28} {count:>7} messages in {:>6.2} s = {rate:>8.0} msg/s ({:.2}× the {TARGET_MESSAGES_PER_SECOND:.0} target)   ACK p50 {:.2} ms  p99 {:.2} ms   {:?}",
        run.seconds,
        rate / TARGET_MESSAGES_PER_SECOND,
        percentile(&run.latencies, 0.50),
        percentile(&run.latencies, 0.99),
        run.codes
    );
}

/// What one store took: the first sending and the same messages again.
struct Measured {
    first: Run,
    again: Run,
}

/// Serves `store` as `tsunagi serve`'s MLLP listener does, sends every lane twice and checks
/// that the log holds one row per distinct message.
async fn measure(
    store: Arc<dyn tsunagi_store::Backend>,
    hospital: &tsunagi_synth::Hospital,
    lanes: &[Vec<Vec<u8>>],
    window: usize,
    distinct: u64,
) -> anyhow::Result<Measured> {
    let feeds = Feeds::new(vec![serve::synthetic_feed(hospital)?]);
    let intake = crate::registry::listen(feeds).start(&ListenContext {
        store: store.clone(),
        clock: Arc::new(SystemClock),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let server = tokio::spawn(tsunagi_mllp::serve(
        listener,
        None,
        tsunagi_mllp::ServerOptions::default(),
        Arc::new(MllpIntake(intake)),
    ));
    let first = send_all(&address, lanes, window).await?;
    report("new messages", &first);
    let again = send_all(&address, lanes, window).await?;
    report("the same messages again", &again);
    server.abort();
    let logged = store
        .messages(&tsunagi_store::MessageState::ALL, 0, usize::MAX)
        .await?
        .len();
    println!("  message log: {logged} rows for {distinct} distinct messages sent twice");
    if logged as u64 != distinct {
        bail!("the log holds {logged} rows, not {distinct}");
    }
    Ok(Measured { first, again })
}

fn rate(run: &Run) -> f64 {
    run.latencies.len() as f64 / run.seconds
}

/// Runs the MLLP benchmark into a fresh SQLite store and, with `postgres`, into a fresh schema
/// of that PostgreSQL too, printing its rates beside SQLite's of the same run.
pub(crate) async fn mllp(
    patients: usize,
    connections: usize,
    window: usize,
    seed: u64,
    postgres: Option<String>,
) -> anyhow::Result<()> {
    crate::bench::check_postgres_url(postgres.as_deref())?;
    let dir = tempfile::tempdir()?;
    println!("generating a region of {patients} people…");
    tsunagi_synth::generate_region(&dir.path().join("region"), patients, seed)?;
    let hospital = tsunagi_synth::HOSPITALS[0];
    let by_patient = messages_by_patient(&dir.path().join("region").join(hospital.code))?;
    let connections = connections.max(1);
    let mut lanes: Vec<Vec<Vec<u8>>> = vec![Vec::new(); connections];
    let mut number = 0u64;
    for (index, messages) in by_patient.values().enumerate() {
        for message in messages {
            number += 1;
            lanes[index % connections].push(with_control_id(message, &format!("B{number:09}")));
        }
    }
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store =
        Arc::new(tsunagi_store_sqlite::SqliteStore::open(&url, Arc::new(SystemClock)).await?);
    println!(
        "{} messages of {} {} ({} patients) over {connections} MLLP connections into {url} (synchronous=FULL, commit before ACK):",
        number,
        hospital.code,
        hospital.name,
        by_patient.len()
    );
    println!(
        "  each connection keeps {} message(s) unanswered{}",
        window.max(1),
        if window <= 1 {
            " (stop-and-wait)"
        } else {
            " (a pipelining sender)"
        }
    );
    let sqlite = measure(store, &hospital, &lanes, window, number).await?;
    let Some(db) = postgres else {
        return Ok(());
    };
    let lanes = &lanes;
    println!(
        "\nthe same into PostgreSQL (a fresh schema of {}, commit before ACK):",
        crate::open::without_password(&db)
    );
    let postgres = crate::bench::in_fresh_schema(&db, "mllp", |url| async move {
        let store = crate::open::open_store(&url).await?;
        measure(store, &hospital, lanes, window, number).await
    })
    .await?;
    println!("\nPostgreSQL beside SQLite in this run");
    for (label, postgres, sqlite) in [
        ("new messages", &postgres.first, &sqlite.first),
        ("the same messages again", &postgres.again, &sqlite.again),
    ] {
        println!(
            "  {label:<28} {:>8.0} msg/s   SQLite {:>8.0} msg/s   ratio {:.2}   ACK p50 {:.2} ms (SQLite {:.2} ms)",
            rate(postgres),
            rate(sqlite),
            rate(postgres) / rate(sqlite),
            percentile(&postgres.latencies, 0.50),
            percentile(&sqlite.latencies, 0.50),
        );
    }
    Ok(())
}
