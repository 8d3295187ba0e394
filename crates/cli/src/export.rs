//! `tsunagi export ndjson` (every current resource, one file per type) and `tsunagi generate
//! region` (the synthetic region).

use std::{collections::BTreeMap, io::Write, path::Path, time::Instant};

use anyhow::Context;

use crate::open::open_store;

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
pub(crate) fn generate_region(
    out: &Path,
    patients: usize,
    seed: u64,
    extended: bool,
) -> anyhow::Result<()> {
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
    if extended {
        let mml = tsunagi_synth::generate_mml(out, patients, seed)
            .with_context(|| format!("cannot generate into {}", out.display()))?;
        println!(
            "MML export: {} {}  {} files  {}",
            mml.code,
            mml.name,
            mml.files,
            mml.root.display()
        );
        let documents = tsunagi_synth::generate_extended(out, patients, seed)
            .with_context(|| format!("cannot generate into {}", out.display()))?;
        println!(
            "extended storage: {} documents, {:.1} MB",
            documents.files,
            documents.bytes as f64 / 1e6
        );
        for facility in &documents.facilities {
            println!(
                "  {} {}  {} documents  {}",
                facility.code,
                facility.name,
                facility.files,
                facility.root.display()
            );
        }
    }
    Ok(())
}
