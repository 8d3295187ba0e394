//! `tsunagi bench dicomweb`, second half: images through the gateway's DICOMweb proxy beside
//! the same requests made straight to Orthanc in the same run — instance retrieval from 8
//! keep-alive clients (small instances and 5 MB ones), the added p50 latency of one instance
//! and of a rendered frame, and a whole study of `study_mb` MB streamed through the gateway
//! while the process's resident memory is sampled.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tsunagi_store::Backend;

use crate::bench_search::{Connection, Region, percentile};

const TARGET_THROUGHPUT_RATIO: f64 = 0.8;
const TARGET_ADDED_P50_MS: f64 = 2.0;

/// Where the PACS and the gateway answer the same objects.
pub(crate) struct Sides {
    /// The gateway's address.
    pub(crate) gateway: SocketAddr,
    /// Orthanc's.
    pub(crate) pacs: SocketAddr,
    /// A token the gateway takes.
    pub(crate) token: String,
}

impl Sides {
    async fn connection(&self, direct: bool) -> anyhow::Result<Connection> {
        if direct {
            Connection::open_at(self.pacs, String::new()).await
        } else {
            Connection::open_at(self.gateway, self.token.clone()).await
        }
    }

    /// The path of `object` (below `studies/`) on one side.
    fn path(direct: bool, object: &str) -> String {
        if direct {
            format!("/dicom-web/studies/{object}")
        } else {
            format!("/dicomweb/studies/{object}")
        }
    }
}

/// Requests per second and MB/s of 8 keep-alive clients taking `objects` in turn.
async fn throughput(
    sides: &Sides,
    objects: &[String],
    direct: bool,
    seconds: f64,
) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..8 {
        let mut connection = sides.connection(direct).await?;
        let paths: Vec<String> = objects.iter().map(|o| Sides::path(direct, o)).collect();
        tasks.push(tokio::spawn(async move {
            let (mut done, mut bytes) = (0u64, 0u64);
            let mut next = client;
            while started.elapsed().as_secs_f64() < seconds {
                let (status, body) = connection.get(&paths[next % paths.len()]).await?;
                if status != 200 {
                    bail!("{} answered {status}", paths[next % paths.len()]);
                }
                done += 1;
                bytes += body.len() as u64;
                next += 8;
            }
            anyhow::Ok((done, bytes))
        }));
    }
    let (mut done, mut bytes) = (0, 0);
    for task in tasks {
        let (d, b) = task.await??;
        done += d;
        bytes += b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok((done as f64 / elapsed, bytes as f64 / 1e6 / elapsed))
}

/// The median of alternating rounds, gateway and direct: (gateway, direct) requests/s and MB/s.
async fn rates(sides: &Sides, objects: &[String]) -> anyhow::Result<[(f64, f64); 2]> {
    throughput(sides, objects, false, 0.5).await?;
    throughput(sides, objects, true, 0.5).await?;
    let (mut gateway, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        gateway.push(throughput(sides, objects, false, 1.5).await?);
        direct.push(throughput(sides, objects, true, 1.5).await?);
    }
    let median = |mut runs: Vec<(f64, f64)>| {
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        runs[runs.len() / 2]
    };
    Ok([median(gateway), median(direct)])
}

/// p50 in ms of one client's GETs of `object`, gateway and direct, in alternating blocks.
async fn latency(sides: &Sides, object: &str) -> anyhow::Result<(f64, f64)> {
    let mut gateway = sides.connection(false).await?;
    let mut direct = sides.connection(true).await?;
    let (gateway_path, direct_path) = (Sides::path(false, object), Sides::path(true, object));
    let (mut through, mut straight) = (Vec::new(), Vec::new());
    for block in 0..12 {
        for _ in 0..25 {
            for (connection, path, samples) in [
                (&mut gateway, &gateway_path, &mut through),
                (&mut direct, &direct_path, &mut straight),
            ] {
                let started = Instant::now();
                let (status, _) = connection.get(path).await?;
                if status != 200 {
                    bail!("{path} answered {status}");
                }
                // The first block warms both.
                if block > 0 {
                    samples.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
    }
    through.sort_by(f64::total_cmp);
    straight.sort_by(f64::total_cmp);
    Ok((percentile(&through, 0.5), percentile(&straight, 0.5)))
}

/// This process's resident memory in MB.
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Reads the whole answer to `GET target` (read as fast as it comes, not kept): bytes and
/// seconds.
async fn stream(addr: SocketAddr, target: &str, token: &str) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut head = Vec::new();
    loop {
        let read = socket.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buffer[..read.min(16)]);
        }
        total += read as u64;
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!("{target}: {}", String::from_utf8_lossy(&head));
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

/// The whole study `uid` streamed through the gateway and straight from the PACS: MB/s of each,
/// and this process's resident memory before and at its peak while the gateway streamed it.
async fn whole_study(sides: &Sides, uid: &str) -> anyhow::Result<()> {
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let before = rss_mb();
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max((rss_mb() * 1000.0) as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (through_bytes, through_seconds) =
        stream(sides.gateway, &Sides::path(false, uid), &sides.token).await?;
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let (direct_bytes, direct_seconds) = stream(sides.pacs, &Sides::path(true, uid), "").await?;
    let peak = peak.load(Ordering::Relaxed) as f64 / 1000.0;
    let (through, direct) = (
        through_bytes as f64 / 1e6 / through_seconds,
        direct_bytes as f64 / 1e6 / direct_seconds,
    );
    println!(
        "  whole study, {:.0} MB             {through:>8.0} MB/s {direct:>8.0} MB/s                   {:>5.2}",
        through_bytes as f64 / 1e6,
        through / direct
    );
    println!(
        "  resident memory while streaming it  {before:.0} MB before, {peak:.0} MB at most ({:+.0} MB)   flat",
        peak - before
    );
    Ok(())
}

/// What is timed: small instances, 5 MB instances, a rendered frame, a whole study.
pub(crate) struct Objects {
    /// Small instances (`{study}/series/{series}/instances/{instance}`).
    pub(crate) small: Vec<String>,
    /// 5 MB instances of the large study.
    pub(crate) large: Vec<String>,
    /// The large study's UID.
    pub(crate) study: String,
}

/// Serves `store` with `pacs` behind `/dicomweb` and times it beside Orthanc.
pub(crate) async fn through_the_gateway(
    store: Arc<dyn Backend>,
    patients: usize,
    pacs: tsunagi_server::dicomweb::Pacs,
    pacs_addr: SocketAddr,
    objects: &Objects,
) -> anyhow::Result<()> {
    let settings = tsunagi_server::Settings {
        dicomweb: tsunagi_server::dicomweb::DicomWebSettings {
            pacs: vec![pacs],
            ..Default::default()
        },
        ..Default::default()
    };
    let region = Region::serve_with(tempfile::tempdir()?, store, patients, settings).await?;
    let sides = Sides {
        gateway: region.addr,
        pacs: pacs_addr,
        token: region.token().await?,
    };
    // What the gateway relays is what the PACS sent.
    let probe = &objects.small[0];
    let (status, through) = sides
        .connection(false)
        .await?
        .get(&Sides::path(false, probe))
        .await?;
    let (_, direct) = sides
        .connection(true)
        .await?
        .get(&Sides::path(true, probe))
        .await?;
    if status != 200 || through.len() != direct.len() {
        bail!(
            "the gateway answered {status} with {} bytes for an instance the PACS answers with {}: {}",
            through.len(),
            direct.len(),
            String::from_utf8_lossy(&through[..through.len().min(300)])
        );
    }
    println!("images through the gateway beside Orthanc itself (loopback, same objects, same run)");
    println!(
        "  measure                           gateway      Orthanc directly                 ratio   target"
    );
    let [(small, _), (small_direct, _)] = rates(&sides, &objects.small).await?;
    println!(
        "  small instances, 8 clients      {small:>8.0} /s  {small_direct:>8.0} /s                      {:>5.2}   ≥ {TARGET_THROUGHPUT_RATIO}",
        small / small_direct
    );
    let [(_, large), (_, large_direct)] = rates(&sides, &objects.large).await?;
    println!(
        "  5 MB instances, 8 clients       {large:>8.0} MB/s {large_direct:>7.0} MB/s                    {:>5.2}   ≥ {TARGET_THROUGHPUT_RATIO}",
        large / large_direct
    );
    let (through, direct) = latency(&sides, probe).await?;
    println!(
        "  one instance, p50               {through:>8.2} ms {direct:>8.2} ms                    +{:.2} ms   ≤ +{TARGET_ADDED_P50_MS} ms",
        through - direct
    );
    let frame = format!("{probe}/frames/1/rendered");
    let (through, direct) = latency(&sides, &frame).await?;
    println!(
        "  rendered frame (JPEG), p50      {through:>8.2} ms {direct:>8.2} ms                    +{:.2} ms   ≤ +{TARGET_ADDED_P50_MS} ms",
        through - direct
    );
    whole_study(&sides, &objects.study).await?;
    drop(region);
    Ok(())
}
