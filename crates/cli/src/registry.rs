//! Every adapter this build knows, in one visible list. Adding an adapter means one crate, one
//! line in `KINDS`, one arm in `build`, and a config section.

use std::sync::Arc;

use tsunagi_adapter::PullAdapter;
use tsunagi_adapter_ssmix2::{Ssmix2Adapter, Ssmix2Config};

/// Adapter kinds, as named in `tsunagi.toml` and on the command line.
pub(crate) const KINDS: &[&str] = &["ssmix2"];

/// A configured source.
pub(crate) enum Source {
    /// SS-MIX2 standardized storage.
    Ssmix2(Ssmix2Config),
}

/// Builds the adapter for a configured source.
pub(crate) fn build(source: Source) -> Arc<dyn PullAdapter> {
    match source {
        Source::Ssmix2(config) => Arc::new(Ssmix2Adapter::new(config)),
    }
}
