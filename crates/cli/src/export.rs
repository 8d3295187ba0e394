//! `tsunagi export ndjson` (every current resource, one file per type; a Binary with its bytes
//! as `data`) and `tsunagi generate region` (the synthetic region).

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
    // Binaries are written last, each with its bytes read then (one at a time).
    let mut binaries: Vec<serde_json::Value> = Vec::new();
    store
        .for_each_current(&mut |resource| {
            let store_error = |error: std::io::Error| {
                tsunagi_store::StoreError::Invalid(format!("cannot write the export: {error}"))
            };
            if resource.resource_type == "Binary" {
                binaries.extend(resource.to_json()?);
                return Ok(());
            }
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
    if !binaries.is_empty() {
        let path = out.join("Binary.ndjson");
        let mut writer = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        for mut binary in binaries {
            with_data(store.as_ref(), &mut binary).await?;
            serde_json::to_writer(&mut writer, &binary)?;
            writer.write_all(b"\n")?;
            *counts.entry("Binary".to_owned()).or_default() += 1;
        }
        writer.flush()?;
    }
    let total: u64 = counts.values().sum();
    println!("exported {total} resources to {}", out.display());
    for (resource_type, count) in counts {
        println!("  {resource_type}.ndjson  {count}");
    }
    Ok(())
}

/// A Binary whose bytes are stored apart (tagged `urn:tsunagi:sha256`) gets them as `data`,
/// as a FHIR bulk export carries them; missing bytes are an error naming the Binary. (A tag
/// that is not a SHA-256 names nothing: the Binary is written as stored.)
async fn with_data(
    store: &dyn tsunagi_store::Store,
    binary: &mut serde_json::Value,
) -> anyhow::Result<()> {
    let Some(sha) = tsunagi_store::stored_bytes_of(binary) else {
        return Ok(());
    };
    let id = binary["id"].as_str().unwrap_or_default().to_owned();
    let bytes = store
        .blob(&sha)
        .await?
        .with_context(|| format!("Binary/{id}: its stored bytes are missing"))?;
    binary["data"] = serde_json::Value::String(tsunagi_core::base64::encode(&bytes));
    Ok(())
}

/// `tsunagi generate region`.
pub(crate) fn generate_region(
    out: &Path,
    patients: usize,
    seed: u64,
    extended: bool,
    images: bool,
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
    if images {
        let pacs = tsunagi_synth::generate_images(out, patients, seed)
            .with_context(|| format!("cannot generate into {}", out.display()))?;
        println!(
            "PACS: {} DICOM files, {:.1} MB",
            pacs.files,
            pacs.bytes as f64 / 1e6
        );
        for (code, studies) in &pacs.facilities {
            println!(
                "  {code}  {} studies  {}",
                studies.len(),
                out.join("pacs").join(code).display()
            );
        }
    }
    Ok(())
}
