//! `tsunagi.toml`: the one typed, versioned configuration file. Unknown keys are refused, so a
//! typo is an error rather than a silently ignored setting. `deploy/tsunagi.example.toml` is the
//! documented reference and is parsed by a test.

use std::{path::PathBuf, str::FromStr};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Format version of this file; this build reads versions 2 and 1.
    pub(crate) version: u32,
    /// Where resources are stored.
    pub(crate) store: StoreConfig,
    /// Version 2: every source, `kind` naming its adapter (`crate::registry::SOURCE_KINDS`);
    /// `Config::parse` files them into `ssmix2` and `hl7v2`.
    #[serde(default)]
    pub(crate) source: Vec<SourceSection>,
    /// Version 2: every outbound destination (`crate::registry::DESTINATION_KINDS`); filed into
    /// `outbound`.
    #[serde(default)]
    pub(crate) destination: Vec<DestinationSection>,
    /// SS-MIX2 sources, one per facility (version 1's `[[ssmix2]]`).
    #[serde(default)]
    pub(crate) ssmix2: Vec<Ssmix2Source>,
    /// SS-MIX2 extended-storage sources (version 2 only), filed from `source`.
    #[serde(skip)]
    pub(crate) extended: Vec<ExtendedSource>,
    /// MML export sources (version 2 only), filed from `source`.
    #[serde(skip)]
    pub(crate) mml: Vec<MmlSource>,
    /// PACS sources (version 2 only), filed from `source`.
    #[serde(skip)]
    pub(crate) dicomweb: Vec<DicomWebSource>,
    /// The FHIR REST API (`tsunagi serve`).
    #[serde(default)]
    pub(crate) server: ServerConfig,
    /// Senders that push HL7 v2 (MLLP), one per hospital feed (version 1's `[[hl7v2]]`).
    #[serde(default)]
    pub(crate) hl7v2: Vec<Hl7v2Feed>,
    /// The MLLP listener of `tsunagi serve`.
    #[serde(default)]
    pub(crate) mllp: MllpConfig,
    /// Where notes and documents for each hospital are delivered (version 1's `[[outbound]]`).
    #[serde(default)]
    pub(crate) outbound: Vec<OutboundRoute>,
    /// Retry settings of outbound delivery.
    #[serde(default)]
    pub(crate) outbox: OutboxConfig,
}

/// A `[[source]]` section of a version-2 file.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind")]
pub(crate) enum SourceSection {
    /// SS-MIX2 standardized storage, pulled on a schedule.
    #[serde(rename = "ssmix2")]
    Ssmix2(Ssmix2Source),
    /// SS-MIX2 extended storage (documents), pulled on a schedule.
    #[serde(rename = "ssmix2-extended")]
    Ssmix2Extended(ExtendedSource),
    /// A hospital EHR's MML 4.0 export folder, pulled on a schedule.
    #[serde(rename = "mml")]
    Mml(MmlSource),
    /// A hospital's PACS over DICOMweb, pulled on a schedule.
    #[serde(rename = "dicomweb")]
    DicomWeb(DicomWebSource),
    /// A hospital or lab pushing HL7 v2 (MLLP, `POST /hl7v2`).
    #[serde(rename = "hl7v2")]
    Hl7v2(Hl7v2Feed),
}

/// A `[[destination]]` section of a version-2 file.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind")]
pub(crate) enum DestinationSection {
    /// The facility's MLLP listener.
    #[serde(rename = "mllp")]
    Mllp(MllpDestinationSection),
    /// The facility's inbound folder.
    #[serde(rename = "folder")]
    Folder(FolderDestinationSection),
}

/// `[[destination]] kind = "mllp"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MllpDestinationSection {
    /// The 10-digit code of the facility delivered to.
    pub(crate) facility: String,
    /// Its EHR's MLLP listener, `host:port`.
    pub(crate) address: String,
}

/// `[[destination]] kind = "folder"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FolderDestinationSection {
    /// The 10-digit code of the facility delivered to.
    pub(crate) facility: String,
    /// Its inbound folder.
    pub(crate) folder: PathBuf,
}

/// How one hospital receives notes and documents written in the network.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutboundRoute {
    /// The hospital's 10-digit facility code.
    pub(crate) facility: String,
    /// Its EHR's MLLP listener, `host:port`.
    pub(crate) mllp: Option<String>,
    /// Or its inbound folder: each message becomes `<MSH-10>.hl7`.
    pub(crate) folder: Option<PathBuf>,
}

/// Retry settings of outbound delivery.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutboxConfig {
    /// Attempts before a message becomes a dead letter (default 10).
    pub(crate) max_attempts: Option<u32>,
    /// Seconds after the first failed attempt, doubled after each (default 5).
    pub(crate) first_backoff_seconds: Option<u64>,
    /// The longest wait between attempts, in seconds (default 1800).
    pub(crate) max_backoff_seconds: Option<u64>,
    /// Seconds to wait for a connection or an ACK (default 30).
    pub(crate) timeout_seconds: Option<u64>,
    /// Seconds one node holds a claimed message (default 200; at least 6 × timeout + 10).
    pub(crate) lease_seconds: Option<u64>,
}

/// One sender that pushes HL7 v2 messages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hl7v2Feed {
    /// The registered facility whose records the feed carries (10-digit code).
    pub(crate) facility: String,
    /// Display name.
    pub(crate) name: Option<String>,
    /// MSH-4 (sending facility) the sender writes.
    pub(crate) sending_facility: String,
    /// MSH-3 (sending application), when the facility has several senders.
    pub(crate) sending_application: Option<String>,
    /// Client ids (certificate CN) that speak for this feed on a mutual-TLS MLLP listener.
    #[serde(default)]
    pub(crate) clients: Vec<String>,
    /// Addresses (`10.1.2.3`, `10.1.2.0/24`, `::1`) the sender connects from over plain TCP or
    /// TLS without a client certificate; a message naming this sender from anywhere else is
    /// refused (AR). Absent: loopback only.
    #[serde(default)]
    pub(crate) addresses: Vec<String>,
    /// Code tables folder; default: the tables built into the binary.
    pub(crate) mappings: Option<PathBuf>,
    /// Zero-pads numeric PID-3 values to this many digits (0 or absent: as sent).
    pub(crate) patient_id_width: Option<usize>,
    /// A lab company: the facilities whose patients it reports results for (ORU^R01 or
    /// OUL^R22, MSH-6 = the ordering facility, PID-3 = the patient's id there).
    #[serde(default)]
    pub(crate) reports_for: Vec<String>,
}

/// The MLLP listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MllpConfig {
    /// Address to listen on (or `--mllp-listen`); no listener when absent.
    pub(crate) listen: Option<String>,
    /// Largest frame accepted, in bytes (default 16 MiB).
    pub(crate) max_frame_bytes: Option<usize>,
    /// Connections served at once (default 256).
    pub(crate) max_connections: Option<usize>,
    /// Connections from one address at once (default 32).
    pub(crate) max_connections_per_peer: Option<usize>,
    /// Seconds a connection may stay silent between frames (default 300).
    pub(crate) idle_timeout_seconds: Option<u64>,
    /// Seconds a frame may take from its first byte to its end (default 60).
    pub(crate) frame_timeout_seconds: Option<u64>,
    /// TLS on the MLLP listener, with the server's certificate and key (`[server]` or
    /// `--tls-cert`/`--tls-key`).
    pub(crate) tls: Option<bool>,
    /// With TLS: every sender must present a certificate issued under this CA; its common name
    /// is a client id of an hl7v2 source's `clients`.
    pub(crate) tls_client_ca: Option<PathBuf>,
}

/// The FHIR REST API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerConfig {
    /// Address to listen on; default `127.0.0.1:8080`.
    pub(crate) listen: Option<String>,
    /// Public base URL ending in `/fhir`; default: taken from each request's `X-Forwarded-*` or
    /// `Host` headers.
    pub(crate) base_url: Option<String>,
    /// How long a search's result snapshot (its paging) lives, in seconds; default 1800.
    pub(crate) snapshot_ttl_seconds: Option<u64>,
    /// Result keys kept in all snapshots together; default 5,000,000 (about 40 MB).
    pub(crate) snapshot_max_keys: Option<usize>,
    /// Log lines on stderr (the access log and operational events): `json` (default for
    /// `serve`, one object per line) or `text`.
    pub(crate) log_format: Option<LogFormat>,
    /// PEM certificate chain: with `tls_key`, `listen` speaks TLS 1.3.
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub(crate) tls_key: Option<PathBuf>,
    /// Also offer TLS 1.2 (ECDHE AEAD suites only); default false.
    pub(crate) tls12: Option<bool>,
    /// A second, mutual-TLS listener for system clients (needs `tls_cert`, `tls_key` and
    /// `tls_client_ca`).
    pub(crate) mtls_listen: Option<String>,
    /// PEM CA certificates that issue the system clients' certificates.
    pub(crate) tls_client_ca: Option<PathBuf>,
    /// A listener for `/health/live`, `/health/ready` and `/metrics` alone (plain HTTP, a
    /// connection cap of its own), for probes and scrapes; while set, `listen` no longer serves
    /// `/metrics`. Default none (they are served on `listen` only).
    pub(crate) health_listen: Option<String>,
    /// FHIR packages (`.tgz`) or folders of StructureDefinition JSON whose profiles resources
    /// posted by others are checked against (JP Core's lab-result profiles for lab
    /// transactions) and that `$validate` offers; default none (structural checks only).
    #[serde(default)]
    pub(crate) profile_packages: Vec<PathBuf>,
    /// Connections of each listener at once (default 1024).
    pub(crate) max_connections: Option<usize>,
    /// Connections from one address at once (default 256; behind a reverse proxy, the proxy).
    pub(crate) max_connections_per_peer: Option<usize>,
    /// Seconds for a request's line and headers, from when the server waits for them (default
    /// 10; also the TLS handshake's limit).
    pub(crate) header_read_timeout_seconds: Option<u64>,
    /// Seconds a connection may stay silent after an answer, or after it opened (default 5).
    pub(crate) keep_alive_timeout_seconds: Option<u64>,
    /// Seconds for a request's whole body (default 60).
    pub(crate) body_read_timeout_seconds: Option<u64>,
    /// Seconds an answer may wait for the client to read it (default 60).
    pub(crate) send_timeout_seconds: Option<u64>,
    /// The largest request body, in bytes (default 16 MiB).
    pub(crate) max_body_bytes: Option<usize>,
    /// The DICOMweb proxy: the largest answer relayed, in bytes (default 8 GiB).
    pub(crate) dicomweb_max_answer_bytes: Option<u64>,
    /// Seconds a proxied answer may take, from the request to its last byte (default 600).
    pub(crate) dicomweb_max_answer_seconds: Option<u64>,
    /// Requests forwarded to one PACS at once (default 64); more wait, then get 503.
    pub(crate) dicomweb_max_in_flight: Option<usize>,
    /// Requests of one caller in flight to one PACS (default 8); more get 429.
    pub(crate) dicomweb_max_per_caller: Option<usize>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable lines.
    Text,
}

/// The store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreConfig {
    /// Database URL: `sqlite://<path>`.
    pub(crate) url: String,
}

/// One SS-MIX2 source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ssmix2Source {
    /// The facility's 10-digit medical-institution code.
    pub(crate) facility: String,
    /// Display name.
    pub(crate) name: Option<String>,
    /// Storage roots (one or more).
    pub(crate) roots: Vec<PathBuf>,
    /// When to pull: a cron expression with seconds (`sec min hour day-of-month month
    /// day-of-week [year]`), evaluated in UTC, e.g. `"0 */5 * * * *"` for every five minutes.
    pub(crate) schedule: String,
    /// Code tables folder; default: the tables built into the binary.
    pub(crate) mappings: Option<PathBuf>,
    /// Resources per store transaction (default 2000).
    pub(crate) batch_resources: Option<usize>,
    /// Worker threads (default: one per core).
    pub(crate) workers: Option<usize>,
}

/// `[[source]] kind = "ssmix2-extended"`: one facility's extended storage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtendedSource {
    /// The facility's 10-digit medical-institution code.
    pub(crate) facility: String,
    /// Display name.
    pub(crate) name: Option<String>,
    /// Storage roots (one or more).
    pub(crate) roots: Vec<PathBuf>,
    /// When to pull: a cron expression with seconds, evaluated in UTC.
    pub(crate) schedule: String,
    /// Resources per store transaction (default 2000).
    pub(crate) batch_resources: Option<usize>,
    /// Largest main document read, in bytes (default 52428800, 50 MiB); larger ones are
    /// refused.
    pub(crate) max_document_bytes: Option<u64>,
}

/// `[[source]] kind = "mml"`: one facility's MML 4.0 export folder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MmlSource {
    /// The facility's 10-digit medical-institution code.
    pub(crate) facility: String,
    /// Display name.
    pub(crate) name: Option<String>,
    /// Export folders (one or more).
    pub(crate) roots: Vec<PathBuf>,
    /// When to pull: a cron expression with seconds, evaluated in UTC.
    pub(crate) schedule: String,
    /// Resources per store transaction (default 2000).
    pub(crate) batch_resources: Option<usize>,
    /// Largest file read, in bytes (default 52428800, 50 MiB); larger ones are refused.
    pub(crate) max_file_bytes: Option<u64>,
}

/// `[[source]] kind = "dicomweb"`: one hospital's PACS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DicomWebSource {
    /// The hospital's 10-digit medical-institution code.
    pub(crate) facility: String,
    /// Display name.
    pub(crate) name: Option<String>,
    /// The base URL of its QIDO-RS/WADO-RS services.
    pub(crate) url: String,
    /// The environment variable holding the `Authorization` header value the PACS expects.
    pub(crate) authorization_env: Option<String>,
    /// When to pull: a cron expression with seconds, evaluated in UTC.
    pub(crate) schedule: String,
    /// Rows per QIDO-RS page (default 2000).
    pub(crate) page_size: Option<usize>,
    /// Patients asked about at once (default 8).
    pub(crate) concurrency: Option<usize>,
    /// Time limit of one request to the PACS, in seconds (default 30).
    pub(crate) timeout_seconds: Option<u64>,
    /// The Issuer of Patient ID (0010,0021) the PACS files the hospital's patients under.
    pub(crate) issuer_of_patient_id: Option<String>,
    /// The CA certificates (PEM) an `https://` PACS's certificate must chain to.
    pub(crate) ca_file: Option<PathBuf>,
    /// How its studies are found: `patients` (one query per known patient, the default) or
    /// `all` (every study of the PACS listed).
    pub(crate) discovery: Option<Discovery>,
}

/// How a PACS's studies are found (`discovery`, `--discovery`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Discovery {
    /// One QIDO-RS query per known patient.
    #[default]
    Patients,
    /// Every study of the PACS listed, page by page.
    All,
}

/// `text` as a TOML basic string, quoted and escaped.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

impl Config {
    /// Parses and validates the text of a config file.
    pub(crate) fn parse(text: &str) -> anyhow::Result<Self> {
        let mut config: Config = toml::from_str(text)?;
        match config.version {
            1 if !config.source.is_empty() || !config.destination.is_empty() => bail!(
                "[[source]] and [[destination]] are sections of config version 2: set version = 2"
            ),
            1 => {}
            2 if !config.ssmix2.is_empty()
                || !config.hl7v2.is_empty()
                || !config.outbound.is_empty() =>
            {
                bail!(
                    "version 2 names sources as [[source]] kind = \"ssmix2\", \"ssmix2-extended\", \"mml\", \"dicomweb\" or \"hl7v2\" and \
                     destinations as [[destination]] kind = \"mllp\" or \"folder\"; \
                     [[ssmix2]], [[hl7v2]] and [[outbound]] are version 1 (`tsunagi config check` \
                     shows the rewrite)"
                )
            }
            2 => config.take_sections(),
            other => {
                bail!("config version {other} is not supported (this build reads versions 1 and 2)")
            }
        }
        for (index, source) in config.mml.iter().enumerate() {
            tsunagi_core::FacilityId::parse(&source.facility)
                .with_context(|| format!("mml source {:?}", source.facility))?;
            // One section per facility: its files' checkpoints are one scope.
            if config.mml[..index]
                .iter()
                .any(|other| other.facility == source.facility)
            {
                bail!(
                    "mml source {}: configured twice; give one section with several roots",
                    source.facility
                );
            }
            cron::Schedule::from_str(&source.schedule).with_context(|| {
                format!(
                    "mml source {}: schedule {:?} is not a cron expression",
                    source.facility, source.schedule
                )
            })?;
            if source.roots.is_empty() {
                bail!(
                    "mml source {}: at least one root is required",
                    source.facility
                );
            }
        }
        for (index, source) in config.dicomweb.iter().enumerate() {
            tsunagi_core::FacilityId::parse(&source.facility)
                .with_context(|| format!("dicomweb source {:?}", source.facility))?;
            // One section per hospital: its studies' checkpoints are one scope.
            if config.dicomweb[..index]
                .iter()
                .any(|other| other.facility == source.facility)
            {
                bail!("dicomweb source {}: configured twice", source.facility);
            }
            cron::Schedule::from_str(&source.schedule).with_context(|| {
                format!(
                    "dicomweb source {}: schedule {:?} is not a cron expression",
                    source.facility, source.schedule
                )
            })?;
            // The URL and its TLS settings, checked now; files and the authorization are read
            // where the pull or the server runs (they may exist there only).
            crate::ingest_dicomweb::check_source(source).map_err(|error| {
                anyhow::anyhow!("dicomweb source {}: {error:#}", source.facility)
            })?;
        }
        for source in &config.ssmix2 {
            tsunagi_core::FacilityId::parse(&source.facility)
                .with_context(|| format!("ssmix2 source {:?}", source.facility))?;
            cron::Schedule::from_str(&source.schedule).with_context(|| {
                format!(
                    "ssmix2 source {}: schedule {:?} is not a cron expression",
                    source.facility, source.schedule
                )
            })?;
            if source.roots.is_empty() {
                bail!(
                    "ssmix2 source {}: at least one root is required",
                    source.facility
                );
            }
        }
        for feed in &config.hl7v2 {
            tsunagi_core::FacilityId::parse(&feed.facility)
                .with_context(|| format!("hl7v2 source {:?}", feed.facility))?;
            for code in &feed.reports_for {
                tsunagi_core::FacilityId::parse(code)
                    .with_context(|| format!("hl7v2 source {}: reports_for", feed.facility))?;
            }
            if feed.sending_facility.trim().is_empty() {
                bail!(
                    "hl7v2 feed {}: sending_facility (MSH-4) is required",
                    feed.facility
                );
            }
            for range in &feed.addresses {
                range
                    .parse::<tsunagi_net::Cidr>()
                    .with_context(|| format!("hl7v2 feed {}: addresses", feed.facility))?;
            }
        }
        let mut destinations = std::collections::BTreeSet::new();
        for route in &config.outbound {
            tsunagi_core::FacilityId::parse(&route.facility)
                .with_context(|| format!("destination {:?}", route.facility))?;
            // Version 1 kept the last of two routes for one facility; version 2 says so.
            if !destinations.insert(route.facility.as_str()) && config.version >= 2 {
                bail!(
                    "destination {}: a facility has one [[destination]]; this is its second",
                    route.facility
                );
            }
            if route.mllp.is_some() == route.folder.is_some() {
                bail!(
                    "outbound {}: give exactly one of mllp = \"host:port\" or folder = \"/path\"",
                    route.facility
                );
            }
        }
        Ok(config)
    }

    /// Reads a config file.
    /// Files version 2's sections into the lists the rest of the CLI reads.
    fn take_sections(&mut self) {
        for section in std::mem::take(&mut self.source) {
            match section {
                SourceSection::Ssmix2(source) => self.ssmix2.push(source),
                SourceSection::Ssmix2Extended(source) => self.extended.push(source),
                SourceSection::Mml(source) => self.mml.push(source),
                SourceSection::DicomWeb(source) => self.dicomweb.push(source),
                SourceSection::Hl7v2(feed) => self.hl7v2.push(feed),
            }
        }
        for section in std::mem::take(&mut self.destination) {
            self.outbound.push(match section {
                DestinationSection::Mllp(mllp) => OutboundRoute {
                    facility: mllp.facility,
                    mllp: Some(mllp.address),
                    folder: None,
                },
                DestinationSection::Folder(folder) => OutboundRoute {
                    facility: folder.facility,
                    mllp: None,
                    folder: Some(folder.folder),
                },
            });
        }
    }

    /// What to change in a version-1 file to make it version 2 (nothing for version 2).
    pub(crate) fn upgrade_notes(&self) -> Vec<String> {
        if self.version != 1 {
            return Vec::new();
        }
        let mut notes = vec!["set version = 2".to_owned()];
        if !self.ssmix2.is_empty() {
            notes.push(format!(
                "rename each of the {} [[ssmix2]] sections to [[source]] and add kind = \"ssmix2\"",
                self.ssmix2.len()
            ));
        }
        if !self.hl7v2.is_empty() {
            notes.push(format!(
                "rename each of the {} [[hl7v2]] sections to [[source]] and add kind = \"hl7v2\"",
                self.hl7v2.len()
            ));
        }
        for route in &self.outbound {
            notes.push(match (&route.mllp, &route.folder) {
                (Some(address), _) => format!(
                    "rewrite [[outbound]] {} as [[destination]] kind = \"mllp\", facility = {}, address = {}",
                    route.facility,
                    toml_string(&route.facility),
                    toml_string(address)
                ),
                (None, Some(folder)) => format!(
                    "rewrite [[outbound]] {} as [[destination]] kind = \"folder\", facility = {}, folder = {}",
                    route.facility,
                    toml_string(&route.facility),
                    toml_string(&folder.display().to_string())
                ),
                (None, None) => format!("[[outbound]] {} names no route", route.facility),
            });
        }
        notes
    }

    pub(crate) fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text)
            .with_context(|| format!("{} is not a valid tsunagi.toml", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn the_example_config_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/tsunagi.example.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.version, 2);
        assert_eq!(config.ssmix2.len(), 3);
        assert_eq!(config.hl7v2.len(), 2);
        assert_eq!(config.outbound.len(), 2);
        assert!(config.upgrade_notes().is_empty());
    }

    /// Version 1 is still read, as it was, and means exactly what its version-2 rewrite means;
    /// `tsunagi config check` says how to rewrite it; the two spellings do not mix.
    #[test]
    fn version_1_is_still_read_and_its_rewrite_is_named() {
        let v1 = include_str!("../tests/data/tsunagi.v1.toml");
        let old = Config::parse(v1).unwrap();
        let v2 = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/tsunagi.example.toml"),
        )
        .unwrap();
        let new = Config::parse(&v2).unwrap();
        assert_eq!(format!("{:?}", old.ssmix2), format!("{:?}", new.ssmix2));
        assert_eq!(format!("{:?}", old.hl7v2), format!("{:?}", new.hl7v2));
        assert_eq!(format!("{:?}", old.outbound), format!("{:?}", new.outbound));
        let notes = old.upgrade_notes().join("\n");
        assert!(notes.contains("set version = 2"), "{notes}");
        assert!(
            notes.contains("3 [[ssmix2]] sections to [[source]]"),
            "{notes}"
        );
        assert!(
            notes.contains("2 [[hl7v2]] sections to [[source]]"),
            "{notes}"
        );
        assert!(
            notes.contains("[[destination]] kind = \"mllp\", facility = \"0610100010\", address = \"ehr.shonai.example:2576\""),
            "{notes}"
        );
        let mixed = v2.replacen("[[source]]\nkind = \"ssmix2\"", "[[ssmix2]]", 1);
        assert!(
            Config::parse(&mixed)
                .unwrap_err()
                .to_string()
                .contains("version 1")
        );
        let unknown = v2.replacen("kind = \"folder\"", "kind = \"ftp\"", 1);
        assert!(
            Config::parse(&unknown)
                .unwrap_err()
                .to_string()
                .contains("ftp")
        );
        let typo = v2.replacen("address = ", "adress = ", 1);
        assert!(Config::parse(&typo).is_err());
        // An unknown key beside every required one is refused as unknown, in either kind.
        for kind in ["\nkind = \"ssmix2\"\n", "\nkind = \"mllp\"\n"] {
            let extra = v2.replacen(kind, &format!("{kind}shedule = \"x\"\n"), 1);
            let refused = Config::parse(&extra).unwrap_err();
            assert!(
                format!("{refused:#}").contains("unknown field"),
                "{refused:#}"
            );
        }
        let twice = format!(
            "{v2}\n[[destination]]\nkind = \"folder\"\nfacility = \"0610100010\"\nfolder = \"/x\"\n"
        );
        assert!(
            Config::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("second")
        );
    }

    /// Every value the example states for a setting that has a default is that default, so the
    /// reference configuration never documents a behaviour the code does not have.
    #[test]
    fn the_example_states_the_code_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/tsunagi.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let config = Config::parse(&text).unwrap();
        let seconds = |d: std::time::Duration| Some(d.as_secs());
        let http = tsunagi_server::listen::HttpLimits::default();
        let settings = tsunagi_server::Settings::default();
        let server = &config.server;
        assert_eq!(server.max_connections, Some(http.max_connections));
        assert_eq!(
            server.max_connections_per_peer,
            Some(http.max_connections_per_peer)
        );
        assert_eq!(
            server.header_read_timeout_seconds,
            seconds(http.header_read_timeout)
        );
        assert_eq!(
            server.keep_alive_timeout_seconds,
            seconds(http.keep_alive_timeout)
        );
        assert_eq!(
            server.body_read_timeout_seconds,
            seconds(http.body_read_timeout)
        );
        assert_eq!(server.send_timeout_seconds, seconds(http.send_timeout));
        assert_eq!(server.max_body_bytes, Some(http.max_body_bytes));
        assert_eq!(server.snapshot_ttl_seconds, seconds(settings.snapshot_ttl));
        assert_eq!(server.snapshot_max_keys, Some(settings.snapshot_max_keys));
        assert_eq!(server.tls12, Some(false));
        assert_eq!(server.listen.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(
            config.extended[0].max_document_bytes,
            Some(tsunagi_adapter_ssmix2_extended::DEFAULT_MAX_DOCUMENT_BYTES)
        );
        let mllp = tsunagi_mllp::ServerOptions::default();
        assert_eq!(config.mllp.max_frame_bytes, Some(mllp.max_frame));
        assert_eq!(config.mllp.max_connections, Some(mllp.max_connections));
        assert_eq!(
            config.mllp.max_connections_per_peer,
            Some(mllp.max_connections_per_peer)
        );
        assert_eq!(config.mllp.idle_timeout_seconds, seconds(mllp.idle_timeout));
        assert_eq!(
            config.mllp.frame_timeout_seconds,
            seconds(mllp.frame_timeout)
        );
        let outbox = tsunagi_adapter::delivery::DeliveryOptions::default();
        assert_eq!(config.outbox.max_attempts, Some(outbox.max_attempts));
        assert_eq!(
            config.outbox.first_backoff_seconds,
            seconds(outbox.first_backoff)
        );
        assert_eq!(
            config.outbox.max_backoff_seconds,
            seconds(outbox.max_backoff)
        );
        assert_eq!(config.outbox.timeout_seconds, seconds(outbox.timeout));
        assert_eq!(config.outbox.lease_seconds, seconds(outbox.lease));
        // Defaults stated only in comments: `# key = value` and "(default N)".
        let batch = format!(
            "# batch_resources = {}",
            crate::ingest::DEFAULT_BATCH_RESOURCES
        );
        assert!(text.contains(&batch), "the example should say {batch}");
        assert!(text.contains(&format!(
            "(default {})",
            crate::ingest::DEFAULT_BATCH_RESOURCES
        )));
        // Every [[destination]] names a facility the examples register.
        for (kind, facility) in [("mllp", "0610100010"), ("folder", "0610200018")] {
            assert!(text.contains(&format!(
                "[[destination]]\nkind = \"{kind}\"\nfacility = \"{facility}\""
            )));
        }
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        let good = "version = 1\n[store]\nurl = \"sqlite://x.db\"\n";
        assert!(Config::parse(good).is_ok());
        assert!(Config::parse(&good.replace("url", "uri")).is_err());
        assert!(Config::parse(&good.replace("version = 1", "version = 3")).is_err());
        let bad_schedule = format!(
            "{good}[[ssmix2]]\nfacility = \"0610100010\"\nroots = [\"/x\"]\nschedule = \"every five minutes\"\n"
        );
        assert!(Config::parse(&bad_schedule).is_err());
        let bad_facility = format!(
            "{good}[[ssmix2]]\nfacility = \"061\"\nroots = [\"/x\"]\nschedule = \"0 */5 * * * *\"\n"
        );
        assert!(Config::parse(&bad_facility).is_err());
        // A PACS over TLS names its CA; a CA with plain http is refused, as is another scheme.
        let pacs = |url: &str, more: &str| {
            format!(
                "version = 2\n[store]\nurl = \"sqlite://x.db\"\n[[source]]\nkind = \"dicomweb\"\nfacility = \"0610200018\"\nurl = \"{url}\"\nschedule = \"0 0 3 * * *\"\n{more}"
            )
        };
        assert!(Config::parse(&pacs("http://pacs:8042/dicom-web", "")).is_ok());
        // The CA file is read where the server runs, not when the file is checked.
        assert!(
            Config::parse(&pacs(
                "https://pacs/dicom-web",
                "ca_file = \"/elsewhere/ca.pem\"\ndiscovery = \"all\"\n"
            ))
            .is_ok()
        );
        for (url, more, says) in [
            ("https://pacs/dicom-web", "", "ca_file"),
            (
                "http://pacs/dicom-web",
                "ca_file = \"/x.pem\"\n",
                "nothing would be encrypted",
            ),
            ("ftp://pacs/", "", "http://"),
            (
                "http://pacs/",
                "discovery = \"some\"\n",
                "`patients` or `all`",
            ),
        ] {
            let error = Config::parse(&pacs(url, more)).unwrap_err();
            assert!(
                format!("{error:#}").contains(says),
                "{url} {more}: {error:#}"
            );
        }
    }
}
