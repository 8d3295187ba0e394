//! An outbound destination into a folder: for a hospital whose EHR reads HL7 v2 files, each
//! message becomes `<MSH-10>.hl7`, written under a temporary name, synced, then renamed into
//! place, so the hospital never reads half a file; a rewrite after a crash replaces it with the
//! same bytes. Delivered when the rename and the folder's sync are done.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tsunagi_adapter::outbound::{Attempt, Destination, DestinationInfo};
use tsunagi_store::OutboundMessage;

/// `[[destination]] kind = "folder"`: a facility's inbound folder.
#[derive(Debug, Clone)]
pub struct FolderDestination {
    facility: String,
    folder: PathBuf,
}

impl FolderDestination {
    /// Delivers to facility `facility` into `folder`.
    pub fn new(facility: impl Into<String>, folder: impl Into<PathBuf>) -> Self {
        Self {
            facility: facility.into(),
            folder: folder.into(),
        }
    }
}

#[async_trait::async_trait]
impl Destination for FolderDestination {
    fn describe(&self) -> DestinationInfo {
        DestinationInfo {
            kind: "folder",
            facility: self.facility.clone(),
            address: self.folder.display().to_string(),
        }
    }

    async fn deliver(&self, message: &OutboundMessage, timeout: Duration) -> Attempt {
        let written = tokio::time::timeout(timeout, write_file(&self.folder, message)).await;
        match written {
            Ok(Ok(path)) => Attempt::Delivered {
                ack: Vec::new(),
                note: format!("written to {}", path.display()),
            },
            Ok(Err(error)) => Attempt::Retry {
                ack: Vec::new(),
                error: format!("cannot write into {}: {error}", self.folder.display()),
            },
            Err(_) => Attempt::Retry {
                ack: Vec::new(),
                error: format!(
                    "writing into {} took longer than {timeout:?}",
                    self.folder.display()
                ),
            },
        }
    }
}

/// The file name of a message: its MSH-10, reduced to letters, digits and `-` (a control id
/// cannot name a path outside the folder).
fn file_name(control_id: &str) -> String {
    control_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

async fn write_file(folder: &Path, message: &OutboundMessage) -> std::io::Result<PathBuf> {
    let name = file_name(&message.control_id);
    let path = folder.join(format!("{name}.hl7"));
    let temporary = folder.join(format!(".{name}.hl7.partial"));
    let payload = message.payload.clone();
    let (done, file) = (path.clone(), temporary.clone());
    let folder = folder.to_owned();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut handle = std::fs::File::create(&file)?;
        handle.write_all(&payload)?;
        handle.sync_all()?;
        std::fs::rename(&file, &done)?;
        std::fs::File::open(&folder)?.sync_all()
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_id_cannot_leave_the_folder() {
        assert_eq!(file_name("../../etc/passwd"), "etcpasswd");
        assert_eq!(file_name("T-20261203-0001"), "T-20261203-0001");
    }
}
