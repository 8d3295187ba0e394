//! Workspace hygiene that `cargo test` enforces: every Rust source file starts with a `//!` line
//! saying why it exists, no fixture looks like it holds real data, and every crates.io
//! dependency of the workspace carries a one-line reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use tsunagi_e2e::workspace;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_says_why_it_exists() {
    let mut files = Vec::new();
    for top in ["crates", "adapters", "tests"] {
        rust_files(&workspace().join(top), &mut files);
    }
    assert!(files.len() > 30);
    let missing: Vec<String> = files
        .iter()
        .filter(|path| !std::fs::read_to_string(path).unwrap().starts_with("//!"))
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line: {missing:#?}"
    );
}

#[test]
fn every_external_dependency_has_a_reason() {
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    let section = manifest
        .split("[workspace.dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    let chosen = [
        "encoding_rs",
        "serde_json",
        "sqlx",
        "tokio",
        "fhir-sdk",
        "hl7-parser",
        "cron",
        "axum",
        "quick-xml",
    ];
    let mut previous = "";
    for line in section.lines() {
        let name = line.split('=').next().unwrap().trim();
        if !line.starts_with(char::is_alphabetic)
            || name.starts_with("tsunagi-")
            || chosen.contains(&name)
        {
            previous = line;
            continue;
        }
        assert!(
            previous.trim_start().starts_with('#'),
            "dependency {name} has no reason comment above it"
        );
        previous = line;
    }
}

/// The HTTP layer has no way to read without a principal: it never names the store's
/// unrestricted access (security-reliability S2; docs/specs/access-control.md "fail-closed").
/// The one exception is the benchmark's baseline router, compiled only with the
/// `bench-baseline` feature and named only by the search benchmark.
#[test]
fn the_api_never_reads_unrestricted() {
    let server = workspace().join("crates/server/src");
    let mut files = Vec::new();
    rust_files(&server, &mut files);
    assert!(files.len() > 3, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if file == server.join("baseline.rs") {
            continue;
        }
        assert!(
            !text.contains("Unrestricted"),
            "{} names Access::Unrestricted",
            file.display()
        );
    }
    let lib = std::fs::read_to_string(server.join("lib.rs")).unwrap();
    assert!(lib.contains("#[cfg(feature = \"bench-baseline\")]\npub mod baseline;"));
    let mut everywhere = Vec::new();
    for dir in ["crates", "adapters", "tests"] {
        rust_files(&workspace().join(dir), &mut everywhere);
    }
    for file in everywhere {
        let text = std::fs::read_to_string(&file).unwrap();
        let allowed = file.ends_with("crates/cli/src/bench_search.rs")
            || file.ends_with("tests/e2e/tests/tidy.rs")
            || file.starts_with(&server);
        assert!(
            allowed || !text.contains("baseline::"),
            "{} uses the benchmark's open router",
            file.display()
        );
    }
}
