//! `tsunagi serve`: the FHIR API with its listeners (plain, TLS, mutual TLS), the HL7 v2 intake
//! (MLLP and `POST /hl7v2`) and outbound delivery, wired from flags and `tsunagi.toml`.

use std::{path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use tsunagi_adapter::{
    delivery::{Deliverer, DeliveryOptions},
    listen::{ListenContext, MllpIntake, PushIntake, Pushed, Sender, Transport},
    outbound::Destination,
};
use tsunagi_adapter_hl7v2::{FeedConfig, Feeds};
use tsunagi_core::{
    FacilityId,
    clock::{Clock, SystemClock},
};
use tsunagi_mapping::pushed::IdentifyRules;
use tsunagi_server::tls::TlsFiles;
use tsunagi_store::Backend;

use crate::open::open_store;
use crate::{config::Config, registry, tables};

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
    pub(crate) health_listen: Option<String>,
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

/// The HL7 v2 senders of the config's hl7v2 sources (`[[source]] kind = "hl7v2"`; version 1: `[[hl7v2]]`).
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
    /// From `--mllp-listen` and the config's `[mllp]` and hl7v2 sources; none without an address.
    fn from_config(flag: Option<&str>, config: Option<&Config>) -> anyhow::Result<Option<Self>> {
        let address = flag
            .map(str::to_owned)
            .or_else(|| config.and_then(|c| c.mllp.listen.clone()));
        let feeds = feeds_from_config(config)?;
        if address.is_none() && feeds.all().is_empty() {
            return Ok(None);
        }
        if feeds.all().is_empty() {
            tracing::warn!(target: "tsunagi::mllp", "no hl7v2 sources are configured: every message will be rejected (AR)");
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

/// `POST /hl7v2` into the listen source's intake: the sender is the token's system client. The
/// hl7v2 sources also tell which lab a client posts FHIR results for (`POST /fhir`), as the
/// config file says (the directory's reporting is read per request).
pub(crate) struct HttpIntake {
    intake: Arc<dyn PushIntake>,
    labs: Vec<LabClients>,
}

/// A lab company's sender: its system clients and the facilities it reports for.
struct LabClients {
    clients: Vec<String>,
    scope: tsunagi_server::transaction_api::LabScope,
}

impl HttpIntake {
    fn new(intake: Arc<dyn PushIntake>, feeds: &Feeds) -> Self {
        let labs = feeds
            .all()
            .iter()
            .filter(|feed| !feed.reports_for.is_empty())
            .map(|feed| LabClients {
                clients: feed.clients.clone(),
                scope: tsunagi_server::transaction_api::LabScope {
                    lab: feed.facility.as_str().to_owned(),
                    reports_for: feed
                        .reports_for
                        .iter()
                        .map(|facility| facility.as_str().to_owned())
                        .collect(),
                },
            })
            .collect();
        Self { intake, labs }
    }
}

#[async_trait::async_trait]
impl tsunagi_server::hl7v2_api::MessageIntake for HttpIntake {
    async fn submit(&self, raw: Vec<u8>, client: String) -> Result<Option<Vec<u8>>, String> {
        let pushed = Pushed {
            transport: Transport::Http,
            raw,
            sender: Sender::Client(client),
        };
        self.intake
            .exchange(pushed)
            .await
            .map_err(|error| error.to_string())
    }

    fn lab_scope(&self, client: &str) -> Option<tsunagi_server::transaction_api::LabScope> {
        self.labs
            .iter()
            .find(|lab| lab.clients.iter().any(|id| id == client))
            .map(|lab| lab.scope.clone())
    }
}

/// The HL7 v2 links of `tsunagi serve`: feeds in over MLLP, notes and documents out.
pub(crate) struct LiveFeeds {
    pub(crate) mllp: Option<MllpSetup>,
    pub(crate) outbound: OutboundSetup,
}

/// Outbound delivery of `tsunagi serve`: each hospital's destination and the retry settings.
#[derive(Default)]
pub(crate) struct OutboundSetup {
    pub(crate) destinations: Vec<Arc<dyn Destination>>,
    pub(crate) options: DeliveryOptions,
}

impl OutboundSetup {
    /// From the config's `[[destination]]` (version 1: `[[outbound]]`) and `[outbox]`.
    pub(crate) fn from_config(config: Option<&Config>) -> Self {
        let mut setup = Self::default();
        let Some(config) = config else {
            return setup;
        };
        // `Config::parse` requires each route to name one way in.
        setup
            .destinations
            .extend(config.outbound.iter().filter_map(registry::destination));
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
        if let Some(value) = outbox.lease_seconds {
            setup.options.lease = seconds(value);
        }
        // Half a claim must outlast an attempt (a connect, the write and the ACK read, each up
        // to the timeout), with room to commit the outcome.
        let floor = setup.options.timeout.saturating_mul(6) + seconds(10);
        setup.options.lease = setup.options.lease.max(floor);
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
    /// The health listener's address.
    health: Option<String>,
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
        let health = flags
            .health_listen
            .clone()
            .or_else(|| server.and_then(|s| s.health_listen.clone()));
        Ok(Self {
            tls,
            mutual,
            health,
        })
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
    if let Some(config) = &config {
        settings.dicomweb.pacs = crate::ingest_dicomweb::proxied_pacs(&config.dicomweb)?;
    }
    crate::limits::dicomweb(server, &mut settings.dicomweb)?;
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
        if listeners.health.is_some() {
            tsunagi_server::listen::HEALTH_MAX_CONNECTIONS
        } else {
            0
        },
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
pub(crate) fn served_origin(scheme: &str, address: std::net::SocketAddr) -> String {
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

pub(crate) async fn serve_store(
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
    let health = match &listeners.health {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for health probes on {address}"))?,
        ),
        None => None,
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
        println!("serving {}", crate::open::without_password(db));
    }
    println!("FHIR base {base}");
    if let Some((listener, _)) = &mutual {
        println!(
            "mutual TLS for system clients on https://{}/fhir",
            listener.local_addr()?
        );
    }
    if let Some(listener) = &health {
        let address = listener.local_addr()?;
        println!(
            "health and metrics on http://{address}/health/ready and http://{address}/metrics (the API's listeners no longer serve /metrics)"
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
        // `POST /fhir` reads the directory per request; it joins only what the file says.
        let configured = feeds.clone();
        // Which facilities a lab reports for is the directory's record (`admin facility
        // reports-for`), joined to what the hl7v2 sources' reports_for says; read at start.
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
        let intake = registry::listen(feeds).start(&ListenContext {
            store: store.clone(),
            clock: Arc::new(SystemClock),
        });
        http_intake = Some(HttpIntake::new(intake.clone(), &configured));
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
                Arc::new(MllpIntake(intake)),
            ));
        }
        println!("HL7 v2 over HTTP: POST {base_for_hl7v2}/hl7v2 (system clients)");
    }
    // Notes and documents written through the API go to the hospitals' EHRs.
    if outbound.destinations.is_empty() {
        println!(
            "outbound delivery: no [[destination]] sections; notes to hospitals wait in `tsunagi admin outbox list`"
        );
    } else {
        println!(
            "delivering notes and documents to {} hospital(s)",
            outbound.destinations.len()
        );
    }
    let deliverer = Deliverer::new(
        store.clone(),
        outbound.destinations,
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
    if let Some(intake) = http_intake {
        state.set_intake(Arc::new(intake));
    }
    let (stop, stopping) = tokio::sync::watch::channel(());
    // Ctrl-C, or SIGTERM (systemd, Kubernetes): stop accepting, drain, then exit.
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match terminate.as_mut() {
                Some(terminate) => {
                    terminate.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminated => {}
        }
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
    let health = async {
        match health {
            Some(listener) => {
                tsunagi_server::serve_health(listener, state.clone(), stopped(stopping.clone()))
                    .await
            }
            None => Ok(()),
        }
    };
    tokio::try_join!(main, mutual, health).context("the HTTP server stopped")?;
    println!("stopped");
    Ok(())
}
