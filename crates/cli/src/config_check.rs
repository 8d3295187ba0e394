//! `tsunagi config check`: what a `tsunagi.toml` configures, and a version-1 file's rewrite.

use std::path::Path;

use anyhow::Context;

use crate::{config::Config, ingest::ssmix2_config, registry};

/// `tsunagi config check`: parses the file, names what it configures, and for a version-1 file
/// says what to change (it is still read as it is).
pub(crate) fn check_config(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    // What `run` and `serve` build from it, built now: mapping tables, address ranges.
    for source in &config.ssmix2 {
        ssmix2_config(
            &source.facility,
            source.name.clone(),
            source.roots.clone(),
            source.mappings.as_deref(),
            false,
        )
        .with_context(|| format!("{}: ssmix2 source {}", path.display(), source.facility))?;
    }
    crate::serve::feeds_from_config(Some(&config))
        .with_context(|| format!("{}: hl7v2 sources", path.display()))?;
    println!(
        "{}: config version {}, valid",
        path.display(),
        config.version
    );
    let mut kinds: Vec<String> = Vec::new();
    if !config.ssmix2.is_empty() {
        kinds.push(format!("{} ssmix2", config.ssmix2.len()));
    }
    if !config.extended.is_empty() {
        kinds.push(format!("{} ssmix2-extended", config.extended.len()));
    }
    if !config.dicomweb.is_empty() {
        kinds.push(format!("{} dicomweb", config.dicomweb.len()));
    }
    if !config.mml.is_empty() {
        kinds.push(format!("{} mml", config.mml.len()));
    }
    if !config.hl7v2.is_empty() {
        kinds.push(format!("{} hl7v2", config.hl7v2.len()));
    }
    println!(
        "sources: {} (kinds this build knows: {})",
        if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds.join(", ")
        },
        registry::SOURCE_KINDS.join(", ")
    );
    println!(
        "destinations: {} (kinds this build knows: {})",
        config.outbound.len(),
        registry::DESTINATION_KINDS.join(", ")
    );
    let notes = config.upgrade_notes();
    if !notes.is_empty() {
        println!("version 1 is still read; to write it as version 2:");
        for note in notes {
            println!("  - {note}");
        }
    }
    Ok(())
}
