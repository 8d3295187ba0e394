//! The README's first-hour walkthrough, run exactly as written: the block between the
//! `walkthrough` markers goes to bash, in order, on a fresh store in a temporary folder, with the
//! built `tsunagi` on PATH and the checkout's test keys where the README names them. What it
//! produced is then checked, so the README cannot drift from what the binary does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, process::Command};

use serde_json::Value;

fn walkthrough() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let begin = readme
        .find("<!-- walkthrough: begin -->")
        .expect("the README marks its walkthrough");
    let end = readme.find("<!-- walkthrough: end -->").unwrap();
    let block = &readme[begin..end];
    let code = block.split_once("```sh\n").unwrap().1;
    code.rsplit_once("```").unwrap().0.to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    let dir = tempfile::tempdir().unwrap();
    // Where the README names the checkout's test keys, the folder has them too.
    let keys = dir.path().join("tests/fixtures/keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/keys/lab-rs384.jwks.json"),
        keys.join("lab-rs384.jwks.json"),
    )
    .unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_tsunagi"));
    let path = format!(
        "{}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -euo pipefail\n{}", walkthrough());
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("PORT", free_port().to_string())
        .output()
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "the walkthrough failed:\n--- stdout\n{}\n--- stderr\n{}\n--- serve.log (last lines)\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(name)).unwrap()).unwrap()
    };
    let everything = read("everything.json");
    assert_eq!(everything["type"], "searchset");
    assert!(everything["total"].as_u64().unwrap() > 1, "{everything}");
    let note = read("note.json");
    assert_eq!(note["resourceType"], "Communication");
    assert_eq!(note["sender"]["reference"], "Organization/0610400014");
    let result = read("result.json");
    assert_eq!(result["type"], "transaction-response");
    assert_eq!(result["entry"][0]["response"]["status"], "201 Created");
    let audit = read("audit.json");
    assert!(
        audit["entry"].as_array().is_some_and(|e| !e.is_empty()),
        "{audit}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("facility 0610100010 registered as a hospital (荘内病院)"),
        "{stdout}"
    );
}
