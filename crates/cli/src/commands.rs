//! The commands: ingest, export, generate, demo, run.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Instant,
};

use anyhow::{Context, bail};
use tsunagi_adapter::{AdapterContext, NoProgress, PullAdapter, PullReport};
use tsunagi_adapter_hl7v2::{
    FeedConfig, Feeds, Intake, IntakeOptions, MllpHandler,
    deliver::{Deliverer, DeliveryOptions, Route},
};
use tsunagi_adapter_ssmix2::Ssmix2Config;
use tsunagi_core::{
    FacilityId,
    clock::{Clock, SystemClock},
};
use tsunagi_mapping::pushed::IdentifyRules;
use tsunagi_server::tls::TlsFiles;
use tsunagi_store::Backend;
use tsunagi_store::{Access, Store};
use tsunagi_store_postgres::PostgresStore;
use tsunagi_store_sqlite::SqliteStore;

use crate::{config::Config, progress::TerminalProgress, registry, tables};

/// Opens the store named by a database URL: `sqlite://<path>` (created if missing) or
/// `postgres://user@host:port/database` (the schema is created in an empty database).
pub(crate) async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Backend>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            bail!("database url {url:?} names no file: use sqlite://<path>");
        }
        if let Some(parent) = Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let store = SqliteStore::open(url, Arc::new(SystemClock))
            .await
            .with_context(|| format!("cannot open {url}"))?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::open(url, Arc::new(SystemClock))
            .await
            .with_context(|| format!("cannot open {url}"))?;
        return Ok(Arc::new(store));
    }
    bail!(
        "unsupported database url {url:?}: expected sqlite://<path> or postgres://user@host:port/database"
    )
}

fn context(store: Arc<dyn Store>, progress: Arc<dyn tsunagi_adapter::Progress>) -> AdapterContext {
    AdapterContext {
        store,
        clock: Arc::new(SystemClock),
        progress,
    }
}

fn ssmix2_config(
    facility: &str,
    name: Option<String>,
    roots: Vec<PathBuf>,
    mappings: Option<&Path>,
    full: bool,
) -> anyhow::Result<Ssmix2Config> {
    let facility_id = FacilityId::parse(facility)?;
    let tables = tables::load(facility, mappings)?;
    Ok(Ssmix2Config {
        facility: facility_id,
        name,
        roots,
        tables: Arc::new(tables),
        batch_resources: DEFAULT_BATCH_RESOURCES,
        workers: 0,
        full,
    })
}

/// Resources per store transaction of an SS-MIX2 pull (`[[ssmix2]] batch_resources`).
pub(crate) const DEFAULT_BATCH_RESOURCES: usize = 2000;

/// The flags of `tsunagi ingest ssmix2`.
pub(crate) struct Ssmix2Ingest {
    /// Database URL.
    pub(crate) db: String,
    /// 10-digit facility code.
    pub(crate) facility: String,
    /// Facility name for the summary.
    pub(crate) name: Option<String>,
    /// Storage roots.
    pub(crate) roots: Vec<PathBuf>,
    /// Code tables folder (default: built in).
    pub(crate) mappings: Option<PathBuf>,
    /// Print the summary as JSON.
    pub(crate) json: bool,
    /// Ignore the checkpoint.
    pub(crate) full: bool,
    /// Mapping worker threads (0 = automatic).
    pub(crate) workers: usize,
}

/// `tsunagi ingest ssmix2`.
pub(crate) async fn ingest_ssmix2(flags: Ssmix2Ingest) -> anyhow::Result<()> {
    let Ssmix2Ingest {
        db,
        facility,
        name,
        roots,
        mappings,
        json,
        full,
        workers,
    } = flags;
    let (db, facility) = (db.as_str(), facility.as_str());
    let store = open_store(db).await?;
    let mut config = ssmix2_config(facility, name.clone(), roots, mappings.as_deref(), full)?;
    register_hospital(store.as_ref(), facility, name.as_deref(), json).await?;
    config.workers = workers;
    let adapter = registry::build(registry::Source::Ssmix2(config));
    let label = format!("ingest {facility}");
    let (progress, drawer) = TerminalProgress::start(label, !json);
    let started = Instant::now();
    let result = adapter.pull(&context(store, progress.clone())).await;
    progress.finish(drawer);
    let report = result?;
    let seconds = started.elapsed().as_secs_f64();
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["name"] = serde_json::json!(name);
        value["seconds"] = serde_json::json!(seconds);
        println!("{}", serde_json::to_string(&value)?);
    } else {
        print_summary(&report, name.as_deref(), seconds);
    }
    Ok(())
}

/// A hospital pulled for the first time joins the directory (kind hospital, named by `--name`),
/// so that consents, clients and deliveries can name it; one already registered is left as is.
async fn register_hospital(
    store: &dyn Backend,
    facility: &str,
    name: Option<&str>,
    quiet: bool,
) -> anyhow::Result<()> {
    if store
        .facilities()
        .await?
        .iter()
        .any(|known| known.code == facility)
    {
        return Ok(());
    }
    store
        .put_facility(&tsunagi_store::governance::Facility {
            code: facility.to_owned(),
            name: name.unwrap_or(facility).to_owned(),
            kind: "hospital".to_owned(),
            active: true,
        })
        .await?;
    let now = SystemClock.now_micros();
    store
        .append_audit(&[crate::admin::operator_event(
            "facility-add",
            facility,
            None,
            now,
        )])
        .await?;
    if !quiet {
        println!(
            "facility {facility} registered as a hospital ({}); `tsunagi admin facility add` changes it",
            name.unwrap_or(facility)
        );
    }
    Ok(())
}

fn total(map: &BTreeMap<String, u64>) -> u64 {
    map.values().sum()
}

/// Prints a human summary of one pull.
pub(crate) fn print_summary(report: &PullReport, name: Option<&str>, seconds: f64) {
    println!(
        "SS-MIX2 ingest of {}{}",
        report.facility,
        name.map(|n| format!(" {n}")).unwrap_or_default()
    );
    println!(
        "  files      {} seen, {} read, {} skipped as unchanged, {} rejected",
        report.files_seen,
        report.files_read,
        report.files_skipped_unchanged,
        report.rejected.len()
    );
    println!(
        "  messages   {} mapped, {} records deleted by the source, {} warnings",
        report.messages, report.records_deleted, report.warning_count
    );
    println!(
        "  resources  {} written: {} created, {} updated, {} unchanged, {} deleted",
        report.resources_written(),
        total(&report.created),
        total(&report.updated),
        total(&report.unchanged),
        total(&report.deleted)
    );
    let mut types: Vec<&String> = report
        .created
        .keys()
        .chain(report.updated.keys())
        .chain(report.deleted.keys())
        .collect();
    types.sort();
    types.dedup();
    for resource_type in types {
        let get = |map: &BTreeMap<String, u64>| map.get(resource_type).copied().unwrap_or(0);
        println!(
            "    {:<26} {:>8} created {:>7} updated {:>7} deleted",
            resource_type,
            get(&report.created),
            get(&report.updated),
            get(&report.deleted)
        );
    }
    if !report.rejected.is_empty() {
        println!("  rejected:");
        for rejection in &report.rejected {
            println!("    {}: {}", rejection.source, rejection.reason);
        }
    }
    if !report.warning_kinds.is_empty() {
        println!("  warnings, by kind:");
        for kind in &report.warning_kinds {
            println!("    {} × {}", kind.count, kind.kind);
            for source in &kind.first {
                println!("        {source}");
            }
            if kind.count > kind.first.len() as u64 {
                println!(
                    "        … and {} more",
                    kind.count - kind.first.len() as u64
                );
            }
        }
    }
    println!(
        "  time       {seconds:.2} s ({:.0} resources/s, {:.0} files/s)",
        report.resources_written() as f64 / seconds.max(1e-9),
        report.files_seen as f64 / seconds.max(1e-9)
    );
}

/// `tsunagi export ndjson`.
pub(crate) async fn export_ndjson(db: &str, out: &Path) -> anyhow::Result<()> {
    let store = open_store(db).await?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut current: Option<(String, std::io::BufWriter<std::fs::File>)> = None;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let out_dir = out.to_path_buf();
    store
        .for_each_current(&mut |resource| {
            let store_error = |error: std::io::Error| {
                tsunagi_store::StoreError::Invalid(format!("cannot write the export: {error}"))
            };
            if current
                .as_ref()
                .map(|(kind, _)| kind != &resource.resource_type)
                .unwrap_or(true)
            {
                if let Some((_, mut writer)) = current.take() {
                    writer.flush().map_err(store_error)?;
                }
                let path = out_dir.join(format!("{}.ndjson", resource.resource_type));
                let file = std::fs::File::create(&path).map_err(store_error)?;
                current = Some((
                    resource.resource_type.clone(),
                    std::io::BufWriter::new(file),
                ));
            }
            let Some(bytes) = resource.to_json_bytes()? else {
                return Ok(());
            };
            if let Some((_, writer)) = current.as_mut() {
                writer.write_all(&bytes).map_err(store_error)?;
                writer.write_all(b"\n").map_err(store_error)?;
            }
            *counts.entry(resource.resource_type.clone()).or_default() += 1;
            Ok(())
        })
        .await?;
    if let Some((_, mut writer)) = current.take() {
        writer.flush()?;
    }
    let total: u64 = counts.values().sum();
    println!("exported {total} resources to {}", out.display());
    for (resource_type, count) in counts {
        println!("  {resource_type}.ndjson  {count}");
    }
    Ok(())
}

/// `tsunagi generate region`.
pub(crate) fn generate_region(out: &Path, patients: usize, seed: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let report = tsunagi_synth::generate_region(out, patients, seed)
        .with_context(|| format!("cannot generate into {}", out.display()))?;
    println!(
        "generated {} people ({} with records in two hospitals): {} files, {:.1} MB in {:.1} s",
        report.people,
        report.shared,
        report.files,
        report.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    for facility in &report.facilities {
        println!(
            "  {} {}  {} patients, {} files  {}",
            facility.code,
            facility.name,
            facility.patients,
            facility.files,
            facility.root.display()
        );
    }
    println!("manifest: {}", out.join("region.json").display());
    Ok(())
}

/// `tsunagi demo`.
pub(crate) async fn demo(
    dir: &Path,
    patients: usize,
    listen: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let region = dir.join("region");
    if region.exists() {
        std::fs::remove_dir_all(&region)
            .with_context(|| format!("cannot clear {}", region.display()))?;
    }
    let db_path = dir.join("tsunagi.db");
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", db_path.display()));
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    println!(
        "1. generating a synthetic region of {patients} people in {}",
        region.display()
    );
    generate_region(&region, patients, 2026)?;
    let url = format!("sqlite://{}", db_path.display());
    println!("\n2. ingesting the three hospitals' SS-MIX2 storages into {url}");
    let store = open_store(&url).await?;
    let pull_hospital = |hospital: tsunagi_synth::Hospital| {
        let store = store.clone();
        let root = region.join(hospital.code);
        async move {
            let config = ssmix2_config(
                hospital.code,
                Some(hospital.name.to_owned()),
                vec![root],
                None,
                false,
            )?;
            let adapter = registry::build(registry::Source::Ssmix2(config));
            anyhow::Ok(adapter.pull(&context(store, Arc::new(NoProgress))).await?)
        }
    };
    for hospital in tsunagi_synth::HOSPITALS {
        let started = Instant::now();
        let report = pull_hospital(hospital).await?;
        print_summary(
            &report,
            Some(hospital.name),
            started.elapsed().as_secs_f64(),
        );
    }
    println!("\n3. pulling again: the checkpoint skips every unchanged file");
    for hospital in tsunagi_synth::HOSPITALS {
        let report = pull_hospital(hospital).await?;
        println!(
            "  {} {}: {} files seen, {} skipped as unchanged, {} resources written",
            hospital.code,
            hospital.name,
            report.files_seen,
            report.files_skipped_unchanged,
            report.resources_written()
        );
    }
    println!("\n4. the store now holds:");
    for (resource_type, count) in store.count_current().await? {
        println!("  {resource_type:<26} {count:>7}");
    }
    let patient_id = "0610100010.1000000";
    if let Some(patient) = store
        .read(&Access::Unrestricted, "Patient", patient_id)
        .await?
        && let Some(json) = patient.to_json()?
    {
        println!(
            "\n   Patient/{patient_id}:\n{}",
            tsunagi_fhir::json::to_pretty_resource(&json)?
        );
    }
    demo_network(store.as_ref(), patient_id).await?;
    println!(
        "\n   a clinic doctor's token (five minutes; issue another the same way):\n   TOKEN=$(tsunagi token issue --db {url} --user dr-demo --scope 'user/*.rs')\n   curl -H \"Authorization: Bearer $TOKEN\" http://{}/fhir/Patient/{patient_id}/\\$everything",
        listen.map_or("127.0.0.1:8080", |(http, _)| http)
    );
    println!(
        "\nnext: tsunagi export ndjson --db {url} --out {}",
        dir.join("export").display()
    );
    let Some((listen, mllp_listen)) = listen else {
        println!("      tsunagi serve --db {url}");
        return Ok(());
    };
    println!(
        "\n6. serving the region over FHIR, and the hospitals' HL7 v2 feeds over MLLP on {mllp_listen} (Ctrl-C stops; the access log goes to stderr)"
    );
    init_logging(crate::config::LogFormat::Text);
    // Hospital A's EHR is played by the stand-in: notes written for it are delivered there.
    let standin = tsunagi_mllp::standin::StandIn::start("127.0.0.1:0").await?;
    let hospital = tsunagi_synth::HOSPITALS[0];
    println!(
        "   {} EHR stand-in listening for notes on {} (MLLP)",
        hospital.name,
        standin.address()
    );
    let outbound = OutboundSetup {
        routes: HashMap::from([(
            hospital.code.to_owned(),
            Route::Mllp(standin.address().to_string()),
        )]),
        options: DeliveryOptions {
            first_backoff: std::time::Duration::from_secs(1),
            ..DeliveryOptions::default()
        },
    };
    // The signing key exists before the server and the demo note both look for it.
    tsunagi_server::security::signing_keys(store.as_ref(), SystemClock.now_micros()).await?;
    tokio::spawn(demo_note(
        store.clone(),
        listen.to_owned(),
        patient_id.to_owned(),
        standin,
    ));
    serve_store(
        store,
        listen,
        Listeners::default(),
        None,
        tsunagi_server::Settings::default(),
        Some(patient_id),
        LiveFeeds {
            mllp: Some(MllpSetup {
                address: Some(mllp_listen.to_owned()),
                feeds: synthetic_feeds()?,
                options: tsunagi_mllp::ServerOptions::default(),
                tls: None,
            }),
            outbound,
        },
    )
    .await
}

/// The demo's write-back: once the API is up, the clinic doctor writes a note to hospital A about
/// the shared patient through `POST /fhir/Communication`, and the note is followed until the
/// hospital's EHR stand-in has acknowledged it.
async fn demo_note(
    store: Arc<dyn Backend>,
    listen: String,
    patient_id: String,
    standin: tsunagi_mllp::standin::StandIn,
) {
    let outcome = async {
        let keys =
            tsunagi_server::security::signing_keys(store.as_ref(), SystemClock.now_micros())
                .await?;
        let key = keys.first().context("no signing key")?;
        // Once the API answers at all, the origin it serves under (the issuer) is recorded.
        let mut up = false;
        for _ in 0..200 {
            if http_post(&listen, "/fhir/metadata", "", "").await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        anyhow::ensure!(up, "the API did not come up");
        let origin = store
            .served_origin()
            .await?
            .context("the API did not record its origin")?;
        let (token, _) = tsunagi_server::security::issue_token(
            store.as_ref(),
            key,
            &tsunagi_server::security::TokenSettings::for_base(&origin),
            tsunagi_server::security::Subject::User {
                user: "dr-demo",
                via: "tsunagi demo",
            },
            "user/*.rs user/Communication.c",
            SystemClock.now_micros() / 1_000_000,
        )
        .await?;
        let hospital = tsunagi_synth::HOSPITALS[0].code;
        let note = serde_json::json!({
            "resourceType": "Communication",
            "identifier": [{"system": "urn:tsunagi:demo:notes", "value": "demo-note-1"}],
            "status": "completed",
            "subject": {"reference": format!("Patient/{patient_id}")},
            "recipient": [{"reference": format!("Organization/{hospital}")}],
            "payload": [{"contentString": "退院後の経過は良好です。①内服継続 ②次回受診 12/1（ｶﾙﾃ参照）"}]
        })
        .to_string();
        let mut reply = None;
        for _ in 0..100 {
            if let Ok(answer) = http_post(&listen, "/fhir/Communication", &token, &note).await {
                reply = Some(answer);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (status, location) = reply.context("the API did not come up")?;
        println!("\n7. dr-demo wrote a note to the hospital through the API: HTTP {status}, {location}");
        for _ in 0..200 {
            if let Some((control_id, _)) = standin.accepted().into_iter().next() {
                println!(
                    "   delivered to the {} EHR stand-in as MDM^T02 (ISO-2022-JP, MSH-10 {control_id}), acknowledged AA; see Task?focus=… for its state",
                    tsunagi_synth::HOSPITALS[0].name
                );
                return anyhow::Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        anyhow::bail!("the note was not delivered within 10 s")
    }
    .await;
    if let Err(error) = outcome {
        println!("   the demo note: {error:#}");
    }
}

/// A minimal HTTP/1.1 POST of FHIR JSON with a bearer token: the status code and `Location`.
async fn http_post(
    address: &str,
    path: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("no HTTP status")?;
    let location = text
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Ok((status, location))
}

/// The demo network: the three hospitals, a clinic with a doctor, the clinic invited to one
/// patient of hospital A, and that patient's record at hospital B linked when there is one.
async fn demo_network(store: &dyn Backend, patient_id: &str) -> anyhow::Result<()> {
    use tsunagi_store::governance::{Consent, Facility, Participant};
    const CLINIC: &str = "0610400014";
    let now = SystemClock.now_micros();
    for hospital in tsunagi_synth::HOSPITALS {
        store
            .put_facility(&Facility {
                code: hospital.code.to_owned(),
                name: hospital.name.to_owned(),
                kind: "hospital".to_owned(),
                active: true,
            })
            .await?;
    }
    store
        .put_facility(&Facility {
            code: CLINIC.to_owned(),
            name: "つなぎ内科クリニック".to_owned(),
            kind: "clinic".to_owned(),
            active: true,
        })
        .await?;
    store
        .put_participant(&Participant {
            id: "dr-demo".to_owned(),
            name: "佐藤 医師".to_owned(),
            facility: CLINIC.to_owned(),
            role: "doctor".to_owned(),
            active: true,
        })
        .await?;
    if store.holder(patient_id).await?.is_some() {
        store
            .put_consent(&Consent {
                id: "demo-invitation".to_owned(),
                patient: patient_id.to_owned(),
                disclosing: tsunagi_synth::HOSPITALS[0].code.to_owned(),
                viewing: CLINIC.to_owned(),
                start: now - 86_400_000_000,
                end: i64::MAX,
                withdrawn_at: None,
                source: "invitation".to_owned(),
                created_by: "tsunagi demo".to_owned(),
                created_at: now,
            })
            .await?;
    }
    println!(
        "\n5. the network: 3 hospitals and clinic {CLINIC} (user dr-demo, a doctor), invited by {} to Patient/{patient_id}; every other chart stays hidden from the clinic",
        tsunagi_synth::HOSPITALS[0].name
    );
    Ok(())
}

/// Flags of `tsunagi serve`.
pub(crate) struct ServeFlags {
    pub(crate) db: Option<String>,
    pub(crate) listen: Option<String>,
    pub(crate) base_url: Option<String>,
    pub(crate) config: Option<PathBuf>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) tls12: bool,
    pub(crate) mtls_listen: Option<String>,
    pub(crate) tls_client_ca: Option<PathBuf>,
    pub(crate) mllp_listen: Option<String>,
}

/// The feeds of the three synthetic hospitals `tsunagi demo` listens for.
pub(crate) fn synthetic_feeds() -> anyhow::Result<Feeds> {
    Ok(Feeds::new(
        tsunagi_synth::HOSPITALS
            .iter()
            .map(synthetic_feed)
            .collect::<anyhow::Result<Vec<_>>>()?,
    ))
}

/// The feed of a synthetic hospital, whose EHR writes MSH-3 = EHR and MSH-4 = its facility code.
pub(crate) fn synthetic_feed(hospital: &tsunagi_synth::Hospital) -> anyhow::Result<FeedConfig> {
    Ok(FeedConfig {
        facility: FacilityId::parse(hospital.code)?,
        name: Some(hospital.name.to_owned()),
        sending_facility: hospital.code.to_owned(),
        sending_application: Some("EHR".to_owned()),
        clients: Vec::new(),
        addresses: Vec::new(),
        tables: Arc::new(tables::load(hospital.code, None)?),
        rules: IdentifyRules::default(),
        reports_for: Vec::new(),
    })
}

/// The HL7 v2 senders of the config's `[[hl7v2]]`.
pub(crate) fn feeds_from_config(config: Option<&Config>) -> anyhow::Result<Feeds> {
    let mut feeds = Vec::new();
    for feed in config.map(|c| c.hl7v2.as_slice()).unwrap_or_default() {
        feeds.push(FeedConfig {
            facility: FacilityId::parse(&feed.facility)?,
            name: feed.name.clone(),
            sending_facility: feed.sending_facility.clone(),
            sending_application: feed.sending_application.clone(),
            clients: feed.clients.clone(),
            addresses: feed
                .addresses
                .iter()
                .map(|range| range.parse())
                .collect::<Result<_, _>>()?,
            tables: Arc::new(tables::load(&feed.facility, feed.mappings.as_deref())?),
            rules: IdentifyRules {
                patient_id_width: feed.patient_id_width.unwrap_or(0),
            },
            reports_for: feed
                .reports_for
                .iter()
                .map(|code| FacilityId::parse(code))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(Feeds::new(feeds))
}

/// The MLLP listener of `tsunagi serve`: where, which senders, which limits.
pub(crate) struct MllpSetup {
    /// Where MLLP is received; none: the feeds post over HTTP only (`POST /hl7v2`).
    pub(crate) address: Option<String>,
    pub(crate) feeds: Feeds,
    pub(crate) options: tsunagi_mllp::ServerOptions,
    /// TLS with the server's certificate; `Some(ca)`: client certificates required.
    pub(crate) tls: Option<Option<PathBuf>>,
}

impl MllpSetup {
    /// From `--mllp-listen` and the config's `[mllp]` and `[[hl7v2]]`; none without an address.
    fn from_config(flag: Option<&str>, config: Option<&Config>) -> anyhow::Result<Option<Self>> {
        let address = flag
            .map(str::to_owned)
            .or_else(|| config.and_then(|c| c.mllp.listen.clone()));
        let feeds = feeds_from_config(config)?;
        if address.is_none() && feeds.all().is_empty() {
            return Ok(None);
        }
        if feeds.all().is_empty() {
            tracing::warn!(target: "tsunagi::mllp", "no [[hl7v2]] senders are configured: every message will be rejected (AR)");
        }
        let options = crate::limits::mllp(config.map(|c| &c.mllp))?;
        let tls = match config.map(|c| (c.mllp.tls.unwrap_or(false), &c.mllp.tls_client_ca)) {
            Some((true, ca)) => Some(ca.clone()),
            Some((false, Some(_))) => bail!("[mllp] tls_client_ca needs tls = true"),
            _ => None,
        };
        Ok(Some(Self {
            address,
            feeds,
            options,
            tls,
        }))
    }
}

/// `POST /hl7v2` into the feed intake: the sender is the token's system client. Its feeds also
/// tell which lab a client posts FHIR results for (`POST /fhir`).
struct HttpIntake(Intake, Arc<Feeds>);

#[async_trait::async_trait]
impl tsunagi_server::hl7v2_api::MessageIntake for HttpIntake {
    async fn submit(&self, raw: Vec<u8>, client: String) -> Result<Option<Vec<u8>>, String> {
        let received = tsunagi_adapter_hl7v2::Received {
            channel: tsunagi_adapter_hl7v2::Channel::Http,
            raw,
            origin: tsunagi_adapter_hl7v2::Peer::Client(client),
        };
        self.0
            .submit(received)
            .await
            .map(|reply| reply.ack)
            .map_err(|error| error.to_string())
    }

    fn lab_scope(&self, client: &str) -> Option<tsunagi_server::transaction_api::LabScope> {
        let feed = self.1.all().iter().find(|feed| {
            !feed.reports_for.is_empty() && feed.clients.iter().any(|id| id == client)
        })?;
        Some(tsunagi_server::transaction_api::LabScope {
            lab: feed.facility.as_str().to_owned(),
            reports_for: feed
                .reports_for
                .iter()
                .map(|facility| facility.as_str().to_owned())
                .collect(),
        })
    }
}

/// The HL7 v2 links of `tsunagi serve`: feeds in over MLLP, notes and documents out.
pub(crate) struct LiveFeeds {
    pub(crate) mllp: Option<MllpSetup>,
    pub(crate) outbound: OutboundSetup,
}

/// Outbound delivery of `tsunagi serve`: each hospital's route and the retry settings.
#[derive(Default)]
pub(crate) struct OutboundSetup {
    pub(crate) routes: HashMap<String, Route>,
    pub(crate) options: DeliveryOptions,
}

impl OutboundSetup {
    /// From the config's `[[outbound]]` and `[outbox]`.
    pub(crate) fn from_config(config: Option<&Config>) -> Self {
        let mut setup = Self::default();
        let Some(config) = config else {
            return setup;
        };
        for route in &config.outbound {
            let target = match (&route.mllp, &route.folder) {
                (Some(address), _) => Route::Mllp(address.clone()),
                (None, Some(folder)) => Route::Folder(folder.clone()),
                // `Config::parse` requires one of the two.
                (None, None) => continue,
            };
            setup.routes.insert(route.facility.clone(), target);
        }
        let outbox = &config.outbox;
        let seconds = std::time::Duration::from_secs;
        if let Some(attempts) = outbox.max_attempts {
            setup.options.max_attempts = attempts.max(1);
        }
        if let Some(value) = outbox.first_backoff_seconds {
            setup.options.first_backoff = seconds(value);
        }
        if let Some(value) = outbox.max_backoff_seconds {
            setup.options.max_backoff = seconds(value);
        }
        if let Some(value) = outbox.timeout_seconds {
            setup.options.timeout = seconds(value);
        }
        setup
    }
}

/// The TLS side of `tsunagi serve`: flags win over the config file.
#[derive(Default)]
pub(crate) struct Listeners {
    /// TLS on the main listener.
    tls: Option<TlsFiles>,
    /// The mutual-TLS listener: its address and the CA file of client certificates.
    mutual: Option<(String, PathBuf)>,
}

impl Listeners {
    fn from_flags(
        flags: &ServeFlags,
        server: Option<&crate::config::ServerConfig>,
    ) -> anyhow::Result<Self> {
        let pick = |flag: &Option<PathBuf>, file: Option<&Option<PathBuf>>| {
            flag.clone().or_else(|| file.and_then(Clone::clone))
        };
        let cert = pick(&flags.tls_cert, server.map(|s| &s.tls_cert));
        let key = pick(&flags.tls_key, server.map(|s| &s.tls_key));
        let tls = match (cert, key) {
            (Some(certificate_chain), Some(private_key)) => Some(TlsFiles {
                certificate_chain,
                private_key,
                allow_tls12: flags.tls12 || server.and_then(|s| s.tls12).unwrap_or(false),
            }),
            (None, None) => None,
            _ => bail!("TLS needs both a certificate (--tls-cert) and its key (--tls-key)"),
        };
        let mutual_listen = flags
            .mtls_listen
            .clone()
            .or_else(|| server.and_then(|s| s.mtls_listen.clone()));
        let client_ca = pick(&flags.tls_client_ca, server.map(|s| &s.tls_client_ca));
        let mutual = match (mutual_listen, client_ca) {
            (Some(_), _) if tls.is_none() => {
                bail!("the mutual-TLS listener needs the server's --tls-cert and --tls-key")
            }
            (Some(listen), Some(ca)) => Some((listen, ca)),
            (Some(_), None) => bail!("the mutual-TLS listener needs --tls-client-ca"),
            (None, _) => None,
        };
        Ok(Self { tls, mutual })
    }
}

/// `tsunagi serve`.
pub(crate) async fn serve(flags: ServeFlags) -> anyhow::Result<()> {
    let config = flags.config.as_deref().map(Config::load).transpose()?;
    let db = flags
        .db
        .clone()
        .or_else(|| config.as_ref().map(|c| c.store.url.clone()))
        .context("--db is required (or a --config with a [store] url)")?;
    let server = config.as_ref().map(|c| &c.server);
    let listen = flags
        .listen
        .clone()
        .or_else(|| server.and_then(|s| s.listen.clone()))
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let mut settings = tsunagi_server::Settings {
        // One spelling from here on: no trailing slash (the issuer and links derive from it).
        base_url: flags
            .base_url
            .clone()
            .or_else(|| server.and_then(|s| s.base_url.clone()))
            .map(|base| base.trim_end_matches('/').to_owned()),
        limits: crate::limits::http(server)?,
        ..Default::default()
    };
    if let Some(base) = &settings.base_url {
        settings.tokens =
            tsunagi_server::security::TokenSettings::for_base(base.trim_end_matches("/fhir"));
    }
    if let Some(seconds) = server.and_then(|s| s.snapshot_ttl_seconds) {
        settings.snapshot_ttl = std::time::Duration::from_secs(seconds);
    }
    if let Some(keys) = server.and_then(|s| s.snapshot_max_keys) {
        settings.snapshot_max_keys = keys;
    }
    if let Some(packages) = server.map(|s| &s.profile_packages)
        && !packages.is_empty()
    {
        settings.profiles = std::sync::Arc::new(crate::packages::load_profiles(packages)?);
    }
    init_logging(
        server
            .and_then(|s| s.log_format)
            .unwrap_or(crate::config::LogFormat::Json),
    );
    if !settings.profiles.is_empty() {
        tracing::info!(
            profiles = settings.profiles.len(),
            "profiles loaded: lab transactions are validated against them, and $validate offers them"
        );
    }
    let listeners = Listeners::from_flags(&flags, server)?;
    let mut mllp = MllpSetup::from_config(flags.mllp_listen.as_deref(), config.as_ref())?;
    crate::limits::fit_descriptors(
        &mut settings.limits,
        1 + usize::from(listeners.mutual.is_some()),
        mllp.as_mut()
            .filter(|setup| setup.address.is_some())
            .map(|setup| &mut setup.options),
    )?;
    let outbound = OutboundSetup::from_config(config.as_ref());
    let store = open_store(&db).await?;
    serve_store(
        store,
        &listen,
        listeners,
        Some(&db),
        settings,
        None,
        LiveFeeds { mllp, outbound },
    )
    .await
}

/// Log lines (the access log among them) on stderr, at level INFO.
pub(crate) fn init_logging(format: crate::config::LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO);
    // A second initialisation (tests running commands in one process) keeps the first.
    let _ = match format {
        crate::config::LogFormat::Json => builder.json().try_init(),
        crate::config::LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// The origin of a bound listener: its own address, or loopback's when bound to every
/// interface (clients elsewhere need `--base-url`).
fn served_origin(scheme: &str, address: std::net::SocketAddr) -> String {
    let ip = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    format!(
        "{scheme}://{}",
        std::net::SocketAddr::new(ip, address.port())
    )
}

async fn serve_store(
    store: Arc<dyn Backend>,
    listen: &str,
    listeners: Listeners,
    db: Option<&str>,
    mut settings: tsunagi_server::Settings,
    example_patient: Option<&str>,
    live: LiveFeeds,
) -> anyhow::Result<()> {
    let LiveFeeds { mllp, outbound } = live;
    // Certificates are read before any socket is bound: a bad file fails the start, by name.
    let tls = listeners
        .tls
        .as_ref()
        .map(|files| tsunagi_server::tls::server_config(files, None))
        .transpose()?;
    let mutual = match (&listeners.mutual, &listeners.tls) {
        (Some((address, ca)), Some(files)) => {
            let config = tsunagi_server::tls::server_config(files, Some(ca))?;
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address}"))?;
            Some((listener, config))
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if tls.is_none() && !address.ip().is_loopback() {
        tracing::warn!(
            target: "tsunagi::tls",
            %address,
            "plain HTTP on a non-loopback address: give --tls-cert and --tls-key, or put a TLS-terminating proxy in front"
        );
    }
    // The signing key exists before anything is announced: a `token issue` run as soon as the
    // base is printed signs with the key this server verifies against.
    let keys =
        tsunagi_server::security::signing_keys(store.as_ref(), SystemClock.now_micros()).await?;
    // Without --base-url, the issuer and the token endpoint follow the address actually bound
    // (links still follow each request's Host and X-Forwarded-* headers).
    let origin = match &settings.base_url {
        Some(base) => base
            .trim_end_matches('/')
            .trim_end_matches("/fhir")
            .to_owned(),
        None => {
            let origin = served_origin(scheme, address);
            settings.tokens = tsunagi_server::security::TokenSettings::for_base(&origin);
            origin
        }
    };
    // For `token issue`; a store that cannot record it (read-only) still serves.
    if let Err(error) = store.record_served_origin(&origin).await {
        tracing::warn!(target: "tsunagi::serve", %error, "the served origin could not be recorded; give token issue --origin");
    }
    let base = settings
        .base_url
        .clone()
        .unwrap_or_else(|| format!("{origin}/fhir"));
    if let Some(db) = db {
        println!("serving {db}");
    }
    println!("FHIR base {base}");
    if let Some((listener, _)) = &mutual {
        println!(
            "mutual TLS for system clients on https://{}/fhir",
            listener.local_addr()?
        );
    }
    println!("  {base}/metadata");
    if let Some(patient) = example_patient {
        println!("  {base}/Patient/{patient}");
        println!("  {base}/Patient?jp-kana-sort=ヤ&_count=5");
        println!("  {base}/Observation?patient={patient}&category=laboratory&_sort=-date");
        println!("  {base}/Patient/{patient}/$everything");
    }
    let mut http_intake = None;
    let base_for_hl7v2 = base.trim_end_matches("/fhir").to_owned();
    if let Some(mllp) = mllp {
        let tls = match (&mllp.tls, &listeners.tls) {
            (None, _) => None,
            (Some(_), None) => bail!(
                "[mllp] tls = true needs the server's certificate and key (--tls-cert, --tls-key)"
            ),
            (Some(ca), Some(files)) => {
                let config = tsunagi_server::tls::server_config(files, ca.as_deref())?;
                // MLLP is not HTTP: no ALPN.
                let mut config = (*config).clone();
                config.alpn_protocols.clear();
                let namer: tsunagi_mllp::ClientNamer = Arc::new(tsunagi_server::tls::common_name);
                Some(tsunagi_mllp::Tls {
                    config: Arc::new(config),
                    client_id: namer,
                })
            }
        };
        let senders = mllp.feeds.all().len();
        let mut feeds = mllp.feeds;
        // Which facilities a lab reports for is the directory's record (`admin facility
        // reports-for`), joined to what [[hl7v2]] reports_for says; read at start.
        let labs: Vec<String> = feeds
            .all()
            .iter()
            .map(|feed| feed.facility.as_str().to_owned())
            .collect();
        for lab in labs {
            let codes: Vec<tsunagi_core::FacilityId> = store
                .lab_reports_for(&lab)
                .await?
                .iter()
                .filter_map(|code| tsunagi_core::FacilityId::parse(code).ok())
                .collect();
            feeds.add_reports_for(&lab, &codes);
        }
        let feeds = Arc::new(feeds);
        let intake = Intake::start(
            store.clone(),
            feeds.clone(),
            Arc::new(SystemClock),
            IntakeOptions::default(),
        );
        http_intake = Some((intake.clone(), feeds));
        if let Some(address) = &mllp.address {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for MLLP on {address}"))?;
            println!(
                "HL7 v2 over MLLP{} on {} ({senders} senders)",
                match &mllp.tls {
                    None => "",
                    Some(None) => " (TLS)",
                    Some(Some(_)) => " (mutual TLS)",
                },
                listener.local_addr()?,
            );
            tokio::spawn(tsunagi_mllp::serve(
                listener,
                tls,
                mllp.options,
                Arc::new(MllpHandler(intake)),
            ));
        }
        println!("HL7 v2 over HTTP: POST {base_for_hl7v2}/hl7v2 (system clients)");
    }
    // Notes and documents written through the API go to the hospitals' EHRs.
    if outbound.routes.is_empty() {
        println!(
            "outbound delivery: no [[outbound]] routes; notes to hospitals wait in `tsunagi admin outbox list`"
        );
    } else {
        println!(
            "delivering notes and documents to {} hospital(s)",
            outbound.routes.len()
        );
    }
    let deliverer = Deliverer::new(
        store.clone(),
        outbound.routes,
        Arc::new(SystemClock),
        outbound.options,
    );
    tokio::spawn(deliverer.run(
        Arc::new(tokio::sync::Notify::new()),
        std::time::Duration::from_millis(250),
    ));
    // SQLite: audit records are journaled beside the database and imported in the background.
    store.start_serving().await?;
    let state =
        tsunagi_server::AppState::new(store.clone(), store, Arc::new(SystemClock), settings, keys);
    if let Some((intake, feeds)) = http_intake {
        state.set_intake(Arc::new(HttpIntake(intake, feeds)));
    }
    let (stop, stopping) = tokio::sync::watch::channel(());
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(());
    });
    let stopped = |mut stopping: tokio::sync::watch::Receiver<()>| async move {
        let _ = stopping.changed().await;
    };
    let main = async {
        match tls {
            Some(config) => {
                let listener = tsunagi_server::tls::TlsListener::new(listener, config, false)?;
                tsunagi_server::serve_tls(listener, state.clone(), stopped(stopping.clone())).await
            }
            None => tsunagi_server::serve(listener, state.clone(), stopped(stopping.clone())).await,
        }
    };
    let mutual = async {
        match mutual {
            Some((listener, config)) => {
                let listener = tsunagi_server::tls::TlsListener::new(listener, config, true)?;
                tsunagi_server::serve_tls(listener, state.clone(), stopped(stopping.clone())).await
            }
            None => Ok(()),
        }
    };
    tokio::try_join!(main, mutual).context("the HTTP server stopped")?;
    println!("stopped");
    Ok(())
}

/// `tsunagi run`: cron-scheduled pulls.
pub(crate) async fn run(path: &Path, once: bool) -> anyhow::Result<()> {
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
            registry::build(registry::Source::Ssmix2(ssmix2)),
            source.name,
        ));
    }
    if jobs.is_empty() {
        bail!(
            "{} configures no sources (adapters known to this build: {})",
            path.display(),
            registry::KINDS.join(", ")
        );
    }
    if once {
        for (_, adapter, name) in &jobs {
            let started = Instant::now();
            let report = adapter
                .pull(&context(store.clone(), Arc::new(NoProgress)))
                .await?;
            print_summary(&report, name.as_deref(), started.elapsed().as_secs_f64());
        }
        return Ok(());
    }
    let mut tasks = Vec::new();
    for (schedule, adapter, name) in jobs {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(next) = schedule.upcoming(chrono::Utc).next() else { return };
                let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                let started = Instant::now();
                let info = adapter.describe();
                match adapter.pull(&context(store.clone(), Arc::new(NoProgress))).await {
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
