//! Python packages tests use as their users have them — `dicomweb-client` (a stock DICOMweb
//! client, with pydicom), `kubernetes-validate` (the Kubernetes schemas) — installed with pip
//! into one virtual environment in the temporary folder when missing, once per machine, under a
//! lock.

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The virtual environment's folder.
fn venv() -> PathBuf {
    std::env::temp_dir().join("tsunagi-testkit-python")
}

/// Whether `python` can import `modules` (comma-separated).
fn importable(python: &Path, modules: &str) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", &format!("import {modules}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
}

/// The Python interpreter that can import `modules`, installing `package` first when needed.
pub fn with_package(modules: &str, package: &str) -> io::Result<PathBuf> {
    let python = venv().join("bin").join("python");
    if importable(&python, modules) {
        return Ok(python);
    }
    let lock = fs::File::create(std::env::temp_dir().join("tsunagi-testkit-python.lock"))?;
    lock.lock()?;
    if importable(&python, modules) {
        return Ok(python);
    }
    if !python.exists() {
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv())
            .stdout(Stdio::null())
            .status()?;
        if !created.success() {
            return Err(io::Error::other(
                "python3 -m venv failed: python3 with venv is needed",
            ));
        }
    }
    let installed = Command::new(&python)
        .args(["-m", "pip", "install", "-q", package])
        .stdout(Stdio::null())
        .status()?
        .success();
    if !installed || !importable(&python, modules) {
        return Err(io::Error::other(format!(
            "the Python package {package} could not be installed: python3 with venv and pip, \
             and access to PyPI, are needed"
        )));
    }
    Ok(python)
}

/// The Python interpreter that has `dicomweb-client`.
pub fn dicomweb_client() -> io::Result<PathBuf> {
    with_package("dicomweb_client, pydicom", "dicomweb-client")
}

/// The Python interpreter that has `kubernetes-validate` (run it as `python -m
/// kubernetes_validate`).
pub fn kubernetes_validate() -> io::Result<PathBuf> {
    with_package("kubernetes_validate", "kubernetes-validate")
}
