//! What `deploy/` gives operators, checked as their tools check it: the systemd unit by
//! `systemd-analyze verify` (no warning) and `systemd-analyze security --offline=true`
//! (exposure at most 2.0, "OK"), with this build's binary as its `ExecStart`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn deploy(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(deploy("systemd/tsunagi.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/tsunagi serve --config /etc/tsunagi/tsunagi.toml")
    );
    // Checked with the binary this build made where the unit names the installed one.
    let dir = tempfile::tempdir().unwrap();
    let checked = dir.path().join("tsunagi.service");
    std::fs::write(
        &checked,
        unit.replace("/usr/local/bin/tsunagi", env!("CARGO_BIN_EXE_tsunagi")),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&checked)
        .output()
        .expect("systemd-analyze (Debian: systemd) checks the unit");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&checked)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout).into_owned()
        + &String::from_utf8_lossy(&security.stderr);
    let exposure: f64 = report
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for tsunagi.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {report}"));
    assert!(exposure <= 2.0, "exposure {exposure}: {report}");
}
