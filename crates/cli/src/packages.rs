//! Reads FHIR packages for `[server] profile_packages`: the StructureDefinitions the server
//! validates posted resources against (the JP Core package, say), from a package `.tgz` as
//! `npm pack` fetches it or from a folder of JSON files.

use std::{io::Read, path::Path};

use anyhow::{Context, bail};
use tsunagi_fhir::validate::Profiles;

/// Adds the resource profiles of every package or folder in `paths`; errors name the file.
pub(crate) fn load_profiles(paths: &[impl AsRef<Path>]) -> anyhow::Result<Profiles> {
    let mut profiles = Profiles::new();
    for path in paths {
        let path = path.as_ref();
        let before = profiles.len();
        if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .with_context(|| format!("{}: cannot list the folder", path.display()))?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|file| file.extension().is_some_and(|ext| ext == "json"))
                .collect();
            files.sort();
            for file in files {
                let text = std::fs::read(&file)
                    .with_context(|| format!("{}: cannot read", file.display()))?;
                add(&mut profiles, &text, &file.display().to_string())?;
            }
        } else {
            let file = std::fs::File::open(path)
                .with_context(|| format!("{}: cannot open the package", path.display()))?;
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
            let entries = archive
                .entries()
                .with_context(|| format!("{}: not a .tgz package", path.display()))?;
            for entry in entries {
                let mut entry =
                    entry.with_context(|| format!("{}: a damaged entry", path.display()))?;
                let name = entry.path()?.to_string_lossy().into_owned();
                let file_name = name.rsplit('/').next().unwrap_or_default();
                if !(file_name.starts_with("StructureDefinition-") && name.ends_with(".json")) {
                    continue;
                }
                let mut text = Vec::new();
                entry
                    .read_to_end(&mut text)
                    .with_context(|| format!("{}: {name}: cannot read", path.display()))?;
                add(&mut profiles, &text, &format!("{}: {name}", path.display()))?;
            }
        }
        if profiles.len() == before {
            bail!(
                "{}: no resource profiles (StructureDefinitions with a snapshot) found",
                path.display()
            );
        }
    }
    Ok(profiles)
}

fn add(profiles: &mut Profiles, text: &[u8], name: &str) -> anyhow::Result<()> {
    let value: serde_json::Value =
        serde_json::from_slice(text).with_context(|| format!("{name}: not JSON"))?;
    if value["resourceType"] == "StructureDefinition" {
        profiles
            .add(&value)
            .with_context(|| format!("{name}: cannot be used"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::load_profiles;

    #[test]
    fn a_folder_of_definitions_loads_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("StructureDefinition-x.json"),
            r#"{"resourceType": "StructureDefinition", "kind": "resource", "url": "http://x",
                "type": "Observation", "snapshot": {"element": [{"id": "Observation", "path": "Observation"}]}}"#,
        )
        .unwrap();
        let profiles = load_profiles(&[dir.path()]).unwrap();
        assert!(profiles.get("http://x").is_some());

        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        let error = format!("{:#}", load_profiles(&[dir.path()]).unwrap_err());
        assert!(error.contains("broken.json: not JSON"), "{error}");

        let empty = tempfile::tempdir().unwrap();
        let error = format!("{:#}", load_profiles(&[empty.path()]).unwrap_err());
        assert!(error.contains("no resource profiles"), "{error}");
        let error = format!(
            "{:#}",
            load_profiles(&[empty.path().join("missing.tgz")]).unwrap_err()
        );
        assert!(
            error.contains("missing.tgz: cannot open the package"),
            "{error}"
        );
    }
}
