//! `tsunagi bench nodes --db postgres://…`: what coordination between nodes costs. A generated
//! region is ingested into a schema of its own on that PostgreSQL; `tsunagi serve` processes
//! (this binary) serve it on loopback behind one base URL, audit on, as a load balancer's
//! backends would. `--clients` keep-alive clients (8 by default) read a patient by id, then
//! search a patient's observations, in alternating rounds: against one node with every core's
//! worker threads, against one node with half, and half the clients against each of two nodes
//! with half the threads each (as each would have its own machine's). The better one-node
//! figure is the same-run reference (target: two nodes ≥ 0.9× one). Each round also reads the
//! machine's CPU time and the serving processes', so the report says whether the machine was
//! the limit and what a request cost it. One machine cannot show the gain of a second
//! machine; the figures feed the README's sizing model.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;
use tsunagi_core::clock::{Clock, SystemClock};
use tsunagi_server::security::{Subject, TokenSettings, issue_token};
use tsunagi_store::governance::{Client, Facility};

use crate::{bench_search::Connection, open};

/// The public origin both nodes serve under (the tokens' issuer).
const ORIGIN: &str = "http://tsunagi.bench";
const FACILITY: &str = "0610100010";
const CLIENT: &str = "bench-nodes";
/// Rounds per measure (each alternating the three configurations), and seconds per round.
const ROUNDS: usize = 5;
const ROUND_SECONDS: f64 = 2.0;

/// A `tsunagi serve` child, killed when dropped.
struct NodeProcess(Child, SocketAddr);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts `tsunagi serve` as node `name`, with `threads` runtime worker threads (`None`: the
/// runtime's default, one per core).
async fn start_node(
    name: &str,
    config: &std::path::Path,
    token: &str,
    threads: Option<usize>,
) -> anyhow::Result<NodeProcess> {
    let addr = free_addr()?;
    let mut command = Command::new(std::env::current_exe()?);
    match threads {
        Some(threads) => command.env("TOKIO_WORKER_THREADS", threads.to_string()),
        None => command.env_remove("TOKIO_WORKER_THREADS"),
    };
    let child = command
        .env("TSUNAGI_NODE", name)
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start tsunagi serve")?;
    let node = NodeProcess(child, addr);
    let started = Instant::now();
    loop {
        if let Ok(mut connection) = Connection::open_at(addr, token.to_owned()).await
            && let Ok((200, _)) = connection.get("/health/ready").await
        {
            return Ok(node);
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("node {name} was not ready within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Requests per second from `clients` clients spread over `nodes`, each client cycling
/// through `targets` from its own starting point; every answer must be 200.
async fn rate(
    nodes: &[SocketAddr],
    nodes_pids: &[u32],
    clients: usize,
    token: &str,
    targets: &Arc<Vec<String>>,
) -> anyhow::Result<Round> {
    let before = machine_ticks();
    let parties_before = party_ticks(nodes_pids);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let addr = nodes[client % nodes.len()];
        let mut connection = Connection::open_at(addr, token.to_owned()).await?;
        let targets = targets.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            while started.elapsed().as_secs_f64() < ROUND_SECONDS {
                let target = &targets[(client * 7 + done) % targets.len()];
                let (status, _) = connection.get(target).await?;
                if status != 200 {
                    bail!("{target}: {status}");
                }
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = total as f64 / seconds;
    let machine = before.zip(machine_ticks()).and_then(|(before, after)| {
        let all = after.all.checked_sub(before.all).filter(|all| *all > 0)?;
        let busy = after.busy.saturating_sub(before.busy) as f64 / all as f64;
        // The busy share of all CPUs over the round, spread over its requests.
        let cost = busy * after.cpus as f64 * seconds * 1000.0 / total.max(1) as f64;
        Some((busy, cost))
    });
    let parties = parties_before
        .zip(party_ticks(nodes_pids))
        .map(|(before, after)| {
            std::array::from_fn(|party| {
                after[party].saturating_sub(before[party]) as f64 * 1000.0
                    / TICKS_PER_SECOND
                    / total.max(1) as f64
            })
        });
    Ok(Round {
        rate,
        machine,
        parties,
    })
}

/// `USER_HZ`: the unit of `/proc/<pid>/stat`'s CPU times on every Linux this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU ticks (user + system) of a process so far, from `/proc/<pid>/stat`.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields after it start past its last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU ticks so far of the nodes in `pids`, of every `postgres` process on the machine, and
/// of this process (the clients). `None` off Linux, or when PostgreSQL runs elsewhere (another
/// machine, a container whose processes this one cannot see).
fn party_ticks(pids: &[u32]) -> Option<[u64; 3]> {
    let nodes = pids
        .iter()
        .map(|pid| process_ticks(&pid.to_string()))
        .sum::<Option<u64>>()?;
    let mut postgres = 0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if std::fs::read_to_string(entry.path().join("comm"))
            .is_ok_and(|comm| comm.trim_end() == "postgres")
        {
            postgres += process_ticks(pid).unwrap_or(0);
            found = true;
        }
    }
    found.then_some(())?;
    Some([nodes, postgres, process_ticks("self")?])
}

/// The machine's CPU time so far, in clock ticks, from `/proc/stat`: the first line's user,
/// nice, system, idle, iowait, irq, softirq and steal, over the CPUs it counts (its `cpuN`
/// lines: the host's, even inside a container). `None` off Linux.
struct Ticks {
    busy: u64,
    all: u64,
    cpus: usize,
}

fn machine_ticks() -> Option<Ticks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|field| field.parse().ok())
        .collect();
    let idle = ticks.get(3)? + ticks.get(4)?;
    let all: u64 = ticks.iter().sum();
    let cpus = stat
        .lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    Some(Ticks {
        busy: all.saturating_sub(idle),
        all,
        cpus: cpus.max(1),
    })
}

/// A round's requests per second and, where the machine tells, the share of its CPU that was
/// busy and the CPU milliseconds each request cost it (clients, nodes and PostgreSQL together).
struct Round {
    rate: f64,
    machine: Option<(f64, f64)>,
    /// CPU milliseconds per request of the node(s), of PostgreSQL and of the clients.
    parties: Option<[f64; 3]>,
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the benchmark on the PostgreSQL at `db`, in a schema of its own (dropped at the end).
pub(crate) async fn nodes(
    db: &str,
    patients: usize,
    clients: usize,
    seed: u64,
) -> anyhow::Result<()> {
    if clients < 2 {
        bail!("bench nodes needs --clients 2 or more (they are spread over the nodes)");
    }
    if !(db.starts_with("postgres://") || db.starts_with("postgresql://")) {
        bail!("bench nodes needs --db postgres://… (several nodes share one PostgreSQL)");
    }
    crate::bench::in_fresh_schema(db, "nodes", |url| async move {
        measure(&url, patients, clients, seed).await
    })
    .await
}

async fn measure(url: &str, patients: usize, clients: usize, seed: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let region = dir.path().join("region");
    let started = Instant::now();
    tsunagi_synth::generate_region(&region, patients, seed)?;
    let store = open::open_store(url).await?;
    let reports = crate::bench::pull_all(&region, store.clone()).await?;
    let written: u64 = reports
        .iter()
        .map(tsunagi_adapter::PullReport::resources_written)
        .sum();
    println!(
        "region of {patients} people: {written} resources ingested into PostgreSQL in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store
        .put_facility(&Facility {
            code: FACILITY.to_owned(),
            name: "荘内病院".to_owned(),
            kind: "hospital".to_owned(),
            active: true,
        })
        .await?;
    store
        .put_client(&Client {
            id: CLIENT.to_owned(),
            facility: FACILITY.to_owned(),
            kind: "system".to_owned(),
            jwks: r#"{"keys":[]}"#.to_owned(),
            scope: "system/*.rs".to_owned(),
            active: true,
            serves: Vec::new(),
        })
        .await?;
    let keys =
        tsunagi_server::security::signing_keys(store.as_ref(), SystemClock.now_micros()).await?;
    let key = keys.first().context("no signing key")?;
    let (token, _) = issue_token(
        store.as_ref(),
        key,
        &TokenSettings::for_base(ORIGIN),
        Subject::System(CLIENT),
        "system/*.rs",
        SystemClock.now_micros().div_euclid(1_000_000),
    )
    .await?;
    let config = dir.path().join("tsunagi.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[store]\nurl = \"{url}\"\n\n[server]\nbase_url = \"{ORIGIN}/fhir\"\n"
        ),
    )?;
    // Two nodes share this machine's cores: each runs half as many worker threads, as each
    // would run its own machine's. One node is measured both ways, with every core's threads
    // (`whole`) and with half (`a` alone), and the better is the reference, so splitting the
    // threads never flatters the ratio.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = (cores / 2).max(1);
    let whole = start_node("bench-whole", &config, &token, None).await?;
    let a = start_node("bench-a", &config, &token, Some(threads)).await?;
    let b = start_node("bench-b", &config, &token, Some(threads)).await?;
    // Each round's CPU split counts the processes that serve it.
    let (whole_pid, a_pid, b_pid) = (whole.0.id(), a.0.id(), b.0.id());

    // Hospital A's patients.
    let mut connection = Connection::open_at(a.1, token.clone()).await?;
    let (status, body) = connection.get("/fhir/Patient?_count=200").await?;
    if status != 200 {
        bail!("Patient search answered {status}");
    }
    let bundle: Value = serde_json::from_slice(&body)?;
    let ids: Vec<String> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["resource"]["id"].as_str().map(str::to_owned))
        .collect();
    if ids.is_empty() {
        bail!("the region has no patient hospital A may read");
    }
    let measures: [(&str, Arc<Vec<String>>); 2] = [
        (
            "read Patient/[id]",
            Arc::new(ids.iter().map(|id| format!("/fhir/Patient/{id}")).collect()),
        ),
        (
            "search Observation?patient=[id]",
            Arc::new(
                ids.iter()
                    .map(|id| format!("/fhir/Observation?patient={id}&_count=20"))
                    .collect(),
            ),
        ),
    ];
    println!(
        "{clients} keep-alive clients, audit on; median of {ROUNDS} alternating rounds of {ROUND_SECONDS} s; {} patients cycled",
        ids.len()
    );
    println!(
        "one node: the better of {cores} worker threads and {threads}; two nodes: {threads} each"
    );
    println!(
        "{:<34} {:>12} {:>12} {:>7}  target",
        "measure", "one node/s", "two nodes/s", "ratio"
    );
    let mut one_node_rates = Vec::new();
    for (name, targets) in &measures {
        // Warm every node's caches of the same rows.
        rate(
            &[whole.1, a.1, b.1],
            &[whole_pid, a_pid, b_pid],
            clients,
            &token,
            targets,
        )
        .await?;
        let mut one_whole = Vec::new();
        let mut one_half = Vec::new();
        let mut two = Vec::new();
        for _ in 0..ROUNDS {
            one_whole.push(rate(&[whole.1], &[whole_pid], clients, &token, targets).await?);
            one_half.push(rate(&[a.1], &[a_pid], clients, &token, targets).await?);
            two.push(rate(&[a.1, b.1], &[a_pid, b_pid], clients, &token, targets).await?);
        }
        let rates = |rounds: &[Round]| median(rounds.iter().map(|round| round.rate).collect());
        let (whole_rate, half_rate) = (rates(&one_whole), rates(&one_half));
        let one = if whole_rate >= half_rate {
            one_whole
        } else {
            one_half
        };
        let cost = |rounds: &[Round]| {
            let measured: Vec<(f64, f64)> =
                rounds.iter().filter_map(|round| round.machine).collect();
            if measured.is_empty() {
                return "n/a".to_owned();
            }
            let busy = median(measured.iter().map(|(busy, _)| *busy).collect());
            let cost = median(measured.iter().map(|(_, cost)| *cost).collect());
            let parties: Vec<[f64; 3]> = rounds.iter().filter_map(|round| round.parties).collect();
            let party = |at: usize| median(parties.iter().map(|party| party[at]).collect());
            let split = if parties.is_empty() {
                String::new()
            } else {
                format!(
                    " (node(s) {:.2}, PostgreSQL {:.2}, clients {:.2})",
                    party(0),
                    party(1),
                    party(2)
                )
            };
            format!("busy {:.0}%, {cost:.2} ms{split}", busy * 100.0)
        };
        let (cost_one, cost_two) = (cost(&one), cost(&two));
        let (one, two) = (rates(&one), rates(&two));
        let ratio = two / one;
        println!(
            "{name:<34} {one:>12.0} {two:>12.0} {ratio:>7.3}  ≥ 0.90 {}",
            if ratio >= 0.9 { "✔" } else { "✘" }
        );
        // Whether the machine was the limit, and what a request cost it in CPU (the clients,
        // the nodes and PostgreSQL together; medians of the rounds).
        println!(
            "  one node with {cores} worker threads {whole_rate:.0}/s, with {threads} {half_rate:.0}/s"
        );
        println!("  CPU per request, one node: {cost_one}");
        println!("  CPU per request, two nodes: {cost_two}");
        one_node_rates.push((name, one));
    }
    println!(
        "sizing: on {cores} cores shared by the clients, the node(s) and PostgreSQL (a lower bound per core):"
    );
    for (name, one) in one_node_rates {
        println!("  {name}: {:.0} requests/s per core", one / cores as f64);
    }
    println!(
        "  PostgreSQL connections per node: at most 10 (a pool of 8, the node-name lock and the standing listener; size max_connections as 10 × nodes + tools)"
    );
    drop((whole, a, b));
    Ok(())
}
