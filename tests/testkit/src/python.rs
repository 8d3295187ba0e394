//! The Python `dicomweb-client` package (a stock DICOMweb client, with pydicom), for tests that
//! check the gateway works with clients as their users have them: installed with pip into a
//! virtual environment in the temporary folder when missing, once per machine, under a lock.

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The virtual environment's folder.
fn venv() -> PathBuf {
    std::env::temp_dir().join("tsunagi-testkit-dicomweb-client")
}

/// Whether `python` can import the package.
fn importable(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", "import dicomweb_client, pydicom"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
}

/// The Python interpreter that has `dicomweb-client`, installing it first when needed.
pub fn dicomweb_client() -> io::Result<PathBuf> {
    let python = venv().join("bin").join("python");
    if importable(&python) {
        return Ok(python);
    }
    let lock = fs::File::create(std::env::temp_dir().join("tsunagi-dicomweb-client.lock"))?;
    lock.lock()?;
    if importable(&python) {
        return Ok(python);
    }
    let created = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv())
        .stdout(Stdio::null())
        .status()?;
    let installed = created.success()
        && Command::new(&python)
            .args(["-m", "pip", "install", "-q", "dicomweb-client"])
            .stdout(Stdio::null())
            .status()?
            .success();
    if !installed || !importable(&python) {
        return Err(io::Error::other(
            "the Python package dicomweb-client could not be installed: python3 with venv and \
             pip, and access to PyPI, are needed",
        ));
    }
    Ok(python)
}
