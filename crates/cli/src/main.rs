//! The `tsunagi` command line. Command names and flags are an interface: operators script them.
//!
//! - `tsunagi ingest ssmix2 --db <url> --facility <code> [--name <name>] <root>...`
//! - `tsunagi export ndjson --db <url> --out <dir>`
//! - `tsunagi generate region --out <dir> --patients <n> --seed <s>`
//! - `tsunagi demo [--listen <addr>] [--no-serve]`
//! - `tsunagi serve --db <url> [--listen <addr>] [--base-url <url>] [--config <file>]
//!   [--tls-cert <pem> --tls-key <pem> [--tls12]] [--mtls-listen <addr> --tls-client-ca <pem>]`
//! - `tsunagi bench ingest --patients <n>`
//! - `tsunagi bench search --patients <n> [--small <n>] [--requests <n>]`
//! - `tsunagi run --config <file> [--once]` (cron-scheduled pulls from `tsunagi.toml`)
//! - `tsunagi admin facility|user|client|consent … --db <url>`, `tsunagi admin link|unlink|audit`
//! - `tsunagi token issue --db <url> (--system <client-id> | --user <user-id>) --scope <scopes>`

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod admin;
mod backup;
mod bench;
mod bench_dicomweb;
mod bench_documents;
mod bench_extended;
mod bench_images;
mod bench_mllp;
mod bench_nodes;
mod bench_outbound;
mod bench_search;
mod bench_search_postgres;
mod config;
mod config_check;
mod demo;
mod export;
mod health;
mod ingest;
mod ingest_dicomweb;
mod limits;
mod open;
mod outbox;
mod packages;
mod progress;
mod quarantine;
mod registry;
mod run;
mod serve;
mod standin;
mod tables;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// See the workspace Cargo.toml for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tsunagi — a regional health-information gateway (SS-MIX2 in, JP Core FHIR out).
#[derive(Debug, Parser)]
#[command(name = "tsunagi", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask a running server whether it is ready (`GET /health/ready`): exit 0 on 200, else
    /// 1 with what it said (for a container's health check, or a script).
    Health {
        /// The readiness URL.
        #[arg(long, default_value = "http://127.0.0.1:8080/health/ready")]
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout_seconds: u64,
    },
    /// A hospital EHR stand-in: receives what Tsunagi delivers over MLLP and answers as told,
    /// for trying outbound delivery before the EHR is connected.
    Standin {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:2576")]
        listen: String,
        /// How to answer every message: AA, AE, AR, slow:<milliseconds>, drop or garbage.
        #[arg(long, default_value = "AA")]
        answer: String,
        /// Keep each message as received in this folder (000001.hl7, …).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Pull a source into the store.
    Ingest {
        #[command(subcommand)]
        source: IngestSource,
    },
    /// Write the store's current resources out.
    Export {
        #[command(subcommand)]
        format: ExportFormat,
    },
    /// Generate synthetic data.
    Generate {
        #[command(subcommand)]
        what: GenerateWhat,
    },
    /// Generate a small synthetic region of three hospitals, ingest it and serve it over FHIR.
    Demo {
        /// Where to put the region and the database.
        #[arg(long, default_value = "tsunagi-demo")]
        dir: PathBuf,
        /// Patients in the demo region.
        #[arg(long, default_value_t = 60)]
        patients: usize,
        /// Where the FHIR API listens once the region is loaded.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where the hospitals' HL7 v2 feeds (MLLP) are received while serving.
        #[arg(long, default_value = "127.0.0.1:2575")]
        mllp_listen: String,
        /// Stop after loading instead of serving.
        #[arg(long)]
        no_serve: bool,
    },
    /// Serve the FHIR REST API (read side) over a store.
    Serve {
        /// Database URL (default: [store] url of the config file).
        #[arg(long)]
        db: Option<String>,
        /// Address to listen on (default 127.0.0.1:8080, or [server] listen).
        #[arg(long)]
        listen: Option<String>,
        /// Public base URL ending in /fhir, for links (default: from the request's headers).
        #[arg(long)]
        base_url: Option<String>,
        /// tsunagi.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// PEM certificate chain: serve TLS 1.3 on --listen (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Also offer TLS 1.2 (ECDHE AEAD suites only).
        #[arg(long)]
        tls12: bool,
        /// A second listener with mutual TLS for system clients (needs --tls-client-ca).
        #[arg(long, requires = "tls_client_ca")]
        mtls_listen: Option<String>,
        /// Also listen for HL7 v2 over MLLP on this address (senders: the hl7v2 sources of --config).
        #[arg(long)]
        mllp_listen: Option<String>,
        /// PEM CA certificates that issue system clients' certificates (CN = client id).
        #[arg(long)]
        tls_client_ca: Option<PathBuf>,
        /// Also serve /health/live, /health/ready and /metrics alone on this address (plain
        /// HTTP, a connection cap of its own): probes are answered while the API is full.
        /// /metrics is then served there only (the API's listeners answer it 404).
        #[arg(long)]
        health_listen: Option<String>,
    },
    /// Measure performance against the targets.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// The network operator's records: facilities, users, clients, consents, links, audit.
    Admin {
        #[command(subcommand)]
        what: admin::Admin,
    },
    /// Access tokens for operators and scripts.
    Token {
        #[command(subcommand)]
        what: TokenWhat,
    },
    /// Check a tsunagi.toml: what it configures, and what to change in an older version.
    Config {
        #[command(subcommand)]
        what: ConfigWhat,
    },
    /// Run the pulls configured in a tsunagi.toml on their cron schedules.
    Run {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Run every configured pull once and exit.
        #[arg(long)]
        once: bool,
        /// Serve the pulls' counters (files, resources, rejects, lag per source) at
        /// `GET /metrics` on this address, e.g. 127.0.0.1:9464.
        #[arg(long)]
        metrics: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigWhat {
    /// Parse and check a configuration file; say what a version-1 file should become.
    Check {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum IngestSource {
    /// SS-MIX2 standardized storage (one or more roots of one facility).
    Ssmix2 {
        #[command(flatten)]
        storage: ingest::StorageFlags,
        /// Code tables folder (default: the tables built into this binary).
        #[arg(long)]
        mappings: Option<PathBuf>,
        /// Mapping worker threads (default: one per core, less one for the writer).
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// SS-MIX2 extended storage: documents (CDA, PDF…) as DocumentReference + Binary.
    Extended {
        #[command(flatten)]
        storage: ingest::StorageFlags,
        /// Largest main document read, in bytes; larger ones are refused.
        #[arg(long, default_value_t = tsunagi_adapter_ssmix2_extended::DEFAULT_MAX_DOCUMENT_BYTES)]
        max_document_bytes: u64,
    },
    /// A hospital's PACS over DICOMweb: the studies of the hospital's patients (QIDO-RS) as
    /// ImagingStudy, merged with the OMG-11 notices' studies.
    Dicomweb {
        #[command(flatten)]
        flags: ingest_dicomweb::DicomWebFlags,
    },
    /// A hospital EHR's MML 4.0 export folders: progress courses and referrals as
    /// DocumentReference + Binary, surgeries as Procedure, in the SS-MIX2 data's chart.
    Mml {
        #[command(flatten)]
        storage: ingest::StorageFlags,
        /// Largest MML file read, in bytes; larger ones are refused.
        #[arg(long, default_value_t = tsunagi_adapter_mml::DEFAULT_MAX_FILE_BYTES)]
        max_file_bytes: u64,
    },
}

#[derive(Debug, Subcommand)]
enum TokenWhat {
    /// Print an access token (valid five minutes) for a registered system client or user.
    Issue {
        /// Database URL.
        #[arg(long)]
        db: String,
        /// A registered system client.
        #[arg(long, conflicts_with = "user")]
        system: Option<String>,
        /// A registered user.
        #[arg(long)]
        user: Option<String>,
        /// Requested SMART scopes, e.g. "user/*.rs" (narrowed by the registration).
        #[arg(long)]
        scope: String,
        /// The server's public origin (as given to `serve --base-url`, without /fhir);
        /// default: the origin `tsunagi serve` last served under on this store, else
        /// http://127.0.0.1:8080.
        #[arg(long)]
        origin: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ExportFormat {
    /// One `<ResourceType>.ndjson` file per type, current versions only.
    Ndjson {
        /// Database URL.
        #[arg(long)]
        db: String,
        /// Output folder (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum GenerateWhat {
    /// A synthetic region: SS-MIX2 storages of three hospitals.
    Region {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Number of people.
        #[arg(long)]
        patients: usize,
        /// Random seed (same seed, same files).
        #[arg(long)]
        seed: u64,
        /// Also write each hospital's extended storage (documents) under <out>/extended/.
        #[arg(long)]
        extended: bool,
        /// Also write each hospital's PACS (DICOM Part 10 files of the charts' studies) under
        /// <out>/pacs/, to store in a test PACS.
        #[arg(long)]
        images: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// Ingest a small and a large region, serve each on loopback, and time the issue's searches
    /// (p50/p95, small/large ratio, throughput with 8 clients).
    Search {
        /// People in the large region.
        #[arg(long, default_value_t = 10_000)]
        patients: usize,
        /// People in the small region.
        #[arg(long, default_value_t = 2_000)]
        small: usize,
        /// Timed requests per query.
        #[arg(long, default_value_t = 300)]
        requests: usize,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Also serve the large region from this PostgreSQL (a schema of its own, dropped
        /// after) and print its latencies and throughput beside SQLite's.
        #[arg(long)]
        db: Option<String>,
    },
    /// Push one hospital's synthetic messages over MLLP (8 connections, commit before ACK) into
    /// a fresh SQLite store (and with `--db` a PostgreSQL), then resend them all; print
    /// messages/s and ACK latency.
    Mllp {
        /// People in the generated region (hospital A's messages are sent).
        #[arg(long, default_value_t = 400)]
        patients: usize,
        /// Connections sending at once (a patient's messages share one connection, in order).
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Messages each connection keeps unanswered: 1 waits for every ACK before the next
        /// message; more pipelines (ACKs still come in order, each after its commit).
        #[arg(long, default_value_t = 1)]
        window: usize,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Also send the same messages into this PostgreSQL (a schema of its own, dropped
        /// after) and print its rates beside SQLite's.
        #[arg(long)]
        db: Option<String>,
    },
    /// Queue notes for a hospital as the write endpoint does, deliver them to the EHR stand-in
    /// over MLLP (ACK read and checked, outcomes committed); print deliveries/s.
    Outbound {
        /// Notes queued and delivered.
        #[arg(long, default_value_t = 20_000)]
        notes: usize,
    },
    /// Generate extended storage, read and hash it (the floor), pull it into a fresh database and
    /// again unchanged; print documents/s, MB/s beside the floor, skip rate, peak RSS.
    Extended {
        /// Number of people.
        #[arg(long, default_value_t = 2000)]
        patients: usize,
        /// Progress notes per chart at least.
        #[arg(long, default_value_t = 20)]
        documents: u64,
        /// Scanned PDFs of 5 MB in a second corpus (MB/s and RSS when bytes dominate; 0: none).
        #[arg(long, default_value_t = 100)]
        large: usize,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Start Orthanc with `studies` small studies, sync them over QIDO-RS into a fresh database
    /// and again unchanged; then read images through the gateway's DICOMweb proxy (instances,
    /// a rendered frame, a `study_mb` MB study streamed); print each beside the same requests
    /// made straight to the PACS.
    Dicomweb {
        /// Studies in the PACS.
        #[arg(long, default_value_t = 10_000)]
        studies: usize,
        /// Studies per patient.
        #[arg(long, default_value_t = 4)]
        per_patient: usize,
        /// Size in MB of the large study streamed through the gateway (5 MB images).
        #[arg(long, default_value_t = 500)]
        study_mb: usize,
    },
    /// Two `tsunagi serve` nodes on one PostgreSQL against one: read-by-id and patient-search
    /// throughput with 8 clients (audit on), and the sizing figures per core and per node.
    Nodes {
        /// The PostgreSQL (a schema of the benchmark's own is made and dropped in it).
        #[arg(long)]
        db: String,
        /// People in the generated region.
        #[arg(long, default_value_t = 500)]
        patients: usize,
        /// Keep-alive clients, spread evenly over the nodes (the issue's floor is 8).
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Generate, ingest into a fresh database, re-ingest; print throughput, skip rate, peak RSS.
    Ingest {
        /// Number of people in the generated region.
        #[arg(long)]
        patients: usize,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Keep the generated region and database here instead of a temporary folder.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Also ingest the same region into this PostgreSQL (a schema of its own, dropped
        /// after) and print its rate beside SQLite's.
        #[arg(long)]
        db: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Ingest {
                source:
                    IngestSource::Ssmix2 {
                        storage,
                        mappings,
                        workers,
                    },
            } => ingest::ingest_ssmix2(storage, mappings, workers).await,
            Command::Ingest {
                source:
                    IngestSource::Extended {
                        storage,
                        max_document_bytes,
                    },
            } => ingest::ingest_extended(storage, max_document_bytes).await,
            Command::Ingest {
                source:
                    IngestSource::Mml {
                        storage,
                        max_file_bytes,
                    },
            } => ingest::ingest_mml(storage, max_file_bytes).await,
            Command::Ingest {
                source: IngestSource::Dicomweb { flags },
            } => ingest_dicomweb::ingest_dicomweb(flags).await,
            Command::Export {
                format: ExportFormat::Ndjson { db, out },
            } => export::export_ndjson(&db, &out).await,
            Command::Generate {
                what:
                    GenerateWhat::Region {
                        out,
                        patients,
                        seed,
                        extended,
                        images,
                    },
            } => export::generate_region(&out, patients, seed, extended, images),
            Command::Demo {
                dir,
                patients,
                listen,
                mllp_listen,
                no_serve,
            } => {
                demo::demo(
                    &dir,
                    patients,
                    (!no_serve).then_some((listen.as_str(), mllp_listen.as_str())),
                )
                .await
            }
            Command::Admin { what } => admin::admin(what).await,
            Command::Token {
                what:
                    TokenWhat::Issue {
                        db,
                        system,
                        user,
                        scope,
                        origin,
                    },
            } => {
                admin::issue(
                    &db,
                    system.as_deref(),
                    user.as_deref(),
                    &scope,
                    origin.as_deref(),
                )
                .await
            }
            Command::Serve {
                db,
                listen,
                base_url,
                config,
                tls_cert,
                tls_key,
                tls12,
                mtls_listen,
                tls_client_ca,
                mllp_listen,
                health_listen,
            } => {
                serve::serve(serve::ServeFlags {
                    db,
                    listen,
                    base_url,
                    config,
                    tls_cert,
                    tls_key,
                    tls12,
                    mtls_listen,
                    tls_client_ca,
                    mllp_listen,
                    health_listen,
                })
                .await
            }
            Command::Bench {
                what:
                    BenchWhat::Ingest {
                        patients,
                        seed,
                        keep,
                        db,
                    },
            } => bench::ingest(patients, seed, keep, db).await,
            Command::Bench {
                what:
                    BenchWhat::Search {
                        patients,
                        small,
                        requests,
                        seed,
                        db,
                    },
            } => bench_search::search(patients, small, requests, seed, db).await,
            Command::Bench {
                what:
                    BenchWhat::Mllp {
                        patients,
                        connections,
                        window,
                        seed,
                        db,
                    },
            } => bench_mllp::mllp(patients, connections, window, seed, db).await,
            Command::Bench {
                what: BenchWhat::Outbound { notes },
            } => bench_outbound::run(notes).await,
            Command::Bench {
                what:
                    BenchWhat::Extended {
                        patients,
                        documents,
                        large,
                        seed,
                    },
            } => bench_extended::extended(patients, documents, large, seed).await,
            Command::Bench {
                what:
                    BenchWhat::Dicomweb {
                        studies,
                        per_patient,
                        study_mb,
                    },
            } => bench_dicomweb::dicomweb(studies, per_patient, study_mb).await,
            Command::Bench {
                what:
                    BenchWhat::Nodes {
                        db,
                        patients,
                        clients,
                        seed,
                    },
            } => bench_nodes::nodes(&db, patients, clients, seed).await,
            Command::Run {
                config,
                once,
                metrics,
            } => run::run(&config, once, metrics.as_deref()).await,
            Command::Config {
                what: ConfigWhat::Check { config },
            } => config_check::check_config(&config),
            Command::Standin {
                listen,
                answer,
                out,
            } => standin::run(&listen, &answer, out).await,
            Command::Health {
                url,
                timeout_seconds,
            } => health::check(&url, std::time::Duration::from_secs(timeout_seconds.max(1))),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: a cause whose text is already said
/// (a database error quoting its driver's, which quotes its own source) is not repeated.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_says_each_cause_once() {
        let driver = std::io::Error::other("disk full");
        let store =
            tsunagi_store::StoreError::Database(tsunagi_store::DatabaseError::caused_by(driver));
        let error = anyhow::Error::new(store).context("cannot open sqlite://x.db");
        assert_eq!(
            super::describe(&error),
            "cannot open sqlite://x.db: database error: disk full"
        );
    }
}
