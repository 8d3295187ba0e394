//! `tsunagi bench search`: two generated regions (small and large) ingested into fresh
//! databases and served on loopback; the issue's queries timed over one keep-alive HTTP/1.1
//! connection (p50/p95), the small/large ratio of patient-scoped queries, and throughput with
//! 8 concurrent keep-alive clients. Client and server share this machine's cores, so the
//! throughput figures are a lower bound. With `--db postgres://…` the large region is served
//! from PostgreSQL too ([`crate::bench_search_postgres`]). Use a release build.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};
use tsunagi_core::clock::{Clock, SystemClock};

use tsunagi_auth::token::SigningKey;
use tsunagi_server::security::{Subject, TokenSettings, issue_token};
use tsunagi_store::{
    Access, Backend,
    governance::{Client, Facility},
};

use crate::open;

/// A keep-alive HTTP/1.1 connection that reads `Content-Length` and chunked bodies.
pub(crate) struct Connection {
    stream: BufReader<TcpStream>,
    host: String,
    token: String,
}

impl Connection {
    /// A connection to `region` carrying a fresh access token (valid five minutes).
    pub(crate) async fn open(region: &Region) -> anyhow::Result<Self> {
        Self::open_at(region.addr, region.token().await?).await
    }

    /// A connection to `addr` sending `token`.
    pub(crate) async fn open_at(addr: SocketAddr, token: String) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            host: addr.to_string(),
            token,
        })
    }

    pub(crate) async fn get(&mut self, target: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
            self.host, self.token
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.trim().eq_ignore_ascii_case("chunked");
                }
            }
        }
        if !chunked {
            let mut body = vec![0; length];
            self.stream.read_exact(&mut body).await?;
            return Ok((status, body));
        }
        // Chunks until the last, then the (empty) trailer.
        let mut body = Vec::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
                .context("bad chunk size")?;
            if size == 0 {
                loop {
                    line.clear();
                    self.stream.read_line(&mut line).await?;
                    if line.trim_end().is_empty() {
                        return Ok((status, body));
                    }
                }
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            self.stream.read_exact(&mut body[start..]).await?;
            body.truncate(start + size);
        }
    }
}

pub(crate) struct Region {
    _dir: tempfile::TempDir,
    pub(crate) addr: SocketAddr,
    /// The same store served without access control (feature `bench-baseline`).
    baseline: Option<SocketAddr>,
    shutdown: Option<tokio::sync::watch::Sender<()>>,
    pub(crate) patients: usize,
    pub(crate) store: Arc<dyn Backend>,
    key: SigningKey,
}

/// The bench reads as a system client of hospital A, whose patients it times.
const BENCH_CLIENT: &str = "bench";
pub(crate) const BENCH_FACILITY: &str = "0610100010";

impl Region {
    /// Stops serving.
    pub(crate) fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    pub(crate) async fn token(&self) -> anyhow::Result<String> {
        let (token, _) = issue_token(
            self.store.as_ref(),
            &self.key,
            &TokenSettings::default(),
            Subject::System(BENCH_CLIENT),
            "system/*.rs",
            SystemClock.now_micros().div_euclid(1_000_000),
        )
        .await?;
        Ok(token)
    }

    /// Serves `store` (kept in `dir`) on loopback as `tsunagi serve` would, with a system
    /// client of hospital A to read it.
    pub(crate) async fn serve(
        dir: tempfile::TempDir,
        store: Arc<dyn Backend>,
        patients: usize,
    ) -> anyhow::Result<Self> {
        Self::serve_with(dir, store, patients, tsunagi_server::Settings::default()).await
    }

    /// [`Region::serve`] with `settings` (a PACS to open images from, say).
    pub(crate) async fn serve_with(
        dir: tempfile::TempDir,
        store: Arc<dyn Backend>,
        patients: usize,
        settings: tsunagi_server::Settings,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        store
            .put_facility(&Facility {
                code: BENCH_FACILITY.to_owned(),
                name: "荘内病院".to_owned(),
                kind: "hospital".to_owned(),
                active: true,
            })
            .await?;
        store
            .put_client(&Client {
                id: BENCH_CLIENT.to_owned(),
                facility: BENCH_FACILITY.to_owned(),
                kind: "system".to_owned(),
                jwks: r#"{"keys":[]}"#.to_owned(),
                scope: "system/*.rs".to_owned(),
                active: true,
                serves: Vec::new(),
            })
            .await?;
        let keys = tsunagi_server::security::signing_keys(store.as_ref(), SystemClock.now_micros())
            .await?;
        let key = keys.first().cloned().context("no signing key")?;
        // As `tsunagi serve` does: audit records go through the journal.
        store.start_serving().await?;
        let state = tsunagi_server::AppState::new(
            store.clone(),
            store.clone(),
            Arc::new(SystemClock),
            settings,
            keys,
        );
        let (sender, receiver) = tokio::sync::watch::channel(());
        let stopped = move || {
            let mut receiver = receiver.clone();
            async move {
                let _ = receiver.changed().await;
            }
        };
        #[cfg(feature = "bench-baseline")]
        let baseline = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(tsunagi_server::baseline::serve_open(
                listener,
                state.clone(),
                stopped(),
            ));
            Some(addr)
        };
        #[cfg(not(feature = "bench-baseline"))]
        let baseline = None;
        tokio::spawn(tsunagi_server::serve(listener, state, stopped()));
        Ok(Region {
            _dir: dir,
            addr,
            baseline,
            shutdown: Some(sender),
            patients,
            store,
            key,
        })
    }
}

/// Generates a region of `patients` people, ingests it into a fresh SQLite database (or the
/// store at `url`) and serves it.
pub(crate) async fn load_region(
    patients: usize,
    seed: u64,
    url: Option<&str>,
) -> anyhow::Result<Region> {
    let dir = tempfile::tempdir()?;
    let region = dir.path().join("region");
    let started = Instant::now();
    tsunagi_synth::generate_region(&region, patients, seed)?;
    let url = match url {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    let store = open::open_store(&url).await?;
    let reports = crate::bench::pull_all(&region, store.clone()).await?;
    let written: u64 = reports
        .iter()
        .map(tsunagi_adapter::PullReport::resources_written)
        .sum();
    println!(
        "region of {patients} people: {written} resources generated and ingested in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Region::serve(dir, store, patients).await
}

/// The queries of the issue, filled in for one patient with about 100 resources: `prefer` if it
/// has 60–200 resources in this region (the same person in both regions makes the ratio
/// meaningful), else the first such patient of hospital A. Returns the patient, its resource
/// count and the queries.
pub(crate) async fn queries(
    connection: &mut Connection,
    prefer: Option<&str>,
) -> anyhow::Result<(String, u64, Vec<(&'static str, String, f64)>)> {
    let mut chosen = None;
    let candidates = prefer
        .map(str::to_owned)
        .into_iter()
        .chain((0..200).map(|n| format!("0610100010.{}", 1_000_000 + n)));
    for id in candidates {
        let (status, body) = connection
            .get(&format!(
                "/fhir/Patient/{id}/$everything?_summary=count&_count=1"
            ))
            .await?;
        if status != 200 {
            continue;
        }
        let bundle: Value = serde_json::from_slice(&body)?;
        let total = bundle["total"].as_u64().unwrap_or(0);
        if (60..=200).contains(&total) {
            chosen = Some((id, total));
            break;
        }
    }
    let Some((id, total)) = chosen else {
        bail!("no patient with 60–200 resources among the first 200");
    };
    let (_, body) = connection.get(&format!("/fhir/Patient/{id}")).await?;
    let patient: Value = serde_json::from_slice(&body)?;
    let identifier = &patient["identifier"][0];
    let kana = patient["name"]
        .as_array()
        .and_then(|names| {
            names.iter().find(|n| {
                n["text"]
                    .as_str()
                    .is_some_and(|t| t.chars().any(|c| ('\u{30A0}'..='\u{30FF}').contains(&c)))
            })
        })
        .and_then(|n| n["family"].as_str())
        .unwrap_or("ア")
        .to_owned();
    let birth = patient["birthDate"].as_str().unwrap_or("1950").to_owned();
    let (_, body) = connection
        .get(&format!(
            "/fhir/Observation?patient={id}&category=laboratory&_count=1"
        ))
        .await?;
    let bundle: Value = serde_json::from_slice(&body)?;
    let code = bundle["entry"][0]["resource"]["code"]["coding"][0]["code"]
        .as_str()
        .unwrap_or("x")
        .to_owned();
    let encode = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let system = identifier["system"].as_str().unwrap_or_default();
    let value = identifier["value"].as_str().unwrap_or_default();
    let queries = vec![
        ("read by id", format!("/fhir/Patient/{id}"), 1.0),
        (
            "Patient by identifier",
            format!(
                "/fhir/Patient?identifier={}",
                encode(&format!("{system}|{value}"))
            ),
            1.0,
        ),
        (
            "Patient by kana + birthdate",
            format!(
                "/fhir/Patient?jp-kana-sort={}&birthdate={birth}",
                encode(&kana)
            ),
            1.0,
        ),
        (
            "Observation patient + category",
            format!("/fhir/Observation?patient={id}&category=laboratory"),
            1.0,
        ),
        (
            "Observation patient + code",
            format!("/fhir/Observation?patient={id}&code={code}"),
            1.0,
        ),
        (
            "Observation patient + date range",
            format!("/fhir/Observation?patient={id}&date=ge2015-01-01&date=lt2030-01-01"),
            1.0,
        ),
        (
            "MedicationRequest patient + authoredon",
            format!("/fhir/MedicationRequest?patient={id}&authoredon=ge2015-01-01"),
            1.0,
        ),
        (
            "Observation patient + _include",
            format!("/fhir/Observation?patient={id}&_include=Observation:patient"),
            1.0,
        ),
        (
            "$everything (~100 resources)",
            format!("/fhir/Patient/{id}/$everything?_count=200"),
            5.0,
        ),
        (
            "Observation by subject:Patient.identifier",
            format!(
                "/fhir/Observation?subject:Patient.identifier={}&code={code}",
                encode(&format!("{system}|{value}"))
            ),
            1.0,
        ),
    ];
    Ok((id, total, queries))
}

pub(crate) fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// One query's figures: name, p50 and p95 at the large and at the small region, target p50.
pub(crate) struct Timing {
    pub(crate) name: &'static str,
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) small_p50: f64,
    pub(crate) target: f64,
}

async fn timed_get(
    connection: &mut Connection,
    target: &str,
    samples: &mut Vec<f64>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (status, _) = connection.get(target).await?;
    samples.push(started.elapsed().as_secs_f64() * 1000.0);
    if status != 200 {
        bail!("{target} answered {status}");
    }
    Ok(())
}

/// Times every query in both regions, alternating blocks of requests, so that drift in the
/// machine's speed falls on both alike and the small/large ratio is fair.
/// Returns the timings, a line naming the patients, and the large region's patient.
pub(crate) async fn time_queries(
    small: &Region,
    large: &Region,
    requests: usize,
) -> anyhow::Result<(Vec<Timing>, String, String)> {
    let mut small_connection = Connection::open(small).await?;
    let mut large_connection = Connection::open(large).await?;
    let (patient, small_total, small_list) = queries(&mut small_connection, None).await?;
    let (large_patient, large_total, large_list) =
        queries(&mut large_connection, Some(&patient)).await?;
    let note = format!(
        "patient {patient} ({small_total} resources) in the small region; {large_patient} ({large_total} resources) in the large"
    );
    let mut results = Vec::new();
    for ((name, small_target, target_p50), (_, large_target, _)) in
        small_list.into_iter().zip(large_list)
    {
        for _ in 0..20 {
            small_connection.get(&small_target).await?;
            large_connection.get(&large_target).await?;
        }
        let mut small_samples = Vec::with_capacity(requests);
        let mut large_samples = Vec::with_capacity(requests);
        // Blocks of 30 timed requests, each after 5 untimed ones that bring the region back into
        // the caches: alternating single requests would measure cache misses instead.
        while large_samples.len() < requests {
            let block = (requests - large_samples.len()).min(30);
            for (connection, target, samples) in [
                (&mut small_connection, &small_target, &mut small_samples),
                (&mut large_connection, &large_target, &mut large_samples),
            ] {
                for _ in 0..5 {
                    connection.get(target).await?;
                }
                for _ in 0..block {
                    timed_get(connection, target, samples).await?;
                }
            }
        }
        small_samples.sort_by(f64::total_cmp);
        large_samples.sort_by(f64::total_cmp);
        results.push(Timing {
            name,
            p50: percentile(&large_samples, 0.5),
            p95: percentile(&large_samples, 0.95),
            small_p50: percentile(&small_samples, 0.5),
            target: target_p50,
        });
    }
    Ok((results, note, large_patient))
}

/// A patient the bench's facility may not see (hospital B's, no consent) and an id that exists
/// nowhere, asked the same questions over one connection in alternating blocks: status, total
/// and p50/p95 (ms) of each, so a reader can check that hidden is indistinguishable from absent
/// in timing too.
async fn hidden_versus_absent(region: &Region, requests: usize) -> anyhow::Result<()> {
    let hospital_b = tsunagi_synth::HOSPITALS[1].code;
    let mut hidden = None;
    // The synthetic hospital B numbers its patients 20nnnnnnnn (see tsunagi-synth's charts).
    for n in 0..200 {
        let id = format!("{hospital_b}.20{n:08}");
        if region
            .store
            .read(&Access::Unrestricted, "Patient", &id)
            .await?
            .is_some()
        {
            hidden = Some(id);
            break;
        }
    }
    let hidden = hidden.context("no patient of hospital B among the first 200")?;
    let absent = format!("{hospital_b}.2099999999");
    if region
        .store
        .read(&Access::Unrestricted, "Patient", &absent)
        .await?
        .is_some()
    {
        bail!("Patient {absent} exists; the bench needs an id that does not");
    }
    let mut connection = Connection::open(region).await?;
    println!(
        "\nhidden versus absent: Patient {hidden} (hospital B, no consent for {BENCH_FACILITY}) and {absent} (no such patient); {requests} requests each, alternating blocks of 30 (ms)"
    );
    println!(
        "  {:<34} {:>7} {:>7} {:>8} {:>8}   {:>7} {:>7} {:>8} {:>8}",
        "query", "hidden", "total", "p50", "p95", "absent", "total", "p50", "p95"
    );
    let questions = [
        ("read Patient", "/fhir/Patient/{id}"),
        (
            "Observation?patient",
            "/fhir/Observation?patient={id}&category=laboratory",
        ),
        (
            "Observation?patient _summary=count",
            "/fhir/Observation?patient={id}&_summary=count",
        ),
        ("Patient/$everything", "/fhir/Patient/{id}/$everything"),
    ];
    for (name, target) in questions {
        let targets = [
            target.replace("{id}", &hidden),
            target.replace("{id}", &absent),
        ];
        let mut samples = [Vec::with_capacity(requests), Vec::with_capacity(requests)];
        let mut answers = [(0u16, String::new()), (0u16, String::new())];
        while samples[0].len() < requests {
            let block = (requests - samples[0].len()).min(30);
            for side in 0..2 {
                for _ in 0..5 {
                    connection.get(&targets[side]).await?;
                }
                for _ in 0..block {
                    let started = Instant::now();
                    let (status, body) = connection.get(&targets[side]).await?;
                    samples[side].push(started.elapsed().as_secs_f64() * 1000.0);
                    let total = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|bundle| bundle["total"].as_u64())
                        .map_or_else(|| "-".to_owned(), |total| total.to_string());
                    answers[side] = (status, total);
                }
            }
        }
        for side in &mut samples {
            side.sort_by(f64::total_cmp);
        }
        println!(
            "  {name:<34} {:>7} {:>7} {:>8.3} {:>8.3}   {:>7} {:>7} {:>8.3} {:>8.3}",
            answers[0].0,
            answers[0].1,
            percentile(&samples[0], 0.5),
            percentile(&samples[0], 0.95),
            answers[1].0,
            answers[1].1,
            percentile(&samples[1], 0.5),
            percentile(&samples[1], 0.95),
        );
    }
    Ok(())
}

/// Requests per second of `target` from 8 keep-alive clients: against the secured server, or
/// with `baseline` against the same store served without access control.
async fn throughput(
    region: &Region,
    target: String,
    seconds: f64,
    baseline: bool,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let target = target.clone();
        let mut connection = match (baseline, region.baseline) {
            (true, Some(addr)) => Connection::open_at(addr, String::new()).await?,
            (true, None) => bail!("this build has no baseline server"),
            (false, _) => Connection::open(region).await?,
        };
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while started.elapsed().as_secs_f64() < seconds {
                connection.get(&target).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Throughput rounds per query.
const ROUNDS: usize = 7;
/// Seconds per throughput round.
const ROUND_SECONDS: f64 = 1.5;

/// The median throughput of `target`, secured and (with `baseline`) open, over [`ROUNDS`]
/// alternating rounds; the open figure is 0 without `baseline`.
pub(crate) async fn rates(
    region: &Region,
    target: &str,
    baseline: bool,
) -> anyhow::Result<(f64, f64)> {
    let mut secured = Vec::new();
    let mut open = Vec::new();
    for _ in 0..ROUNDS {
        secured.push(throughput(region, target.to_owned(), ROUND_SECONDS, false).await?);
        if baseline {
            open.push(throughput(region, target.to_owned(), ROUND_SECONDS, true).await?);
        }
    }
    let median = |mut rates: Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied().unwrap_or(0.0)
    };
    Ok((median(secured), median(open)))
}

/// Runs the search benchmark.
pub(crate) async fn search(
    patients: usize,
    small: usize,
    requests: usize,
    seed: u64,
    postgres: Option<String>,
) -> anyhow::Result<()> {
    crate::bench::check_postgres_url(postgres.as_deref())?;
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; measure with `cargo run --release -- bench search …`"
        );
    }
    let mut regions = Vec::new();
    for size in [small, patients] {
        regions.push(load_region(size, seed, None).await?);
    }
    let (timings, note, patient) = time_queries(&regions[0], &regions[1], requests).await?;
    println!("\n{note}");
    println!(
        "latency over one keep-alive connection per region, {requests} requests each, in alternating blocks of 30 (ms)"
    );
    println!(
        "  {:<42} {:>8} {:>8} {:>8} {:>8}   {:>14}",
        "query",
        "p50",
        "p95",
        "target",
        "ratio",
        format!("p50 at {}", regions[0].patients)
    );
    for &Timing {
        name,
        p50,
        p95,
        small_p50,
        target,
    } in &timings
    {
        println!(
            "  {name:<42} {p50:>8.3} {p95:>8.3} {target:>8.1} {:>8.2}   {small_p50:>8.3} (×{:.2})",
            p50 / target,
            if small_p50 > 0.0 {
                p50 / small_p50
            } else {
                0.0
            }
        );
    }
    let large = &regions[1];
    hidden_versus_absent(large, requests).await?;
    let mut connection = Connection::open(large).await?;
    let (_, _, list) = queries(&mut connection, Some(&patient)).await?;
    let read = list.first().map(|q| q.1.clone()).unwrap_or_default();
    let code = list.get(4).map(|q| q.1.clone()).unwrap_or_default();
    let baseline = large.baseline.is_some();
    let read_rates = rates(large, &read, baseline).await?;
    let code_rates = rates(large, &code, baseline).await?;
    println!(
        "\nthroughput, 8 keep-alive clients in this process (region of {}), with access control, consent filtering and audit;\nmedian of {ROUNDS} rounds of {ROUND_SECONDS} s{}",
        large.patients,
        if baseline {
            ", each round secured then baseline, so drift and background work hit both alike"
        } else {
            ""
        }
    );
    println!(
        "  read by id             {:>8.0} req/s   target ≥ 30000   ratio {:.2}",
        read_rates.0,
        read_rates.0 / 30_000.0
    );
    println!(
        "  patient + code search  {:>8.0} req/s   target ≥ 10000   ratio {:.2}",
        code_rates.0,
        code_rates.0 / 10_000.0
    );
    if baseline {
        println!(
            "\nthe same without access control (baseline router: no token, no filter, no audit)"
        );
        for (name, (secured, open)) in [
            ("read by id           ", read_rates),
            ("patient + code search", code_rates),
        ] {
            println!(
                "  {name}  {open:>8.0} req/s   security costs {:>5.1}% of throughput   target ≤ 20%   ratio {:.2}",
                100.0 * (1.0 - secured / open),
                (1.0 - secured / open) / 0.20
            );
        }
    } else {
        println!(
            "\n(the cost of security is measured against a baseline router compiled only with\n `cargo run --release --features bench-baseline -- bench search`)"
        );
    }
    if let Some(db) = postgres {
        crate::bench_search_postgres::beside(
            &db,
            large,
            seed,
            requests,
            read_rates.0,
            code_rates.0,
        )
        .await?;
    }
    for region in &mut regions {
        region.stop();
    }
    Ok(())
}
