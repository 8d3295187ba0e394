//! Embeds the code tables of `mappings/` into the binary, so `tsunagi` works from any folder.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

fn collect(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, base, out);
        } else if path.extension().is_some_and(|ext| ext == "csv") {
            let relative = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            out.push((relative, path));
        }
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mappings = manifest.join("../../mappings");
    println!("cargo:rerun-if-changed={}", mappings.display());
    let mut files = Vec::new();
    collect(&mappings, &mappings, &mut files);
    let mut source = String::from(
        "/// The code tables of `mappings/`, embedded at build time: (relative path, contents).\npub(crate) const EMBEDDED: &[(&str, &str)] = &[\n",
    );
    for (relative, path) in files {
        println!("cargo:rerun-if-changed={}", path.display());
        source.push_str(&format!(
            "    ({relative:?}, include_str!({:?})),\n",
            path.canonicalize().unwrap_or(path.clone())
        ));
    }
    source.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_default()).join("mappings.rs");
    if let Err(error) = fs::write(&out, source) {
        println!("cargo:warning=cannot write {}: {error}", out.display());
    }
}
