//! `tsunagi ingest dicomweb`: one pull of a hospital's PACS over DICOMweb (QIDO-RS), and the
//! configuration both it and a `[[source]] kind = "dicomweb"` section build.

use std::time::Duration;

use anyhow::Context;
use tsunagi_adapter_dicomweb::{
    DEFAULT_CONCURRENCY, DEFAULT_PAGE_SIZE, DEFAULT_TIMEOUT, DicomWebConfig, Qido,
};
use tsunagi_core::FacilityId;

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
    /// The gateway's public DICOMweb base (`https://gateway.example/dicomweb`), written as the
    /// address of the hospital's Endpoint; default `/dicomweb` on the FHIR API's origin.
    #[arg(long)]
    pub(crate) gateway_url: Option<String>,
}

/// The configuration of a PACS pull; the authorization read from the environment variable
/// named, a missing one an error naming it.
pub(crate) fn dicomweb_config(
    facility: &str,
    name: Option<String>,
    url: &str,
    authorization_env: Option<&str>,
    page_size: Option<usize>,
    concurrency: Option<usize>,
    timeout_seconds: Option<u64>,
) -> anyhow::Result<DicomWebConfig> {
    let authorization = match authorization_env {
        Some(variable) => Some(std::env::var(variable).with_context(|| {
            format!("the PACS authorization is to be in ${variable}, which is not set")
        })?),
        None => None,
    };
    anyhow::ensure!(
        timeout_seconds != Some(0),
        "timeout_seconds must be at least 1"
    );
    let timeout = timeout_seconds.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    // The URL checked now, not at the first pull.
    Qido::new(url, None, timeout).map_err(|error| anyhow::anyhow!(error))?;
    Ok(DicomWebConfig {
        facility: FacilityId::parse(facility)?,
        name,
        url: url.to_owned(),
        authorization,
        page_size: page_size.unwrap_or(DEFAULT_PAGE_SIZE),
        concurrency: concurrency.unwrap_or(DEFAULT_CONCURRENCY),
        timeout,
        full: false,
        gateway_url: None,
    })
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
/// authorization read from the environment variable it names.
pub(crate) fn proxied_pacs(
    sources: &[crate::config::DicomWebSource],
) -> anyhow::Result<Vec<tsunagi_server::dicomweb::Pacs>> {
    sources
        .iter()
        .map(|source| {
            let config = dicomweb_config(
                &source.facility,
                source.name.clone(),
                &source.url,
                source.authorization_env.as_deref(),
                source.page_size,
                source.concurrency,
                source.timeout_seconds,
            )?;
            tsunagi_server::dicomweb::Pacs::new(
                config.facility.as_str(),
                &config.url,
                config.authorization,
                config.timeout,
            )
            .map_err(|error| anyhow::anyhow!("dicomweb source {}: {error}", source.facility))
        })
        .collect()
}

/// `tsunagi ingest dicomweb`.
pub(crate) async fn ingest_dicomweb(flags: DicomWebFlags) -> anyhow::Result<()> {
    let facility = flags.facility.as_str();
    let mut config = dicomweb_config(
        facility,
        flags.name.clone(),
        &flags.url,
        flags.authorization_env.as_deref(),
        None,
        None,
        None,
    )?;
    config.full = flags.full;
    config.gateway_url = flags.gateway_url.clone();
    let store = open_store(&flags.db).await?;
    register_hospital(store.as_ref(), facility, flags.name.as_deref(), flags.json).await?;
    let adapter = registry::pull(registry::Source::DicomWeb(config));
    pull_and_report(store, adapter, facility, flags.name.as_deref(), flags.json).await
}
