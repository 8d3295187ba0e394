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
    /// Format version of this file; this build reads version 1.
    pub(crate) version: u32,
    /// Where resources are stored.
    pub(crate) store: StoreConfig,
    /// SS-MIX2 sources, one per facility.
    #[serde(default)]
    pub(crate) ssmix2: Vec<Ssmix2Source>,
    /// The FHIR REST API (`tsunagi serve`).
    #[serde(default)]
    pub(crate) server: ServerConfig,
    /// Senders that push HL7 v2 (MLLP), one per hospital feed.
    #[serde(default)]
    pub(crate) hl7v2: Vec<Hl7v2Feed>,
    /// The MLLP listener of `tsunagi serve`.
    #[serde(default)]
    pub(crate) mllp: MllpConfig,
    /// Where notes and documents for each hospital are delivered.
    #[serde(default)]
    pub(crate) outbound: Vec<OutboundRoute>,
    /// Retry settings of outbound delivery.
    #[serde(default)]
    pub(crate) outbox: OutboxConfig,
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
    /// is a client id of an `[[hl7v2]]` sender's `clients`.
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

impl Config {
    /// Parses and validates the text of a config file.
    pub(crate) fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text)?;
        if config.version != 1 {
            bail!(
                "config version {} is not supported (this build reads version 1)",
                config.version
            );
        }
        for source in &config.ssmix2 {
            tsunagi_core::FacilityId::parse(&source.facility)?;
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
            tsunagi_core::FacilityId::parse(&feed.facility)?;
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
        for route in &config.outbound {
            tsunagi_core::FacilityId::parse(&route.facility)?;
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
        assert_eq!(config.version, 1);
        assert_eq!(config.ssmix2.len(), 3);
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
        let outbox = tsunagi_adapter_hl7v2::deliver::DeliveryOptions::default();
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
        // Defaults stated only in comments: `# key = value` and "(default N)".
        let batch = format!(
            "# batch_resources = {}",
            crate::commands::DEFAULT_BATCH_RESOURCES
        );
        assert!(text.contains(&batch), "the example should say {batch}");
        assert!(text.contains(&format!(
            "(default {})",
            crate::commands::DEFAULT_BATCH_RESOURCES
        )));
        // Every [[outbound]] names a facility the examples register.
        for facility in ["0610100010", "0610200018"] {
            assert!(text.contains(&format!("[[outbound]]\nfacility = \"{facility}\"")));
        }
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        let good = "version = 1\n[store]\nurl = \"sqlite://x.db\"\n";
        assert!(Config::parse(good).is_ok());
        assert!(Config::parse(&good.replace("url", "uri")).is_err());
        assert!(Config::parse(&good.replace("version = 1", "version = 2")).is_err());
        let bad_schedule = format!(
            "{good}[[ssmix2]]\nfacility = \"0610100010\"\nroots = [\"/x\"]\nschedule = \"every five minutes\"\n"
        );
        assert!(Config::parse(&bad_schedule).is_err());
        let bad_facility = format!(
            "{good}[[ssmix2]]\nfacility = \"061\"\nroots = [\"/x\"]\nschedule = \"0 */5 * * * *\"\n"
        );
        assert!(Config::parse(&bad_facility).is_err());
    }
}
