//! `tsunagi ingest dicomweb`: one pull of a hospital's PACS over DICOMweb (QIDO-RS), and the
//! configuration both it and a `[[source]] kind = "dicomweb"` section build.

use std::time::Duration;

use anyhow::Context;
use tsunagi_adapter_dicomweb::{
    DEFAULT_CONCURRENCY, DEFAULT_PAGE_SIZE, DEFAULT_TIMEOUT, DicomWebConfig,
};
use tsunagi_core::FacilityId;

pub(crate) use crate::config::DicomWebSource;
use crate::{
    ingest::{pull_and_report, register_hospital},
    open::open_store,
    registry,
};

/// The flags of `tsunagi ingest dicomweb`.
#[derive(Debug, clap::Args)]
pub(crate) struct DicomWebFlags {
    /// Database URL: sqlite://<path> (created if missing) or postgres://user@host:port/database.
    #[arg(long)]
    pub(crate) db: String,
    /// The hospital's 10-digit medical-institution code.
    #[arg(long)]
    pub(crate) facility: String,
    /// The hospital's name (for the summary).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// The base URL of the PACS's QIDO-RS/WADO-RS services (Orthanc: http://host:8042/dicom-web).
    #[arg(long)]
    pub(crate) url: String,
    /// The environment variable holding the `Authorization` header value the PACS expects
    /// (`Basic …` or `Bearer …`; never on the command line, where others can read it).
    #[arg(long)]
    pub(crate) authorization_env: Option<String>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Ignore the checkpoints and read every study again (writes stay idempotent).
    #[arg(long)]
    pub(crate) full: bool,
    /// How its studies are found: one query per known patient, or every study listed.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) discovery: crate::config::Discovery,
    /// The CA certificates (PEM) an `https://` PACS's certificate must chain to (its own CA,
    /// not the machine's store).
    #[arg(long)]
    pub(crate) ca_file: Option<std::path::PathBuf>,
    /// The Issuer of Patient ID (0010,0021) the PACS files the hospital's patients under; studies
    /// filed under another issuer are not taken. Default: any.
    #[arg(long)]
    pub(crate) issuer_of_patient_id: Option<String>,
    /// The gateway's public DICOMweb base (`https://gateway.example/dicomweb`), written as the
    /// address of the hospital's Endpoint; default `/dicomweb` on the FHIR API's origin.
    #[arg(long)]
    pub(crate) gateway_url: Option<String>,
}

/// The configuration of a PACS pull from its section (or the flags made one): the
/// authorization read from the environment variable named (a missing one an error naming it),
/// the URL and the CA file checked.
pub(crate) fn dicomweb_config(source: &DicomWebSource) -> anyhow::Result<DicomWebConfig> {
    let authorization = match &source.authorization_env {
        Some(variable) => Some(std::env::var(variable).with_context(|| {
            format!("the PACS authorization is to be in ${variable}, which is not set")
        })?),
        None => None,
    };
    anyhow::ensure!(
        source.timeout_seconds != Some(0),
        "timeout_seconds must be at least 1"
    );
    let timeout = source
        .timeout_seconds
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let config = DicomWebConfig {
        facility: FacilityId::parse(&source.facility)?,
        name: source.name.clone(),
        url: source.url.clone(),
        authorization,
        page_size: source.page_size.unwrap_or(DEFAULT_PAGE_SIZE),
        concurrency: source.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
        timeout,
        full: false,
        discovery: match source.discovery.unwrap_or_default() {
            crate::config::Discovery::Patients => tsunagi_adapter_dicomweb::Discovery::Patients,
            crate::config::Discovery::All => tsunagi_adapter_dicomweb::Discovery::All,
        },
        ca_file: source.ca_file.clone(),
        issuer_of_patient_id: source
            .issuer_of_patient_id
            .as_deref()
            .map(str::trim)
            .filter(|issuer| !issuer.is_empty())
            .map(str::to_owned),
        gateway_url: None,
    };
    // The URL and the CA checked now, not at the first pull.
    tsunagi_adapter_dicomweb::client(&config).map_err(|error| anyhow::anyhow!(error))?;
    Ok(config)
}

/// What can be checked of a PACS's section without reading files or the environment: the URL
/// (http or https, with a host), a CA file for https and none for http, the time limit.
pub(crate) fn check_source(source: &DicomWebSource) -> anyhow::Result<()> {
    let uri: hyper::Uri = source
        .url
        .parse()
        .with_context(|| format!("{:?} is not a URL", source.url))?;
    anyhow::ensure!(uri.host().is_some(), "{}: no host", source.url);
    match (uri.scheme_str(), &source.ca_file) {
        (Some("https"), Some(_)) | (Some("http"), None) => {}
        (Some("https"), None) => anyhow::bail!(
            "{}: TLS to a PACS needs the CA certificates to trust for it (ca_file)",
            source.url
        ),
        (Some("http"), Some(_)) => anyhow::bail!(
            "{}: a CA file is configured for this PACS but the URL is http://, so nothing would \
             be encrypted: use https://",
            source.url
        ),
        _ => anyhow::bail!(
            "{}: the DICOMweb base URL must be http://… or https://…",
            source.url
        ),
    }
    anyhow::ensure!(
        source.timeout_seconds != Some(0),
        "timeout_seconds must be at least 1"
    );
    Ok(())
}

/// The gateway's DICOMweb base derived from its public FHIR base (`…/fhir` → `…/dicomweb`).
pub(crate) fn gateway_of(fhir_base: Option<&str>) -> Option<String> {
    let base = fhir_base?.trim_end_matches('/');
    Some(format!(
        "{}/dicomweb",
        base.strip_suffix("/fhir").unwrap_or(base)
    ))
}

/// The PACSes `tsunagi serve` opens images from: each `[[source]] kind = "dicomweb"`, with its
/// authorization read from the environment variable it names and its CA.
pub(crate) fn proxied_pacs(
    sources: &[DicomWebSource],
) -> anyhow::Result<Vec<tsunagi_server::dicomweb::Pacs>> {
    sources
        .iter()
        .map(|source| {
            let config = dicomweb_config(source)?;
            let tls = config
                .ca_file
                .as_deref()
                .map(tsunagi_net::client::tls_trusting)
                .transpose()
                .map_err(|error| anyhow::anyhow!(error))?;
            tsunagi_server::dicomweb::Pacs::new(
                config.facility.as_str(),
                &config.url,
                config.authorization,
                config.timeout,
            )
            .map(|pacs| pacs.with_issuer(config.issuer_of_patient_id).with_tls(tls))
            .map_err(|error| anyhow::anyhow!("dicomweb source {}: {error}", source.facility))
        })
        .collect()
}

/// `tsunagi ingest dicomweb`.
pub(crate) async fn ingest_dicomweb(flags: DicomWebFlags) -> anyhow::Result<()> {
    let facility = flags.facility.as_str();
    let mut config = dicomweb_config(&DicomWebSource {
        facility: flags.facility.clone(),
        name: flags.name.clone(),
        url: flags.url.clone(),
        authorization_env: flags.authorization_env.clone(),
        issuer_of_patient_id: flags.issuer_of_patient_id.clone(),
        ca_file: flags.ca_file.clone(),
        discovery: Some(flags.discovery),
        ..DicomWebSource::default()
    })?;
    config.full = flags.full;
    config.gateway_url = flags.gateway_url.clone();
    let store = open_store(&flags.db).await?;
    register_hospital(store.as_ref(), facility, flags.name.as_deref(), flags.json).await?;
    let adapter = registry::pull(registry::Source::DicomWeb(config));
    pull_and_report(store, adapter, facility, flags.name.as_deref(), flags.json).await
}
