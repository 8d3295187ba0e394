//! Every adapter this build knows, in one visible list: the kinds a `[[source]]` or a
//! `[[destination]]` section may name, and how each is built. Adding an adapter means one crate,
//! one line in a list, one arm in its builder and a config section (`crate::config`).

use std::sync::Arc;

use tsunagi_adapter::{PullAdapter, listen::ListenAdapter, outbound::Destination};
use tsunagi_adapter_dicomweb::{DicomWebAdapter, DicomWebConfig};
use tsunagi_adapter_hl7v2::{Feeds, Hl7v2Listener, IntakeOptions};
use tsunagi_adapter_mml::{MmlAdapter, MmlConfig};
use tsunagi_adapter_outbound_folder::FolderDestination;
use tsunagi_adapter_outbound_mllp::MllpDestination;
use tsunagi_adapter_ssmix2::{Ssmix2Adapter, Ssmix2Config};
use tsunagi_adapter_ssmix2_extended::{ExtendedAdapter, ExtendedConfig};

use crate::config::OutboundRoute;

/// Source kinds, as `[[source]] kind` names them: `ssmix2`, `ssmix2-extended`, `mml` and
/// `dicomweb` are pulled on a schedule ([`pull`]); `hl7v2` is a sender pushing over MLLP or
/// HTTP, received by `tsunagi serve` ([`listen`]).
pub(crate) const SOURCE_KINDS: &[&str] = &["ssmix2", "ssmix2-extended", "mml", "dicomweb", "hl7v2"];

/// Destination kinds, as `[[destination]] kind` names them ([`destination`]).
pub(crate) const DESTINATION_KINDS: &[&str] = &["mllp", "folder"];

/// A source read on a schedule.
pub(crate) enum Source {
    /// SS-MIX2 standardized storage.
    Ssmix2(Ssmix2Config),
    /// SS-MIX2 extended storage (documents).
    Ssmix2Extended(ExtendedConfig),
    /// A hospital EHR's MML 4.0 export folder (findings, procedures, referrals).
    Mml(MmlConfig),
    /// A hospital's PACS over DICOMweb (studies as ImagingStudy).
    DicomWeb(DicomWebConfig),
}

/// Builds the adapter for a scheduled source.
pub(crate) fn pull(source: Source) -> Arc<dyn PullAdapter> {
    match source {
        Source::Ssmix2(config) => Arc::new(Ssmix2Adapter::new(config)),
        Source::Ssmix2Extended(config) => Arc::new(ExtendedAdapter::new(config)),
        Source::Mml(config) => Arc::new(MmlAdapter::new(config)),
        Source::DicomWeb(config) => Arc::new(DicomWebAdapter::new(config)),
    }
}

/// Builds the listen source of the `hl7v2` sections: every sender they configure shares one
/// intake, fed by the MLLP listener and `POST /hl7v2` alike.
pub(crate) fn listen(feeds: Feeds) -> Arc<dyn ListenAdapter> {
    Arc::new(Hl7v2Listener::new(
        Arc::new(feeds),
        IntakeOptions::default(),
    ))
}

/// Builds the destination of one facility.
pub(crate) fn destination(route: &OutboundRoute) -> Option<Arc<dyn Destination>> {
    match (&route.mllp, &route.folder) {
        (Some(address), _) => Some(Arc::new(MllpDestination::new(&route.facility, address))),
        (None, Some(folder)) => Some(Arc::new(FolderDestination::new(&route.facility, folder))),
        (None, None) => None,
    }
}
