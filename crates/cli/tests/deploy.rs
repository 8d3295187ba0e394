//! What `deploy/` gives operators, checked as their tools check it: the systemd unit by
//! `systemd-analyze verify` (no warning) and `systemd-analyze security --offline=true`
//! (exposure at most 2.0, "OK"), with this build's binary as its `ExecStart`; the Kubernetes
//! manifests against the Kubernetes schemas (`kubernetes-validate --strict`); the container
//! file by the rules its header states (no container engine runs on these machines).

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

#[test]
fn the_kubernetes_manifests_match_the_schemas() {
    let python = tsunagi_testkit::python::kubernetes_validate().unwrap();
    for manifest in ["kubernetes/tsunagi.yaml", "kubernetes/postgres.yaml"] {
        let checked = Command::new(&python)
            .args(["-m", "kubernetes_validate", "--strict", "-k", "1.30.0"])
            .arg(deploy(manifest))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&checked.stdout).into_owned()
            + &String::from_utf8_lossy(&checked.stderr);
        assert!(checked.status.success(), "{manifest}: {said}");
        assert!(
            !said.contains("ERROR") && !said.contains("WARN"),
            "{manifest}: {said}"
        );
    }
    // The probes are the server's health endpoints, on its health listener.
    let gateway = std::fs::read_to_string(deploy("kubernetes/tsunagi.yaml")).unwrap();
    for probe in [
        "path: /health/ready, port: health",
        "path: /health/live, port: health",
        "{name: health, containerPort: 9090}",
        "kind: PodDisruptionBudget",
        // The health port (and /metrics) only from the monitoring namespace.
        "kind: NetworkPolicy",
        "- {port: health, protocol: TCP}",
        "matchLabels: {kubernetes.io/metadata.name: monitoring}",
    ] {
        assert!(gateway.contains(probe), "{probe}");
    }
    let database = std::fs::read_to_string(deploy("kubernetes/postgres.yaml")).unwrap();
    assert!(database.contains("kind: NetworkPolicy"), "{database}");
    // The ConfigMap's tsunagi.toml is one the server reads (`config check`).
    let toml: String = gateway
        .split("  tsunagi.toml: |\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|line| line.starts_with("    ") || line.is_empty())
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    assert!(toml.contains("health_listen = \"0.0.0.0:9090\""), "{toml}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tsunagi.toml");
    std::fs::write(&file, &toml).unwrap();
    let checked = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{toml}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn the_container_file_builds_in_stages_and_runs_unprivileged() {
    let text = std::fs::read_to_string(deploy("container/Containerfile")).unwrap();
    // Instructions, continuation lines joined, comments dropped.
    let joined = text.replace("\\\n", " ");
    let instructions: Vec<(&str, &str)> = joined
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once(' '))
        .collect();
    let stages: Vec<&str> = instructions
        .iter()
        .filter(|(op, _)| *op == "FROM")
        .map(|(_, image)| *image)
        .collect();
    assert!(
        stages.len() >= 2,
        "a build stage and a run stage: {stages:?}"
    );
    for image in &stages {
        let name = image.split_whitespace().next().unwrap();
        assert!(
            name.contains(':') && !name.ends_with(":latest"),
            "{name}: pin the tag"
        );
    }
    let last = instructions
        .iter()
        .rposition(|(op, _)| *op == "FROM")
        .unwrap();
    let run_stage = &instructions[last..];
    let user = run_stage
        .iter()
        .find(|(op, _)| *op == "USER")
        .map(|(_, who)| *who)
        .expect("the run stage names a USER");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "{user}"
    );
    for op in ["HEALTHCHECK", "ENTRYPOINT", "STOPSIGNAL", "VOLUME"] {
        assert!(
            run_stage.iter().any(|(o, _)| *o == op),
            "the run stage lacks {op}"
        );
    }
    let health = run_stage
        .iter()
        .find(|(op, _)| *op == "HEALTHCHECK")
        .unwrap()
        .1;
    assert!(
        health.contains("\"health\"") && health.contains("/health/ready"),
        "{health}"
    );
    let entry = run_stage
        .iter()
        .find(|(op, _)| *op == "ENTRYPOINT")
        .unwrap()
        .1;
    assert!(
        entry.trim_start().starts_with('['),
        "exec form, so SIGTERM reaches the server"
    );
    assert!(
        !instructions
            .iter()
            .any(|(op, arg)| *op == "ADD" && arg.contains("://")),
        "nothing fetched by ADD"
    );
    // What the health check runs is this build's command.
    let help = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args(["health", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
}
