//! A real Orthanc with its DICOMweb plugin, for tests: Debian's `orthanc` and `orthanc-dicomweb`
//! (installed with apt-get when missing, once per machine, under a lock), started on a free
//! loopback port with its storage and index in a temporary folder, and killed when dropped.
//!
//! Each test starts its own: separate stores, no state shared between tests, nothing left
//! running. Startup takes about a second.

use std::{
    fs,
    io::{self, Read},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::http;

/// Where Debian installs the server and the plugin.
const BINARY: &str = "/usr/sbin/Orthanc";
const PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

/// The DICOMweb root the plugin serves.
pub const DICOMWEB_ROOT: &str = "/dicom-web";

/// A running Orthanc.
#[derive(Debug)]
pub struct Orthanc {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// Whether Orthanc and its DICOMweb plugin are installed (nothing is installed to find out).
pub fn installed() -> bool {
    Path::new(BINARY).exists() && Path::new(PLUGIN).exists()
}

/// Installs Orthanc and its DICOMweb plugin from Debian's packages when they are missing.
pub fn ensure_installed() -> io::Result<()> {
    if installed() {
        return Ok(());
    }
    // One installer at a time across the test processes of a run.
    let lock = fs::File::create(std::env::temp_dir().join("tsunagi-orthanc-install.lock"))?;
    lock.lock()?;
    if Path::new(BINARY).exists() && Path::new(PLUGIN).exists() {
        return Ok(());
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "orthanc", "orthanc-dicomweb"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
    };
    let mut status = install()?;
    if !status.success() {
        Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null())
            .status()?;
        status = install()?;
    }
    if !status.success() || !Path::new(PLUGIN).exists() {
        return Err(io::Error::other(
            "Orthanc is not installed and apt-get could not install it: run \
             `apt-get install orthanc orthanc-dicomweb` (Debian) as root",
        ));
    }
    Ok(())
}

impl Orthanc {
    /// Starts one (installing it first if needed) and waits until it answers. A port taken by
    /// another process between its choice and Orthanc's bind (tests run in parallel) is met by
    /// starting again on other ports, a few times.
    pub fn start() -> io::Result<Self> {
        ensure_installed()?;
        let mut attempt = 0;
        loop {
            match Self::start_once() {
                Err(error) if attempt < 4 && error.kind() == io::ErrorKind::AddrInUse => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn start_once() -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage)?;
        // Both ports held until both are chosen (never the same one twice).
        let (http, dicom) = (
            TcpListener::bind("127.0.0.1:0")?,
            TcpListener::bind("127.0.0.1:0")?,
        );
        let (http_port, dicom_port) = (http.local_addr()?.port(), dicom.local_addr()?.port());
        drop((http, dicom));
        // A name of its own: the instance answering is this one, not another test's that took
        // the port first.
        let name = format!("TSUNAGI-TEST-{http_port}-{}", std::process::id());
        let config = serde_json::json!({
            "Name": name,
            "HttpPort": http_port,
            "DicomPort": dicom_port,
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "HttpCompressionEnabled": false,
            "Plugins": [PLUGIN],
            "DicomWeb": {"Enable": true, "Root": format!("{DICOMWEB_ROOT}/")}
        });
        let config_path = dir.path().join("orthanc.json");
        fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let log = fs::File::create(dir.path().join("orthanc.log"))?;
        let child = Command::new(BINARY)
            .arg(&config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()?;
        let mut orthanc = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], http_port)),
            dir,
        };
        let started = Instant::now();
        loop {
            if let Ok(reply) = http::get(orthanc.addr, "/system", &[])
                && reply.status == 200
            {
                let answering = reply
                    .json()
                    .ok()
                    .and_then(|system| system["Name"].as_str().map(str::to_owned));
                if answering.as_deref() == Some(name.as_str()) {
                    return Ok(orthanc);
                }
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("port {http_port} is another server's ({answering:?})"),
                ));
            }
            if let Ok(Some(status)) = orthanc.child.try_wait() {
                let log = orthanc.log();
                let kind = if log.contains("already in use") {
                    io::ErrorKind::AddrInUse
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(
                    kind,
                    format!("Orthanc exited ({status}): {log}"),
                ));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(io::Error::other(format!(
                    "Orthanc did not answer within 30 s: {}",
                    orthanc.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its HTTP address on loopback.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of its DICOMweb services (QIDO-RS and WADO-RS).
    pub fn dicomweb_url(&self) -> String {
        format!("http://{}{DICOMWEB_ROOT}", self.addr)
    }

    /// The end of its log (for failures).
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(self.dir.path().join("orthanc.log")) {
            let _ = file.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    /// Stores one Part 10 file (`POST /instances`).
    pub fn store(&self, bytes: &[u8]) -> io::Result<()> {
        let reply = http::request(
            self.addr,
            "POST",
            "/instances",
            &[("Content-Type", "application/dicom")],
            bytes,
        )?;
        let status = reply.json().ok().and_then(|json| {
            json.get("Status")
                .and_then(|status| status.as_str())
                .map(str::to_owned)
        });
        match (reply.status, status.as_deref()) {
            (200, Some("Success" | "AlreadyStored")) => Ok(()),
            _ => Err(io::Error::other(format!(
                "Orthanc refused an instance ({}): {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ))),
        }
    }

    /// Stores every `*.dcm` file under `folder`: how many.
    pub fn store_folder(&self, folder: &Path) -> io::Result<usize> {
        let mut stored = 0;
        let mut stack: Vec<PathBuf> = vec![folder.to_owned()];
        while let Some(next) = stack.pop() {
            for entry in fs::read_dir(&next)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|ext| ext == "dcm") {
                    self.store(&fs::read(&path)?)?;
                    stored += 1;
                }
            }
        }
        Ok(stored)
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
