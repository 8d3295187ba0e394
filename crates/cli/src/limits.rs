//! The limits of `tsunagi serve`'s listeners from `tsunagi.toml` (`[server]`, `[mllp]`), and
//! their connection caps fitted under the process's open-file limit, so clients can never take
//! the descriptors the store, the audit journal and outbound delivery need (issue 17 §2).

use std::time::Duration;

use anyhow::bail;
use tsunagi_server::listen::HttpLimits;

use crate::config::{MllpConfig, ServerConfig};

/// The longest timeout a setting may ask for: a day.
const MAX_SECONDS: u64 = 86_400;

/// A timeout setting, from 1 second to a day.
fn seconds(key: &str, value: u64) -> anyhow::Result<Duration> {
    if !(1..=MAX_SECONDS).contains(&value) {
        bail!("{key} = {value}: a timeout is 1 to {MAX_SECONDS} seconds");
    }
    Ok(Duration::from_secs(value))
}

/// The API's limits: the config's, else the defaults.
pub(crate) fn http(server: Option<&ServerConfig>) -> anyhow::Result<HttpLimits> {
    let mut limits = HttpLimits::default();
    let Some(server) = server else {
        return Ok(limits);
    };
    if let Some(value) = server.max_connections {
        limits.max_connections = value;
    }
    if let Some(value) = server.max_connections_per_peer {
        limits.max_connections_per_peer = value;
    }
    if let Some(value) = server.header_read_timeout_seconds {
        limits.header_read_timeout = seconds("[server] header_read_timeout_seconds", value)?;
    }
    if let Some(value) = server.keep_alive_timeout_seconds {
        limits.keep_alive_timeout = seconds("[server] keep_alive_timeout_seconds", value)?;
    }
    if let Some(value) = server.body_read_timeout_seconds {
        limits.body_read_timeout = seconds("[server] body_read_timeout_seconds", value)?;
    }
    if let Some(value) = server.send_timeout_seconds {
        limits.send_timeout = seconds("[server] send_timeout_seconds", value)?;
    }
    if let Some(value) = server.max_body_bytes {
        limits.max_body_bytes = value;
    }
    Ok(limits)
}

/// The DICOMweb proxy's limits from `[server]`, over `settings`' defaults.
pub(crate) fn dicomweb(
    server: Option<&ServerConfig>,
    settings: &mut tsunagi_server::dicomweb::DicomWebSettings,
) -> anyhow::Result<()> {
    let Some(server) = server else {
        return Ok(());
    };
    if let Some(bytes) = server.dicomweb_max_answer_bytes {
        if bytes == 0 {
            bail!("[server] dicomweb_max_answer_bytes = 0: an answer of no bytes relays nothing");
        }
        settings.max_answer_bytes = bytes;
    }
    if let Some(value) = server.dicomweb_max_answer_seconds {
        settings.max_answer_time = seconds("[server] dicomweb_max_answer_seconds", value)?;
    }
    if let Some(count) = server.dicomweb_max_in_flight {
        settings.max_in_flight = count;
    }
    if let Some(count) = server.dicomweb_max_per_caller {
        settings.max_per_caller = count;
    }
    if settings.max_in_flight == 0 || settings.max_per_caller == 0 {
        bail!("[server] dicomweb_max_in_flight and dicomweb_max_per_caller must be at least 1");
    }
    if settings.max_per_caller > settings.max_in_flight {
        bail!(
            "[server] dicomweb_max_per_caller = {} is more than dicomweb_max_in_flight = {}: one caller could take the PACS",
            settings.max_per_caller,
            settings.max_in_flight
        );
    }
    Ok(())
}

/// The MLLP listener's limits: the config's, else the defaults.
pub(crate) fn mllp(mllp: Option<&MllpConfig>) -> anyhow::Result<tsunagi_mllp::ServerOptions> {
    let mut options = tsunagi_mllp::ServerOptions::default();
    let Some(mllp) = mllp else {
        return Ok(options);
    };
    if let Some(bytes) = mllp.max_frame_bytes {
        options.max_frame = bytes;
    }
    if let Some(connections) = mllp.max_connections {
        options.max_connections = connections;
    }
    if let Some(connections) = mllp.max_connections_per_peer {
        options.max_connections_per_peer = connections;
    }
    if let Some(value) = mllp.idle_timeout_seconds {
        options.idle_timeout = seconds("[mllp] idle_timeout_seconds", value)?;
    }
    if let Some(value) = mllp.frame_timeout_seconds {
        options.frame_timeout = seconds("[mllp] frame_timeout_seconds", value)?;
    }
    Ok(options)
}

/// Raises the open-file limit to its hard maximum and fits the listeners' caps under it (the
/// API's cap holds for each of its `http_listeners`), keeping
/// [`tsunagi_net::descriptors::RESERVE`] for the gateway itself and `fixed` for listeners whose
/// cap is not lowered (the health listener's). Says what it had to lower.
pub(crate) fn fit_descriptors(
    http: &mut HttpLimits,
    http_listeners: usize,
    fixed: usize,
    mllp: Option<&mut tsunagi_mllp::ServerOptions>,
) -> anyhow::Result<()> {
    let Some(raised) = tsunagi_net::descriptors::raise_limit() else {
        return Ok(());
    };
    let limit = raised.saturating_sub(fixed as u64);
    let listeners = http_listeners.max(1);
    let mut http_total = http.max_connections.saturating_mul(listeners);
    let mut mllp_cap = mllp.as_ref().map_or(0, |options| options.max_connections);
    let fitted = if mllp.is_some() {
        tsunagi_net::descriptors::fit(limit, &mut [&mut http_total, &mut mllp_cap])
    } else {
        tsunagi_net::descriptors::fit(limit, &mut [&mut http_total])
    };
    match fitted {
        Err(needed) => bail!(
            "the open-file limit is {raised}; tsunagi serve needs at least {} (raise it: ulimit -n, or LimitNOFILE= in the systemd unit)",
            needed.saturating_add(fixed as u64)
        ),
        Ok(false) => Ok(()),
        Ok(true) => {
            http.max_connections = http_total / listeners;
            http.max_connections_per_peer = http.max_connections_per_peer.min(http.max_connections);
            if let Some(options) = mllp {
                options.max_connections = mllp_cap;
                options.max_connections_per_peer = options.max_connections_per_peer.min(mllp_cap);
            }
            tracing::warn!(
                target: "tsunagi::net",
                open_file_limit = raised,
                fixed_connections = fixed,
                reserved = tsunagi_net::descriptors::RESERVE,
                http_max_connections = http.max_connections,
                mllp_max_connections = mllp_cap,
                "connection caps lowered to fit the open-file limit"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_dicomweb_proxys_limits_come_from_the_server_section_and_are_checked() {
        let server = |toml: &str| -> ServerConfig { toml::from_str(toml).unwrap() };
        let mut settings = tsunagi_server::dicomweb::DicomWebSettings::default();
        dicomweb(
            Some(&server(
                "dicomweb_max_answer_bytes = 1048576\ndicomweb_max_answer_seconds = 30\n\
                 dicomweb_max_in_flight = 16\ndicomweb_max_per_caller = 2",
            )),
            &mut settings,
        )
        .unwrap();
        assert_eq!(settings.max_answer_bytes, 1_048_576);
        assert_eq!(settings.max_answer_time, Duration::from_secs(30));
        assert_eq!((settings.max_in_flight, settings.max_per_caller), (16, 2));
        for (bad, said) in [
            ("dicomweb_max_answer_bytes = 0", "no bytes"),
            ("dicomweb_max_answer_seconds = 0", "1 to 86400"),
            ("dicomweb_max_in_flight = 0", "at least 1"),
            (
                "dicomweb_max_in_flight = 4\ndicomweb_max_per_caller = 9",
                "could take the PACS",
            ),
        ] {
            let mut settings = tsunagi_server::dicomweb::DicomWebSettings::default();
            let error = dicomweb(Some(&server(bad)), &mut settings).unwrap_err();
            assert!(error.to_string().contains(said), "{bad}: {error}");
        }
        // The example configuration states the defaults.
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/tsunagi.example.toml");
        let example = crate::config::Config::parse(&std::fs::read_to_string(example).unwrap())
            .unwrap()
            .server;
        let defaults = tsunagi_server::dicomweb::DicomWebSettings::default();
        assert_eq!(
            example.dicomweb_max_answer_bytes,
            Some(defaults.max_answer_bytes)
        );
        assert_eq!(
            example.dicomweb_max_answer_seconds,
            Some(defaults.max_answer_time.as_secs())
        );
        assert_eq!(example.dicomweb_max_in_flight, Some(defaults.max_in_flight));
        assert_eq!(
            example.dicomweb_max_per_caller,
            Some(defaults.max_per_caller)
        );
    }
}
