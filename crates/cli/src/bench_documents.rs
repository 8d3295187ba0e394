//! `tsunagi bench extended`, second half: the pulled documents read through the gateway over
//! real HTTP on loopback — `DocumentReference?patient=…&_content=…` timed beside the same
//! patient's search without the words (the reference), and a 5 MB PDF's `Binary` timed beside
//! the same bytes from a minimal static HTTP server in the same process (the floor).

use std::{net::SocketAddr, time::Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};
use tsunagi_store::{Batch, Operation, ResourceWrite};

use crate::bench_search::{BENCH_FACILITY, Connection, Region, percentile};

const TARGET_CONTENT_P50_MS: f64 = 5.0;
const TARGET_BINARY_MB_PER_SECOND: f64 = 500.0;
const PDF_BYTES: usize = 5 * 1024 * 1024;

/// 褥瘡 (pressure ulcer), two kanji: matched by scanning the patient's texts.
const SHORT_WORD: &str = "%E8%A4%A5%E7%98%A1";
/// 仙骨部に褥瘡 (a pressure ulcer over the sacrum): looked up region-wide in the trigram index;
/// its patients' notes hold 褥瘡.
const LONG_WORD: &str = "%E4%BB%99%E9%AA%A8%E9%83%A8%E3%81%AB%E8%A4%A5%E7%98%A1";

/// What both timed searches answer: the matches' ids, types and dates (the same response
/// shape, so the ratio is the cost of the words, not of sending narratives).
const ELEMENTS: &str = "_elements=id,type,date";

/// p50 and p95 in ms of `requests` GETs of `target`, each answered 200.
async fn time(
    connection: &mut Connection,
    target: &str,
    requests: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let (status, body) = connection.get(target).await?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        if status != 200 {
            bail!(
                "{target} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.95)))
}

/// A static server: every request on a connection is answered with `body` (keep-alive).
async fn static_server(body: Vec<u8>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let body = std::sync::Arc::new(body);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                loop {
                    // Read one request's head.
                    loop {
                        line.clear();
                        match stream.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line.trim_end().is_empty() => break,
                            Ok(_) => {}
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let socket = stream.get_mut();
                    if socket.write_all(head.as_bytes()).await.is_err()
                        || socket.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// MB/s of `requests` GETs of `target` of `size` bytes each.
async fn rate(
    connection: &mut Connection,
    target: &str,
    size: usize,
    requests: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    for _ in 0..requests {
        let (status, body) = connection.get(target).await?;
        if status != 200 || body.len() != size {
            bail!("{target} answered {status} with {} bytes", body.len());
        }
    }
    Ok((size * requests) as f64 / 1e6 / started.elapsed().as_secs_f64())
}

/// A synthetic PDF of `size` bytes (a header, then filler no decoder needs).
pub(crate) fn big_pdf(size: usize) -> Vec<u8> {
    let mut pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut state = 0x2545_F491_u32;
    while pdf.len() < size {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        pdf.extend_from_slice(&state.to_le_bytes());
    }
    pdf.truncate(size);
    pdf
}

/// Times full-text search and a large Binary through the gateway serving `region`.
pub(crate) async fn documents_through_the_api(region: &Region) -> anyhow::Result<()> {
    let mut connection = Connection::open(region).await?;
    // A patient of hospital A with documents, found as a clinic finds one: by words.
    let (status, body) = connection
        .get(&format!(
            "/fhir/DocumentReference?_content={LONG_WORD}&_count=1"
        ))
        .await?;
    let found: Value = serde_json::from_slice(&body)?;
    if status != 200 {
        bail!("region-wide _content answered {status}: {found}");
    }
    let patient = found["entry"][0]["resource"]["subject"]["reference"]
        .as_str()
        .and_then(|reference| reference.strip_prefix("Patient/"))
        .context("no document of hospital A holds the word")?
        .to_owned();
    let requests = 300;
    let words =
        format!("/fhir/DocumentReference?patient={patient}&_content={SHORT_WORD}&{ELEMENTS}");
    let plain = format!("/fhir/DocumentReference?patient={patient}&{ELEMENTS}");
    // The words match: the search timed is not an empty one.
    let (_, body) = connection.get(&words).await?;
    let matched: Value = serde_json::from_slice(&body)?;
    let matches = matched["entry"].as_array().map_or(0, Vec::len);
    if matches == 0 {
        bail!("{words} found nothing: {matched}");
    }
    let region_wide = format!("/fhir/DocumentReference?_content={LONG_WORD}&_count=10&{ELEMENTS}");
    // Warm both, then alternate blocks so drift falls on both alike.
    time(&mut connection, &words, 20).await?;
    time(&mut connection, &plain, 20).await?;
    let (mut with_words, mut without) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        with_words.push(time(&mut connection, &words, requests / 3).await?);
        without.push(time(&mut connection, &plain, requests / 3).await?);
    }
    let median = |runs: &[(f64, f64)]| {
        let mut p50: Vec<f64> = runs.iter().map(|run| run.0).collect();
        p50.sort_by(f64::total_cmp);
        p50[p50.len() / 2]
    };
    let (words_p50, plain_p50) = (median(&with_words), median(&without));
    let (region_p50, region_p95) = time(&mut connection, &region_wide, 100).await?;
    println!("documents through the API (real HTTP, loopback, one keep-alive connection)");
    println!(
        "  measure                              this run   reference                   ratio   target"
    );
    println!("  (patient {patient}: {matches} of its documents hold 褥瘡)");
    println!(
        "  _content in one patient, p50      {words_p50:>8.2} ms   {plain_p50:>6.2} ms same search without words   {:>5.2}   ≤ {TARGET_CONTENT_P50_MS} ms (×{:.2})",
        words_p50 / plain_p50,
        words_p50 / TARGET_CONTENT_P50_MS
    );
    println!(
        "  _content region-wide (3+ chars)   {region_p50:>8.2} ms p50, {region_p95:.2} ms p95 (trigram index, first 10)"
    );

    // A 5 MB PDF in that patient's record.
    let pdf = big_pdf(PDF_BYTES);
    let sha: [u8; 32] = Sha256::digest(&pdf).into();
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    let binary = json!({
        "resourceType": "Binary", "id": "bench-pdf",
        "meta": {"tag": [
            {"system": "urn:tsunagi:sha256", "code": hex},
            {"system": tsunagi_fhir::search::BINARY_PATIENT_TAG, "code": format!("Patient/{patient}")}
        ]},
        "contentType": "application/pdf"
    });
    region
        .store
        .apply(Batch {
            operations: vec![
                Operation::PutBlob {
                    sha256: sha,
                    bytes: pdf.clone(),
                },
                Operation::ReplaceSource {
                    source_key: "bench:pdf".to_owned(),
                    facility: BENCH_FACILITY.to_owned(),
                    resources: vec![ResourceWrite::from_json("Binary", "bench-pdf", &binary)?],
                },
            ],
        })
        .await?;
    // What the gateway serves is the PDF, exactly.
    let (_, served) = connection.get("/fhir/Binary/bench-pdf").await?;
    if Sha256::digest(&served)[..] != sha[..] {
        bail!("Binary/bench-pdf is not the PDF stored");
    }
    let floor_addr = static_server(pdf).await?;
    let mut floor = Connection::open_at(floor_addr, String::new()).await?;
    rate(&mut connection, "/fhir/Binary/bench-pdf", PDF_BYTES, 5).await?;
    rate(&mut floor, "/", PDF_BYTES, 5).await?;
    let (mut gateway, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        gateway.push(rate(&mut connection, "/fhir/Binary/bench-pdf", PDF_BYTES, 20).await?);
        direct.push(rate(&mut floor, "/", PDF_BYTES, 20).await?);
    }
    gateway.sort_by(f64::total_cmp);
    direct.sort_by(f64::total_cmp);
    let (gateway, direct) = (gateway[1], direct[1]);
    println!(
        "  Binary, 5 MB PDF                  {gateway:>8.0} MB/s {direct:>6.0} MB/s static server, same bytes  {:>5.2}   ≥ {TARGET_BINARY_MB_PER_SECOND} MB/s (×{:.2})",
        gateway / direct,
        gateway / TARGET_BINARY_MB_PER_SECOND
    );
    Ok(())
}
